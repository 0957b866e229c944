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
layers. It takes the first one that keeps the unshifted model's task on the calibration inputs
(the first `GUARD_BATCHES` of them), by a task metric read off the outputs' shape
(`task_agreement`): top-1 agreement for classifier logits, the correlation of sentence-embedding
similarities for sequences, else the cosine; at least `min_agreement` (0.999: at most 0.1 point
of accuracy, or 0.001 of similarity correlation, lost). If no center qualifies, nothing is
shifted. With a weight zero point per output channel (the default quantization), each channel's
codes move to the center on their own. The first layer is never shifted: the paper keeps it
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
MIN_FIT = 0.5      # "fit" squeezes a channel's codes by at most this factor; one needing more is not shifted
GUARD_BATCHES = 4  # calibration input tuples the output check runs: each costs a full integer evaluation


@dataclass(frozen=True)
class CenterChoice:
    center: int | None                               # None: no center kept the outputs
    skip: dict[int | None, float]                    # Eq. 3's predicted skip ratio, None = unshifted
    agreement: dict[int, float]                      # task_agreement with the unshifted model, as far as tried
    clipped: dict[int, float]                        # fraction of the shifted weights that clip


def crossbar_weights(model: Model) -> list[str]:
    """The weight tensors of the crossbar layers in compute order, each once."""
    names = []
    for layer in model.graph.layers:
        if is_crossbar_layer(layer) and layer.weight("weight").name not in names:
            names.append(layer.weight("weight").name)
    return names


def channel_param(model: Model, layer, name: str) -> np.ndarray:
    """int64 [N]: a requantization parameter of a crossbar layer, per layer (its attribute,
    repeated) or per output channel (its int32 weight of that role)."""
    n = np.asarray(model.weights[layer.weight("weight").name]).shape[0]
    ref = layer.weight(name)
    value = model.weights[ref.name] if ref is not None else layer.attr(name)
    return np.broadcast_to(np.asarray(value, np.int64).reshape(-1), (n,)).copy()


def _with_channel_params(layer, weights: dict, params: dict[str, np.ndarray]):
    """`layer` with these per-channel parameters: an attribute where every channel agrees, else
    an int32 weight of the same role named after the layer."""
    from ..ir import TensorType, WeightRef

    attrs, refs = dict(layer.attrs), dict(layer.weights)
    for name, values in params.items():
        attrs.pop(name, None)
        refs.pop(name, None)
        if np.all(values == values[0]):
            attrs[name] = int(values[0])
        else:
            weights[f"{layer.name}.{name}"] = values.astype(np.int32)
            refs[name] = WeightRef(f"{layer.name}.{name}", TensorType("i32", values.shape))
    return dataclasses.replace(layer, attrs=tuple(attrs.items()), weights=tuple(refs.items()))


def shifts(model: Model, center: int) -> dict[str, np.ndarray]:
    """d per output channel for every crossbar weight but the first: center - mean code, of the
    layer's codes where its weight zero point is one per layer (the paper's Eq. 4) or of each
    channel's where it is one per channel; kept such that each zero point stays a code (0..255)."""
    layers = {layer.weight("weight").name: layer for layer in model.graph.layers if is_crossbar_layer(layer)}
    result = {}
    for name in crossbar_weights(model)[1:]:
        layer = layers[name]
        codes = np.asarray(model.weights[name]).reshape(len(channel_param(model, layer, "w_zp")), -1)
        zp = channel_param(model, layer, "w_zp")
        means = codes.mean(1) if layer.weight("w_zp") is not None else np.full(len(zp), codes.mean())
        result[name] = np.clip(center - np.round(means).astype(np.int64), -zp, 255 - zp)
    return result


