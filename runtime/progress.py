"""A progress display on stderr for long compiles and runs: the stage, and the layer it is on.

BERT-Large compiles for tens of seconds and runs for minutes; without this, nothing shows where
the time goes. The display is one transient rich line (it disappears when the work ends), and
it stays off when stderr is not a terminal (logs, pipes, tests) or the user passed --quiet.

Code deep in a pass or in the interpreter reports through the module functions `stage` and
`step`, which do nothing unless a display is open: the modules need no display passed down,
and the cost when none is open is one global lookup. It lives in the runtime because the
runtime may not import the compiler, while the compiler may import the runtime."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_active: _Display | None = None


class _Display:
    def __init__(self, terminal) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.rich = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[detail]}"),
                             console=Console(file=terminal, force_terminal=True), transient=True)
        self.task = self.rich.add_task("", total=None, detail="")

    def stage(self, name: str, total: int | None) -> None:
        self.rich.remove_task(self.task)  # a fresh task: reset() keeps the last stage's total
        self.task = self.rich.add_task(name, total=total, detail="")

    def step(self, detail: str) -> None:
        self.rich.update(self.task, advance=1, detail=detail)


@contextmanager
def display(terminal: TextIO | None) -> Iterator[None]:
    """Show progress on `terminal` while the block runs; nothing when it is None (the user asked
    for quiet, or stderr is not a terminal: the CLI saves the terminal before it captures the
    libraries' stderr, arasc/cli.py)."""
    global _active
    if terminal is None or _active is not None:
        yield
        return
    shown = _Display(terminal)
    _active = shown
    try:
        with shown.rich:
            yield
    finally:
        _active = None


def showing() -> bool:
    """Whether a display is open: for callers whose step detail costs something to build."""
    return _active is not None


def stage(name: str, total: int | None = None) -> None:
    """A new stage begins, of `total` steps if known."""
    if _active is not None:
        _active.stage(name, total)


def total(steps: int) -> None:
    """The current stage has `steps` steps (once the code inside it knows)."""
    if _active is not None:
        _active.rich.update(_active.task, total=steps)


def step(detail: str) -> None:
    """One step of the current stage done; `detail` names what it worked on (a layer)."""
    if _active is not None:
        _active.step(detail)
