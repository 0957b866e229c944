"""What happens around each stage of the driver (`arasc/compile.py`): its time and peak memory,
the progress display, `--print-after`, `--dump-dir`, and the IR dump of a failing pass.

The instrumentation follows MLIR's pass manager: `--print-after PASS` (MLIR's
`-mlir-print-ir-after`), `--print-after all` (`-mlir-print-ir-after-all`), a dump folder with one
numbered file per stage (`-mlir-print-ir-tree-dir`), and on a failing pass the IR that pass was
given (`-mlir-print-ir-after-failure` prints the IR after the failure; the IR a pass failed on is
what one needs to reproduce the failure with `arasc ir`)."""
from __future__ import annotations

import ctypes
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .ir import Model, print_graph
from .options import IR_STAGES
from .passes import Pass, PassError, apply_pass
from .runtime import progress

T = TypeVar("T")


@dataclass(frozen=True)
class StageRecord:
    name: str
    seconds: float
    peak_rss_bytes: int  # the process's peak resident memory so far, at the end of the stage
    rss_bytes: int       # its resident memory at the end of the stage (what the stage left held)
    cpu_seconds: float = 0.0  # CPU time of the process's threads: on a shared machine, steadier than wall time


class Stopped(Exception):
    """Raised after the stage named by `stop_after` (`arasc ir --after`): the rest is not wanted."""

    def __init__(self, model: Model):
        super().__init__("stopped")
        self.model = model


def _write_stdout(stage: str, model: Model, several: bool) -> None:
    """The IR text; when several stages print, each behind a comment naming its stage."""
    text = print_graph(model.graph)
    sys.stdout.write(f"# ----- IR after {stage} -----\n{text}" if several else text)


@dataclass
class Stages:
    """Runs the driver's stages. `print_after`: stage names, or ("all",); `dump_dir`: a folder for
    one IR file per stage; `stop_after`: a stage after which the driver stops; `show(stage, model)`
    replaces printing the IR text (`arasc ir --summary`)."""

    print_after: tuple[str, ...] = ()
    dump_dir: str | None = None
    stop_after: str | None = None
    show: Callable[[str, Model], None] | None = None
    records: list[StageRecord] = field(default_factory=list)
    # what the stages so far did: a model given to the driver's passes comes from `lower`
    _passes_done: list[str] = field(default_factory=lambda: ["lower"])
    _ensured: set[str] = field(default_factory=lambda: {"traced"})

    def __post_init__(self) -> None:
        unknown = [name for name in self.print_after if name not in IR_STAGES + ("all",)]
        if unknown or (self.stop_after is not None and self.stop_after not in IR_STAGES):
            raise ValueError(f"no IR after {', '.join(unknown or [str(self.stop_after)])}; "
                             f"stages with IR, in order: {', '.join(IR_STAGES)}, or all")
        if self.dump_dir is not None:
            os.makedirs(self.dump_dir, exist_ok=True)

    def run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """One stage: `fn(*args)`, timed, with its peak memory and shown on the progress display."""
        progress.stage(name)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn(*args)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        _return_free_memory()
        self.records.append(StageRecord(name, seconds, *_rss(), cpu_seconds))
        return result

    def lower(self, fn: Callable[..., Model], *args: Any) -> Model:
        """The stage that makes the layer IR from the captured graph."""
        model = self.run("lower", fn, *args)
        self._after("lower", model)
        return model

    def ir_pass(self, p: Pass, model: Model, hw) -> Model:
        """One IR pass; on failure its input IR goes to a file, which the error names."""
        try:
            result = self.run(p.name, apply_pass, p, model, hw, tuple(self._passes_done), self._ensured)
        except (PassError, ValueError) as err:
            internal = isinstance(err, PassError)
            if internal or self.dump_dir is not None:
                path = self._dump(len(self.records), f"{p.name}.failed-input", model, temporary=self.dump_dir is None)
                note = f" (the IR pass {p.name} was given: {path})"
                raise type(err)(f"{err}{note}") from err
            raise
        self._passes_done.append(p.name)
        self._after(p.name, result)
        return result

    def _after(self, name: str, model: Model) -> None:
        if name in self.print_after or "all" in self.print_after:
            if self.show is not None:
                self.show(name, model)
            else:
                _write_stdout(name, model, "all" in self.print_after or len(self.print_after) > 1)
        if self.dump_dir is not None:
            self._dump(len(self.records) - 1, name, model)
        if name == self.stop_after:
            raise Stopped(model)

    def _dump(self, index: int, name: str, model: Model, temporary: bool = False) -> str:
        """The IR into `index`-`name`.ir: in dump_dir, or in a new temporary folder."""
        folder = tempfile.mkdtemp(prefix="arasc-ir-") if temporary else self.dump_dir
        assert folder is not None
        path = os.path.join(folder, f"{index:02d}-{name}.ir")
        with open(path, "w", encoding="utf-8") as f:
            f.write(print_graph(model.graph))
        return path


def _return_free_memory() -> None:
    """glibc keeps the memory a stage freed (the previous model's weights, evaluation temporaries)
    in its arenas, so the next stage's peak starts from the last one's; malloc_trim hands it
    back to the system."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc: nothing to trim
        return None


_libc = _load_libc()


def _rss() -> tuple[int, int]:
    """(peak, current) resident memory of this process, in bytes. The peak is not reset per
    stage (Linux could, through /proc/self/clear_refs, but that also hides the true peak from
    whoever measures the process from outside, such as /usr/bin/time)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak
