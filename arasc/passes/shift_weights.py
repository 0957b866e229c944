"""Weight-mean shifting (paper V-C, Eqs. 3-7): move every crossbar layer's uint8 weights, except
the first layer's, so that their means sit on one common center, and compensate through the
weight zero point.

Writing a cell costs |new level - old level| pulses, and a cell already at its level is skipped
(II-A). A weight's 4th cell holds its two most significant bits. Layers whose weights cluster on
the same code share that cell's level more often when they overwrite each other (Eq. 3). The
pass shifts layer L's codes by d_L = center - mean(q_L) (Eqs. 4-5) and moves its zero point by
the same d_L, so (q - z) does not change (Eqs. 6-7): the digital zero-point correction absorbs
the shift, and the crossbar computes on shifted codes with no other change.

Codes pushed past 0 or 255 are the only loss. The paper clips them (method "clip"). On this
project's models, clipping the 0.2-0.5 % of weights at the ends of the range costs more than
the paper's negligible loss (ResNet-50: output cosine 0.85-0.98 with the unshifted model). So
the default method, "fit", clips nothing. Where the shifted codes would leave [0, 255], it
scales the layer's codes about the zero point just enough to stay inside, and rescales the
layer's requantization multiplier and bias to match. The cost is a coarser weight step for
those layers.

The candidates are the paper's six centers: 88, 96, 104, 152, 160 and 168. They are the middles
of the 4th cell's sections and of their quarters, away from the ends of the range. With
`center="auto"` the pass ranks the centers by the skip ratio Eq. 3 predicts between consecutive
layers. It takes the first one whose outputs on the calibration inputs (the first
`GUARD_BATCHES` of them) keep a cosine of at least `min_cosine` with the unshifted model's. If
no center qualifies, nothing is shifted. The first layer is never shifted: the paper keeps it
exact, since errors there cost the most accuracy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Model
from ..ir.qops import fixed_point
from ..isa.hardware import Hardware, default_hardware
from ..isa.tiling import cell_levels
from .tile import is_crossbar_layer

CENTERS = (88, 96, 104, 152, 160, 168)
GUARD_BATCHES = 4  # calibration input tuples the output check runs: each costs a full integer evaluation


@dataclass(frozen=True)
class CenterChoice:
    center: int | None                               # None: no center kept the outputs
    skip: dict[int | None, float]                    # Eq. 3's predicted skip ratio, None = unshifted
    cosine: dict[int, float]                         # output cosine with the unshifted model, as far as tried
    clipped: dict[int, float]                        # fraction of the shifted weights that clip


def crossbar_weights(model: Model) -> list[str]:
    """The weight tensors of the crossbar layers in compute order, each once."""
    names = []
    for layer in model.graph.layers:
        if is_crossbar_layer(layer) and layer.weight("weight").name not in names:
            names.append(layer.weight("weight").name)
    return names


def shifts(model: Model, center: int) -> dict[str, int]:
    """d for every crossbar weight but the first: center - mean code, kept such that the zero
    point stays a code (0..255)."""
    zero_points = {layer.weight("weight").name: layer.attr("w_zp") for layer in model.graph.layers
                   if is_crossbar_layer(layer)}
    result = {}
    for name in crossbar_weights(model)[1:]:
        d = center - int(round(float(np.asarray(model.weights[name]).mean())))
        result[name] = min(max(d, -zero_points[name]), 255 - zero_points[name])
    return result


def shifted(model: Model, center: int, method: str = "fit") -> tuple[Model, float]:
    """The model with its weights on `center`, and the fraction of shifted weights that clipped.

    "clip" is the paper's Eq. 5: codes past 0 or 255 are clipped. "fit" clips nothing: where the
    shifted codes would leave [0, 255], the layer's codes are scaled about the zero point by the
    largest alpha <= 1 that keeps them inside, and the layer's requantization multiplier and its
    bias are rescaled to match (a coarser weight step, one more rounding of each weight)."""
    d = shifts(model, center)
    weights = dict(model.weights)
    layers = []
    clipped = total = 0
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer) or layer.weight("weight").name not in d:
            layers.append(layer)
            continue
        name, zp = layer.weight("weight").name, layer.attr("w_zp")
        attrs = {**dict(layer.attrs), "w_zp": zp + d[name]}
        codes = np.asarray(model.weights[name]).astype(np.int64)
        alpha = _fitting_scale(int(codes.min()) - zp, int(codes.max()) - zp, zp + d[name]) if method == "fit" else 1.0
        if alpha < 1.0:
            codes = zp + np.rint((codes - zp) * alpha).astype(np.int64)
            attrs["multiplier"], attrs["shift"] = fixed_point(attrs["multiplier"] / 2.0 ** attrs["shift"] / alpha)
            bias = layer.weight("bias")
            if bias is not None:
                weights[bias.name] = np.rint(np.asarray(model.weights[bias.name]) * alpha).astype(np.int32)
        codes = codes + d[name]
        clipped += int(np.count_nonzero((codes < 0) | (codes > 255)))
        total += codes.size
        weights[name] = np.clip(codes, 0, 255).astype(np.uint8)
        layers.append(dataclasses.replace(layer, attrs=attrs))
    meta = {**dict(model.graph.meta), "weight_center": center, "weight_shift": method}
    graph = dataclasses.replace(model.graph, layers=tuple(layers), meta=meta)
    return model.replace(graph=graph, weights=weights), clipped / max(total, 1)


def _fitting_scale(low: int, high: int, zero_point: int) -> float:
    """1 if zero_point + [low, high] lies inside [0, 255] (low <= 0 <= high, the codes about
    their zero point); otherwise the largest alpha with zero_point + alpha [low, high] inside,
    less a half code, so that rounding cannot step outside."""
    alpha = 1.0
    if zero_point + low < 0:
        alpha = min(alpha, (zero_point - 0.5) / -low)
    if zero_point + high > 255:
        alpha = min(alpha, (255 - zero_point - 0.5) / high)
    return max(alpha, 0.0)


def predicted_skip(model: Model, hw: Hardware) -> float:
    """Eq. 3 between consecutive crossbar layers: the chance that a cell of layer i+1 finds the
    level a cell of layer i left, from each layer's per-cell level distribution, weighted by the
    cells written."""
    codes = np.arange(1 << hw.crossbar.weight_bits)
    levels = cell_levels(codes[:, None], hw)                          # [codes, cells]: each code's levels
    top = 1 << hw.crossbar.cell_bits
    histograms, sizes = [], []
    for name in crossbar_weights(model):
        weights = np.asarray(model.weights[name]).reshape(-1)
        share = np.bincount(weights, minlength=len(codes)) / weights.size
        histograms.append(np.stack([np.bincount(levels[:, t], weights=share, minlength=top)
                                    for t in range(levels.shape[1])]))
        sizes.append(weights.size)
    if len(histograms) < 2:
        return 0.0
    pairs = [float((a * b).sum(1).mean()) for a, b in zip(histograms, histograms[1:])]
    return float(np.average(pairs, weights=sizes[1:]))


def output_cosine(reference: list, model: Model, calibration) -> float:
    """The lowest cosine between the model's outputs on the calibration inputs and `reference`
    (a list of output lists, one per input tuple)."""
    from ..ir.evaluate import evaluate
    from ..runtime.report import cosine

    return min(cosine(a.numpy(), b.numpy())
               for inputs, want in zip(calibration, reference) for a, b in zip(want, evaluate(model, inputs)))


def choose_center(model: Model, calibration, min_cosine: float, hw: Hardware, method: str = "fit") -> CenterChoice:
    from ..ir.evaluate import evaluate

    skip: dict[int | None, float] = {None: predicted_skip(model, hw)}
    candidates, clipped = {}, {}
    for center in CENTERS:
        candidates[center], clipped[center] = shifted(model, center, method)
        skip[center] = predicted_skip(candidates[center], hw)
    calibration = list(calibration)[:GUARD_BATCHES]
    reference = [evaluate(model, inputs) for inputs in calibration]
    cosine: dict[int, float] = {}
    for center in sorted(CENTERS, key=lambda c: -skip[c]):
        if skip[center] <= skip[None]:
            break
        cosine[center] = output_cosine(reference, candidates[center], calibration)
        if cosine[center] >= min_cosine:
            return CenterChoice(center, skip, cosine, clipped)
    return CenterChoice(None, skip, cosine, clipped)


@dataclass(frozen=True)
class ShiftWeights:
    """Shift crossbar weights onto `center`: a code, "auto" (choose among CENTERS with the
    calibration inputs), or None (no shift); `method` "fit" or "clip" (see `shifted`)."""

    center: int | str | None = "auto"
    calibration: tuple = ()
    min_cosine: float = 0.999
    method: str = "fit"

    name: ClassVar[str] = "shift-weights"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("shifted",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        center = self.center
        if center == "auto":
            if not self.calibration:
                raise ValueError("shift-weights: choosing a center needs calibration inputs")
            center = choose_center(model, self.calibration, self.min_cosine, hw or default_hardware(),
                                   self.method).center
        return model if center is None else shifted(model, int(center), self.method)[0]
