"""Where tasks run: on Ray (locally, with one worker per core or `--workers N`, or on a cluster
with `--address`), or in this process (tests of the logic around them).

Both executors have one interface: `submit(tag, fn, *args)` queues a task, `next_done()` returns
(tag, value, error) of one finished task, in the order tasks finish. A task's exception, or a
worker process that died under it (killed, out of memory), comes back as its error text; the
caller decides whether that stops anything. Ray retries no task: a point that kills its worker
would kill the next one too.

Ray is an optional dependency (the `sweep` extra); `RayMissingError` says how to install it."""
from __future__ import annotations

import os
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

INSTALL_RAY = "pip install -e '.[sweep]' in arasc's folder (or pip install 'ray>=2.60,<2.61')"


class RayMissingError(Exception):
    """Ray is not installed: exit 2, saying how to install it."""


class RayStartError(Exception):
    """Ray could not start, or not reach the cluster at --address: exit 2."""


class InProcess:
    """Tasks run one after the other in this process, when `next_done` asks for one."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Any, Callable, tuple]] = deque()
        self.workers = 1

    def put(self, value: Any) -> Any:
        return value

    def submit(self, tag: Any, fn: Callable, *args: Any) -> None:
        self.queue.append((tag, fn, args))

    @property
    def pending(self) -> int:
        return len(self.queue)

    def next_done(self) -> tuple[Any, Any, str | None]:
        tag, fn, args = self.queue.popleft()
        try:
            return tag, fn(*args), None
        except Exception as err:  # noqa: BLE001 - reported as the task's error, like a Ray task's
            return tag, None, f"{type(err).__name__}: {err}"

    def close(self) -> None:
        self.queue.clear()


class RayExecutor:
    """Tasks on Ray. Starts a local Ray of `workers` CPUs (default: this machine's cores), or joins
    the cluster at `address`; reuses a Ray already started in this process (tests start one)."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        ray = import_ray()
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            import logging

            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.ERROR}
            try:
                if address:
                    ray.init(address=address, **options)
                else:
                    ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
            except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
                where = f"the Ray cluster at --address {address}" if address else "a local Ray"
                raise RayStartError(f"could not start {where}: {type(err).__name__}: {err}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(workers, cpus) if workers else cpus
        self.remotes: dict[Callable, Any] = {}
        self.running: dict[Any, Any] = {}  # object ref -> tag

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def submit(self, tag: Any, fn: Callable, *args: Any) -> None:
        if fn not in self.remotes:
            self.remotes[fn] = self.ray.remote(num_cpus=1, max_retries=0)(fn)
        self.running[self.remotes[fn].remote(*args)] = tag

    @property
    def pending(self) -> int:
        return len(self.running)

    def next_done(self) -> tuple[Any, Any, str | None]:
        (ref,), _ = self.ray.wait(list(self.running), num_returns=1)
        tag = self.running.pop(ref)
        try:
            return tag, self.ray.get(ref), None
        except self.ray.exceptions.RayTaskError as err:  # the task raised: its own exception, not Ray's wrapper
            cause = err.cause if err.cause is not None else err
            return tag, None, f"{type(cause).__name__}: {cause}"
        except self.ray.exceptions.RayError as err:  # the worker died under the task
            return tag, None, f"{type(err).__name__}: {str(err).splitlines()[0]}"

    def close(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running.clear()
        if self.started:
            self.ray.shutdown()


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissingError(f"this command runs its tasks on Ray, which is not installed: {INSTALL_RAY}") from None
    return ray


def error_text(err: BaseException) -> str:
    """One line: the exception, and where in arasc it was raised (for a report's error column)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "arasc" in f.filename]
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return " | ".join(f"{type(err).__name__}: {err}{where}".splitlines())


class Progress:
    """Tasks done and failed, and the time left, on the terminal the command was started from;
    nothing when that is not a terminal or the user passed --quiet."""

    def __init__(self, title: str, total: int, terminal):
        self.failed = 0
        self.rich = None
        if terminal is None or total == 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.rich = RichProgress(TextColumn(title), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                                 TextColumn("left"), TimeRemainingColumn(),
                                 console=Console(file=terminal, force_terminal=True), transient=True)
        self.task = self.rich.add_task(title, total=total, failed=0)

    def __enter__(self) -> Progress:
        if self.rich is not None:
            self.rich.__enter__()
        return self

    def advance(self, failed: bool) -> None:
        self.failed += failed
        if self.rich is not None:
            self.rich.update(self.task, advance=1, failed=self.failed)

    def __exit__(self, *exc: Any) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)
