"""Compiled programs, kept on disk by content hash, so that sweep points sharing a program (the
same model, chip and options: a re-run, an overlapping sweep, a point retried) do not compile it
again.

The key covers everything a compile reads: the compiler's own source files, the model (its name,
or the contents of its file), the chip's canonical text, every compile option and the calibration
inputs. An entry is a folder holding the program, its weights, its chip and what the compile
reported; it is built under a temporary name and renamed into place when complete, so a crash
leaves no half entry, and two workers compiling the same program at once both succeed."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PROGRAM = "program.aras"
HARDWARE = "hardware.toml"
META = "compile.json"


@functools.cache
def compiler_fingerprint() -> str:
    """sha256 of arasc's source, chip and grammar files (the four folders of the package)."""
    import arasc
    import arasc.isa
    import arasc.models
    import arasc.runtime

    digest = hashlib.sha256()
    for package in (arasc, arasc.isa, arasc.models, arasc.runtime):
        root = Path(package.__path__[0])
        skip = {"sweep"} if package is arasc else set()  # the sweep driver compiles nothing
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".toml", ".lark") and not skip.intersection(path.relative_to(root).parts):
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def model_identity(model: str) -> str:
    """A zoo name as it is; a model file by its contents (editing the file changes the program)."""
    file = model.partition(":")[0]
    if os.path.isfile(file):
        return model + "@" + hashlib.sha256(Path(file).read_bytes()).hexdigest()
    return model


def program_key(model: str, hardware_text: str, options, calibration_digest: str | None) -> str:
    identity = {"compiler": compiler_fingerprint(), "model": model_identity(model), "hardware": hardware_text,
                "options": {k: repr(v) for k, v in dataclasses.asdict(options).items()},
                "calibration": calibration_digest}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class ProgramCache:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def entry(self, key: str) -> Path:
        return self.folder / key[:2] / key

    def get_or_compile(self, key: str, compile_into: Callable[[Path], dict]) -> tuple[Path, bool]:
        """(entry folder, whether it was compiled now). `compile_into(folder)` writes PROGRAM (and its
        weights) and HARDWARE there and returns what the compile reported, kept as META."""
        entry = self.entry(key)
        if (entry / META).is_file():
            return entry, False
        entry.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".building-"))
        try:
            meta = compile_into(building)
            (building / META).write_text(json.dumps(meta))
            try:
                os.rename(building, entry)
            except OSError:  # another worker finished the same program first: theirs is as good
                if not (entry / META).is_file():
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return entry, True

    @staticmethod
    def meta(entry: Path) -> dict:
        return json.loads((entry / META).read_text())
