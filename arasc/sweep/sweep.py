"""The sweep driver: the points a spec gives, minus those already in the table, submitted as tasks
(at most one per worker in flight, so an interrupted sweep leaves little half done), each row
appended to the table as its point finishes."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .measure import ACCURACY, FIGURES, Job, measure_point
from .points import Point, file_digest, point_id
from .spec import Spec
from .table import ResultTable


@dataclass
class Outcome:
    points: int  # in the spec (or drawn)
    skipped: int  # already in the table
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (point_id, error)
    seconds: float = 0.0


def columns(spec: Spec) -> list[str]:
    return (["point_id", "status", "error"] + [axis.name for axis in spec.axes] + list(FIGURES)
            + (list(ACCURACY) if spec.datasets else []))


def spec_digests(spec: Spec) -> dict[str, str | None]:
    """The digests of the spec's files, which are part of each point's identity."""
    return {path: file_digest(path) for path in [*spec.calibration.values(), *spec.datasets.values()]}


def make_job(spec: Spec, cache_folder: str, digests: dict[str, str | None]) -> Job:
    """The shared part of every task."""
    from ..evaluate import load_dataset

    calibration = {model: _samples(path) for model, path in spec.calibration.items()}
    datasets = {model: load_dataset(path, _ports(model)) for model, path in spec.datasets.items()}
    kinds = {axis.name: axis.kind for axis in spec.axes}
    return Job(spec.base_hardware, kinds, calibration, {m: digests[p] for m, p in spec.calibration.items()},
               datasets, spec.adc, cache_folder)


def run_sweep(spec: Spec, points: list[Point], table: ResultTable, executor, cache_folder: str,
              retry_failed: bool = False, progress_factory: Callable | None = None) -> Outcome:
    start = time.perf_counter()
    done = table.open()
    digests = spec_digests(spec)
    ids = [point_id(p, spec, digests) for p in points]
    if retry_failed:
        failed = {i for i in ids if done.get(i) == "failed"}
        if failed:
            table.drop(failed)
            done = {i: s for i, s in done.items() if i not in failed}
    todo = [(i, p) for i, p in zip(ids, points) if i not in done]
    todo = list(dict((i, p) for i, p in todo).items())  # a point drawn twice runs once
    outcome = Outcome(len(points), len(points) - len(todo))
    progress = progress_factory(len(todo)) if progress_factory else _Silent()
    queue = list(reversed(todo))
    job = executor.put(make_job(spec, cache_folder, digests)) if todo else None  # once, to Ray's object store
    try:
        with progress:
            while queue or executor.pending:
                while queue and executor.pending < executor.workers:
                    pid, point = queue.pop()
                    executor.submit((pid, point), measure_point, pid, point.values, job)
                (pid, point), row, error = executor.next_done()
                if error is not None:  # the task itself died (its worker was killed)
                    row = {"point_id": pid, **dict(point.values), "status": "failed", "error": error}
                table.append(row)
                outcome.ran += 1
                if row["status"] != "ok":
                    outcome.failed.append((pid, row["error"]))
                progress.advance(row["status"] != "ok")
    finally:
        executor.close()
        outcome.seconds = time.perf_counter() - start
    return outcome


class _Silent:
    def __enter__(self):
        return self

    def advance(self, failed: bool) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


def _samples(path: str) -> np.ndarray:
    """A calibration file, checked when the spec was read (spec.py)."""
    return np.load(path, allow_pickle=False)


def _ports(model: str):
    """The input ports of `model`'s program, for reading its data set: built from the model's example
    inputs (the input names the compiler gives: frontend/lower.py)."""
    from types import SimpleNamespace

    from .measure import _lowered

    source, lowered = _lowered(model)
    return [SimpleNamespace(name=value.name, type=SimpleNamespace(shape=tuple(x.shape), dtype=str(x.dtype)))
            for value, x in zip(lowered.graph.inputs, source.example_inputs, strict=True)]
