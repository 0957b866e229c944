"""The points of a sweep: the product of its axes, or `--samples N` of it drawn at random or by
Latin hypercube (McKay, Beckman & Conover 1979: each axis is cut into N equal strata and every
stratum is drawn once, so N points cover every axis evenly however many axes there are).

A point's identity (`point_id`) is a hash of everything that decides its figures: its values,
the base chip, and the contents of its calibration and dataset files. A re-run finds a finished
point by it in the table."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from dataclasses import dataclass
from typing import Any

from ..isa.hardware import hardware_fingerprint
from .spec import Spec, SweepSpecError


@dataclass(frozen=True)
class Point:
    """One (axis name, value) pair per axis, in the spec's axis order."""

    values: tuple[tuple[str, Any], ...]

    @property
    def model(self) -> str:
        return dict(self.values)["model"]


def grid(spec: Spec) -> list[Point]:
    """Every combination of the axes' values, models outermost (a worker then tends to get points
    of the model it has built)."""
    for axis in spec.axes:
        if axis.is_range and axis.steps == 0:
            raise SweepSpecError(f"{spec.path}: [hardware] {axis.name}: a range without steps has no grid; give "
                                 f"steps, or draw points with --samples N")
    names = [axis.name for axis in spec.axes]
    return [Point(tuple(zip(names, values))) for values in itertools.product(*(axis.grid() for axis in spec.axes))]


def sample(spec: Spec, n: int) -> list[Point]:
    """n points drawn with the spec's seed (so a re-run draws the same ones), duplicates dropped
    (a list axis can give the same value twice), sorted by model."""
    rng = random.Random(spec.seed)
    if spec.sampling == "random":
        fractions = [[rng.random() for _ in spec.axes] for _ in range(n)]
    else:
        strata = []
        for _ in spec.axes:
            order = list(range(n))
            rng.shuffle(order)
            strata.append(order)
        fractions = [[(strata[a][i] + rng.random()) / n for a in range(len(spec.axes))] for i in range(n)]
    names = [axis.name for axis in spec.axes]
    points = [Point(tuple((name, axis.at(u)) for name, axis, u in zip(names, spec.axes, us))) for us in fractions]
    unique = list(dict.fromkeys(points))
    models = list(spec.axes[0].values)
    return sorted(unique, key=lambda p: models.index(p.model))


def file_digest(path: str | None) -> str | None:
    """sha256 of a file, or of a folder's files in name order; None for None."""
    if path is None:
        return None
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else [os.path.join(path, name) for name in sorted(os.listdir(path))
                                                  if os.path.isfile(os.path.join(path, name))]
    for name in files:
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def point_id(point: Point, spec: Spec, digests: dict[str, str | None]) -> str:
    """16 hex digits of sha256 over what decides the point's figures. `digests`: file_digest of each
    calibration and dataset path the spec names."""
    model = point.model
    identity = {"values": [[name, _jsonable(value)] for name, value in point.values],
                "base": hardware_fingerprint(spec.base_hardware),
                "calibration": digests.get(spec.calibration.get(model, "")),
                "dataset": digests.get(spec.datasets.get(model, "")),
                "adc": spec.adc if model in spec.datasets else None}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
