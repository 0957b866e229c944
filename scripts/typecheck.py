"""Type-check arasc with mypy, under the import names it is installed with.

The repository keeps four top-level folders (arasc, isa, runtime, models) that setuptools
installs as one package, `arasc` (pyproject.toml's [tool.setuptools.package-dir]). mypy knows
nothing of that mapping: given the folders it would call the ISA `isa`, not `arasc.isa`, and
could resolve no `from ..isa import` of the compiler. So this script builds the installed
layout as a tree of symbolic links from the mapping, in a temporary folder, and runs mypy on it
with pyproject.toml's [tool.mypy] settings. Paths in the report are the repository's."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def link_tree(target: Path) -> None:
    """target/arasc/... laid out as installed: every mapped package a link to its folder."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        where = target.joinpath(*package.split("."))
        where.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            if entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()):
                if not (where / entry.name).exists():  # a mapped sub-package already has its folder here
                    os.symlink(entry, where / entry.name)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="arasc-typecheck-") as folder:
        link_tree(Path(folder))
        result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                                 "--python-executable", sys.executable, "arasc"],
                                cwd=folder, capture_output=True, text=True)
        for line in result.stdout.splitlines(keepends=True):
            path, colon, rest = line.partition(":")
            if colon and os.path.exists(os.path.join(folder, path)):
                path = os.path.relpath(os.path.realpath(os.path.join(folder, path)), ROOT)
            sys.stdout.write(path + colon + rest)
        sys.stderr.write(result.stderr)
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
