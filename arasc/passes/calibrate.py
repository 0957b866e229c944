"""Calibration for the quantize pass: observed ranges and the uint8 parameters chosen from them.

Ranges are the plain minimum and maximum seen over the calibration inputs (no percentile
clipping). With the handful of calibration inputs a compile gets, a percentile would be a
statistic of a few hundred samples per tensor and clip real values it has seen; min/max never
clips a calibration value and gives the same answer for the same inputs (DESIGN.md section 3).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..ir import Model, evaluate

U8_LEVELS = 255


@dataclass(frozen=True)
class QParams:
    """uint8 quantization of a tensor: real = scale * (q - zp)."""

    scale: float
    zp: int


def qparams(low: float, high: float) -> QParams:
    """Affine uint8 parameters covering [low, high] widened to include 0, so real 0 (padding,
    ReLU's floor) has an exact code, the zero point."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high == low:
        return QParams(1.0, 0)  # an all-zero tensor: any scale represents it exactly
    scale = (high - low) / U8_LEVELS
    return QParams(scale, int(round(-low / scale)))


def tensor_qparams(array: np.ndarray) -> QParams:
    return qparams(float(array.min()), float(array.max()))


def quantize_array(array: np.ndarray, p: QParams) -> np.ndarray:
    """round_half_even(array / scale) + zp saturated to uint8, in float64."""
    q = np.round(np.asarray(array, np.float64) / p.scale) + p.zp
    return np.clip(q, 0, U8_LEVELS).astype(np.uint8)


def observe_ranges(model: Model, calibration: Sequence[Sequence]) -> dict[str, tuple[float, float]]:
    """(min, max) of every floating-point value (graph inputs and layers) over the calibration
    inputs, each a tuple with one array per graph input, run through the float evaluator."""
    graph = model.graph
    names = tuple(v.name for v in graph.inputs) + tuple(layer.name for layer in graph.layers)
    probe = model.replace(graph=dataclasses.replace(graph, outputs=names))
    ranges: dict[str, tuple[float, float]] = {}
    for inputs in calibration:
        for name, value in zip(names, evaluate(probe, tuple(inputs))):
            if not value.is_floating_point():
                continue
            low, high = float(value.min()), float(value.max())
            if name in ranges:
                low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
            ranges[name] = (low, high)
    return ranges