def shifted(model: Model, center: int, method: str = "fit") -> tuple[Model, float]:
    """The model with its weights on `center`, and the fraction of shifted weights that clipped.

    "clip" is the paper's Eq. 5: codes past 0 or 255 are clipped. "fit" clips nothing: where a
    channel's shifted codes would leave [0, 255], its codes are scaled about the zero point by the
    largest alpha <= 1 that keeps them inside, and its requantization multiplier and bias are
    rescaled to match (a coarser weight step, one more rounding of each weight)."""
    d = shifts(model, center)
    weights = dict(model.weights)
    layers = []
    clipped = total = 0
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer) or layer.weight("weight").name not in d:
            layers.append(layer)
            continue
        name = layer.weight("weight").name
        zp, multiplier, shift = (channel_param(model, layer, p) for p in ("w_zp", "multiplier", "shift"))
        shape = np.asarray(model.weights[name]).shape
        codes = np.asarray(model.weights[name]).astype(np.int64).reshape(len(zp), -1)
        alpha = np.ones(len(zp))
        if method == "fit":
            alpha = np.array([_fitting_scale(int(row.min()) - z, int(row.max()) - z, z + s)
                              for row, z, s in zip(codes, zp, d[name])])
            if layer.weight("w_zp") is None:   # one zero point for the layer: one alpha for it too
                alpha[:] = alpha.min()
            # A channel that would have to shrink below half its step (its zero point at an end of
            # the range: all its weights of one sign) stays where it is.
            stay = alpha < MIN_FIT
            d[name] = np.where(stay, 0, d[name])
            alpha = np.where(stay, 1.0, alpha)
        params = {"w_zp": zp + d[name]}
        squeezed = alpha < 1.0
        if squeezed.any():
            codes = np.where(squeezed[:, None], zp[:, None] + np.rint((codes - zp[:, None]) * alpha[:, None]), codes)
            codes = codes.astype(np.int64)
            pairs = [fixed_point(float(m) / 2.0 ** int(s) / a) for m, s, a in zip(multiplier, shift, alpha)]
            params["multiplier"] = np.array([m for m, _ in pairs], np.int64)
            params["shift"] = np.array([s for _, s in pairs], np.int64)
            bias = layer.weight("bias")
            if bias is not None:
                weights[bias.name] = np.rint(np.asarray(model.weights[bias.name]) * alpha).astype(np.int32)
        codes = codes + d[name][:, None]
        clipped += int(np.count_nonzero((codes < 0) | (codes > 255)))
        total += codes.size
        weights[name] = np.clip(codes, 0, 255).astype(np.uint8).reshape(shape)
        layers.append(_with_channel_params(layer, weights, params))
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


def task_agreement(reference: list, outputs: list) -> float:
    """How well the shifted model keeps the unshifted one's task on the calibration inputs (lists
    of output lists, one per input tuple), by the shape of each output: classifier logits
    [batch, classes]: the fraction of inputs whose top-1 class agrees; sequences [batch, tokens,
    hidden]: the Spearman correlation of the pairwise cosine similarities of the token-mean
    embeddings (a sentence encoder's metric), with 3 inputs or more; otherwise the cosine. The
    lowest over the outputs."""
    from ..runtime.report import cosine

    scores = []
    for index in range(len(reference[0])):
        a = np.concatenate([np.asarray(r[index]) for r in reference])
        b = np.concatenate([np.asarray(o[index]) for o in outputs])
        if a.ndim == 2 and a.shape[1] > 1:
            scores.append(float((a.argmax(1) == b.argmax(1)).mean()))
        elif a.ndim == 3 and len(a) >= 3:
            scores.append(_similarity_correlation(a.mean(1), b.mean(1)))
        else:
            scores.append(cosine(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))
    return min(scores)


def _similarity_correlation(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    def similarities(e):
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)
        return (e @ e.T)[np.triu_indices(len(e), 1)]

    return float(spearmanr(similarities(a), similarities(b)).statistic)


def choose_center(model: Model, calibration, min_agreement: float, hw: Hardware, method: str = "fit") -> CenterChoice:
    from ..ir.evaluate import evaluate

    skip: dict[int | None, float] = {None: predicted_skip(model, hw)}
    candidates, clipped = {}, {}
    for center in CENTERS:
        candidates[center], clipped[center] = shifted(model, center, method)
        skip[center] = predicted_skip(candidates[center], hw)
    calibration = list(calibration)[:GUARD_BATCHES]
    reference = [[t.numpy() for t in evaluate(model, inputs)] for inputs in calibration]
    agreement: dict[int, float] = {}
    for center in sorted(CENTERS, key=lambda c: -skip[c]):
        if skip[center] <= skip[None]:
            break
        outputs = [[t.numpy() for t in evaluate(candidates[center], inputs)] for inputs in calibration]
        agreement[center] = task_agreement(reference, outputs)
        if agreement[center] >= min_agreement:
            return CenterChoice(center, skip, agreement, clipped)
    return CenterChoice(None, skip, agreement, clipped)


@dataclass(frozen=True)
class ShiftWeights:
    """Shift crossbar weights onto `center`: a code, "auto" (choose among CENTERS with the
    calibration inputs), or None (no shift); `method` "fit" or "clip" (see `shifted`)."""

    center: int | str | None = "auto"
    calibration: tuple = ()
    min_agreement: float = 0.999    # at most 0.1 point of top-1, or 0.001 of similarity correlation, lost
    method: str = "fit"

    name: ClassVar[str] = "shift-weights"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("shifted",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        center = self.center
        if center == "auto":
            if not self.calibration:
                raise ValueError("shift-weights: choosing a center needs calibration inputs")
            center = choose_center(model, self.calibration, self.min_agreement, hw or default_hardware(),
                                   self.method).center
        return model if center is None else shifted(model, int(center), self.method)[0]
