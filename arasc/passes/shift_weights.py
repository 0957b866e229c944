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
layers (from each layer's code histogram: no evaluation) and takes the best one if it keeps the
unshifted model's task on the calibration inputs (the first `GUARD_BATCHES` of them), by a task
metric read off the outputs' shape (`task_agreement`): top-1 agreement for classifier logits,
the correlation of sentence-embedding similarities for sequences, else the cosine; at least
`min_agreement` (0.999: at most 0.1 point of accuracy, or 0.001 of similarity correlation,
lost). That costs two integer evaluations of the model: the unshifted reference and the
candidate. If the candidate fails, the pass falls back layer-group-wise by a per-layer criterion
(`layer_errors`: how much the shift changes the real weights a layer computes with, which
bounds its output change and needs no evaluation): the half of the shifted layers it changes
most stays unshifted, and the result is evaluated again, at most `MAX_CHECKS` evaluations in
all. If none qualifies, nothing is shifted. (The pass once evaluated every center in turn: up to
seven evaluations, 194 s of a BERT-Base compile.) With a weight zero point per output channel
(the default quantization), each channel's codes move to the center on their own. The first
layer is never shifted: the paper keeps it exact, since errors there cost the most accuracy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Model
from ..ir.qops import MAX_SHIFT, crossbar_multiplier_bits
from ..isa.hardware import Hardware, default_hardware
from ..isa.tiling import cell_levels
from .tile import is_crossbar_layer

CENTERS = (88, 96, 104, 152, 160, 168)
MIN_FIT = 0.5      # "fit" squeezes a channel's codes by at most this factor; one needing more is not shifted
GUARD_BATCHES = 4  # calibration input tuples the output check runs: each costs a full integer evaluation
MAX_CHECKS = 3     # evaluations of shifted candidates: the best center, then up to two fallbacks


@dataclass(frozen=True)
class CenterChoice:
    center: int | None                               # None: no center kept the outputs
    skip: dict[int | None, float]                    # Eq. 3's predicted skip ratio, None = unshifted (the
                                                     # chosen center's: with the layers in `kept` unshifted)
    agreement: dict[int, float]                      # task_agreement with the unshifted model, as far as tried
    clipped: dict[int, float]                        # fraction of the shifted weights that clip
    kept: frozenset[str] = frozenset()               # crossbar weights the fallback left unshifted


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


def channel_histograms(model: Model) -> dict[str, np.ndarray]:
    """[channels, 256] counts (unsigned, as narrow as the row length allows) per crossbar weight: how many of each output channel's weights hold
    each code. Everything the center choice needs (means, ranges, Eq. 3's level distributions,
    clipping) follows from these, without copying the weights per candidate center."""
    from .weight_moves import count_codes

    layers = {layer.weight("weight").name: layer for layer in model.graph.layers if is_crossbar_layer(layer)}
    result = {}
    for name in crossbar_weights(model):
        channels = len(channel_param(model, layers[name], "w_zp"))
        codes = np.ascontiguousarray(model.weights[name]).reshape(channels, -1)
        # a count is at most the row length: BERT-Large's 222 K channels take 0.11 GB in uint16, 0.45 in int64
        result[name] = np.zeros((channels, 256), np.min_scalar_type(codes.shape[1]))
        count_codes(codes, result[name])
    return result


@dataclass(frozen=True)
class ChannelRanges:
    """What `_plan` reads off one crossbar layer's histogram, whatever the center: per output
    channel the weight zero point, the rounded mean code (the layer's where its zero point is one
    per layer) and the lowest and highest code held, about the zero point. Made once per layer
    for the center choice: the histogram's products cost 1 s per candidate center on BERT-Large."""
    zp: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    one_zero_point: bool

    @classmethod
    def of(cls, model: Model, layer, histogram: np.ndarray) -> ChannelRanges:
        zp = channel_param(model, layer, "w_zp")
        codes = np.arange(256.0)   # float64: BLAS's product, exact (each sum is an integer below 255 k < 2^53)
        counts = histogram.sum(1)
        one_zero_point = layer.weight("w_zp") is None
        if not one_zero_point:
            means = (histogram @ codes) / np.maximum(counts, 1)
        else:
            means = np.full(len(zp), (histogram.sum(0) @ codes) / max(int(counts.sum()), 1))
        held = histogram > 0
        low = np.where(held.any(1), held.argmax(1), zp) - zp                 # the lowest code held, about zp
        high = np.where(held.any(1), 255 - held[:, ::-1].argmax(1), zp) - zp  # the highest
        return cls(zp, np.round(means).astype(np.int64), low, high, one_zero_point)


def channel_ranges(model: Model, histograms: dict[str, np.ndarray]) -> dict[str, ChannelRanges]:
    """`ChannelRanges` of every crossbar weight, from `channel_histograms(model)`."""
    layers = {layer.weight("weight").name: layer for layer in model.graph.layers if is_crossbar_layer(layer)}
    return {name: ChannelRanges.of(model, layers[name], histogram) for name, histogram in histograms.items()}


def _plan(model: Model, layer, histogram: np.ndarray, center: int, method: str,
          ranges: ChannelRanges | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(d, alpha) per output channel of one crossbar layer: the move d = center - mean code, of the
    layer's codes where its weight zero point is one per layer (the paper's Eq. 4) or of each
    channel's where it is one per channel, kept such that each zero point stays a code (0..255);
    and with "fit" the scale alpha <= 1 about the zero point that keeps the moved codes inside
    0..255 (1 with "clip", which clips them instead). `ranges`: the layer's `ChannelRanges`, if
    already made."""
    r = ranges if ranges is not None else ChannelRanges.of(model, layer, histogram)
    d = np.clip(center - r.mean, -r.zp, 255 - r.zp)
    alpha = np.ones(len(r.zp))
    if method != "fit":
        return d, alpha
    alpha = _fitting_scales(r.low, r.high, r.zp + d)
    if r.one_zero_point:   # one zero point for the layer: one alpha for it too
        alpha[:] = alpha.min()
    # A channel that would have to shrink below half its step (its zero point at an end of the
    # range: all its weights of one sign) stays where it is.
    stay = alpha < MIN_FIT
    return np.where(stay, 0, d), np.where(stay, 1.0, alpha)


def shifted(model: Model, center: int, method: str = "fit", keep: frozenset[str] = frozenset(),
            histograms: dict[str, np.ndarray] | None = None,
            ranges: dict[str, ChannelRanges] | None = None) -> tuple[Model, float]:
    """The model with its weights on `center`, and the fraction of shifted weights that clipped;
    every crossbar weight but the first moves, except those named in `keep`. `histograms`:
    `channel_histograms(model)`, and `ranges`: `channel_ranges` of them, if already made.

    "clip" is the paper's Eq. 5: codes past 0 or 255 are clipped. "fit" clips nothing: where a
    channel's shifted codes would leave [0, 255], its codes are scaled about the zero point by the
    largest alpha <= 1 that keeps them inside, and its requantization multiplier and bias are
    rescaled to match (a coarser weight step, one more rounding of each weight)."""
    from .weight_moves import move_codes

    histograms = histograms if histograms is not None else channel_histograms(model)
    moving = set(crossbar_weights(model)[1:]) - keep
    weights = dict(model.weights)
    layers = []
    clipped = total = 0
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer) or layer.weight("weight").name not in moving:
            layers.append(layer)
            continue
        name = layer.weight("weight").name
        d, alpha = _plan(model, layer, histograms[name], center, method, ranges[name] if ranges else None)
        zp = channel_param(model, layer, "w_zp")
        codes, clipped_here = move_codes(np.ascontiguousarray(model.weights[name]).reshape(len(zp), -1), zp, d, alpha)
        clipped += int(clipped_here)
        total += codes.size
        weights[name] = codes.reshape(np.shape(model.weights[name]))
        params = {"w_zp": zp + d}
        if (alpha < 1.0).any():
            bias, params["multiplier"], params["shift"] = _rescaled(model, layer, alpha, codes.shape[1])
            if bias is not None:
                weights[layer.weight("bias").name] = bias
        layers.append(_with_channel_params(layer, weights, params))
    meta = {**dict(model.graph.meta), "weight_center": center, "weight_shift": method}
    graph = dataclasses.replace(model.graph, layers=tuple(layers), meta=meta)
    return model.replace(graph=graph, weights=weights), clipped / max(total, 1)


def _rescaled(model: Model, layer, alpha: np.ndarray, row_length: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(int32 bias or None, multiplier, shift) of a crossbar layer whose codes "fit" scales by
    `alpha` per output channel: the bias scaled with them, the real multiplier divided by them."""
    zp, multiplier, shift = (channel_param(model, layer, p) for p in ("w_zp", "multiplier", "shift"))
    ref = layer.weight("bias")
    bias = None if ref is None else np.rint(np.asarray(model.weights[ref.name]) * alpha).astype(np.int32)
    largest_bias = 0 if bias is None else int(np.abs(bias.astype(np.int64)).max())
    bits = crossbar_multiplier_bits(row_length, largest_bias)
    return (bias, *_fixed_points(multiplier / 2.0 ** shift / alpha, bits))


def predicted_center(model: Model, histograms: dict[str, np.ndarray], center: int | None, method: str,
                     hw: Hardware, ranges: dict[str, ChannelRanges] | None = None) -> tuple[float, float]:
    """(Eq. 3's predicted skip, fraction of shifted weights that clip) of `shifted(model, center,
    method)` (None: of the model as it is), from the channel histograms alone: each channel's
    counts map through its move, so no weights are copied."""
    from .weight_moves import moved_counts

    layers = {layer.weight("weight").name: layer for layer in model.graph.layers if is_crossbar_layer(layer)}
    names = crossbar_weights(model)
    code_histograms = [histograms[names[0]].sum(0)]
    clipped = total = 0
    for name in names[1:]:
        if center is None:
            code_histograms.append(histograms[name].sum(0))
            continue
        zp = channel_param(model, layers[name], "w_zp")
        d, alpha = _plan(model, layers[name], histograms[name], center, method, ranges[name] if ranges else None)
        histogram, clipped_here = moved_counts(histograms[name], zp, d, alpha)
        clipped += int(clipped_here)
        total += int(histogram.sum())
        code_histograms.append(histogram)
    return _skip(code_histograms, hw), clipped / max(total, 1)


def _fitting_scales(low: np.ndarray, high: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """Per channel: 1 if zero_point + [low, high] lies inside [0, 255] (low <= 0 <= high, the codes
    about their zero point); otherwise the largest alpha with zero_point + alpha [low, high]
    inside, less a half code, so that rounding cannot step outside."""
    alpha = np.ones(len(zero_point))
    below, above = zero_point + low < 0, zero_point + high > 255   # only where low < 0, resp. high > 0
    alpha[below] = (zero_point[below] - 0.5) / -low[below]
    alpha[above] = np.minimum(alpha[above], (255 - zero_point[above] - 0.5) / high[above])
    return np.maximum(alpha, 0.0)


def _fixed_points(reals: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """`qops.fixed_point(real, bits)` of every entry at once (int64 multipliers and shifts): a
    layer has up to thousands of channels, and one Python call per channel cost seconds per
    candidate center."""
    mantissa, exponent = np.frexp(reals)
    shift = bits - exponent
    shift = shift - (np.round(mantissa * 2.0**bits) == 2.0**bits)
    if (shift < 1).any() or not (reals > 0).all():
        raise ValueError("shift-weights: a rescaled multiplier is outside the fixed-point range")
    shift = np.minimum(shift, MAX_SHIFT)
    return np.round(reals * 2.0**shift).astype(np.int64), shift.astype(np.int64)


def predicted_skip(model: Model, hw: Hardware) -> float:
    """Eq. 3 between consecutive crossbar layers of the model as it is (see `_skip`)."""
    from .weight_moves import code_histogram

    return _skip([code_histogram(np.ascontiguousarray(model.weights[name]).reshape(-1))
                  for name in crossbar_weights(model)], hw)


def _skip(code_histograms: list[np.ndarray], hw: Hardware) -> float:
    """Eq. 3 between consecutive crossbar layers, from each layer's code histogram (in compute
    order): the chance that a cell of layer i+1 finds the level a cell of layer i left, from each
    layer's per-cell level distribution, weighted by the cells written."""
    codes = np.arange(1 << hw.crossbar.weight_bits)
    levels = cell_levels(codes[:, None], hw)                          # [codes, cells]: each code's levels
    top = 1 << hw.crossbar.cell_bits
    distributions, sizes = [], []
    for histogram in code_histograms:
        share = histogram / histogram.sum()
        distributions.append(np.stack([np.bincount(levels[:, t], weights=share, minlength=top)
                                       for t in range(levels.shape[1])]))
        sizes.append(histogram.sum())
    if len(distributions) < 2:
        return 0.0
    pairs = [float((a * b).sum(1).mean()) for a, b in zip(distributions, distributions[1:])]
    return float(np.average(pairs, weights=sizes[1:]))


def task_agreement(reference: list, outputs: list) -> float:
    """How well the shifted model keeps the unshifted one's task on the calibration inputs (lists
    of output lists, one per input tuple), by the shape of each output: classifier logits
    [batch, classes]: the fraction of inputs whose top-1 class agrees, and the cosine of the
    logits (a handful of calibration images cannot resolve 0.1 point of top-1: with one, the
    paper's clipping shift kept the class and cost ResNet-50's logits a cosine of 0.85); sequences [batch, tokens,
    hidden]: the Spearman correlation of the pairwise cosine similarities of the token-mean
    embeddings (a sentence encoder's metric), with 3 inputs or more, and the cosine of the hidden
    states themselves (the correlation alone let a shift cost MiniLM 0.006 of cosine with float);
    otherwise the cosine. The lowest over the outputs."""
    from ..runtime.report import cosine

    scores = []
    for index in range(len(reference[0])):
        a = np.concatenate([np.asarray(r[index]) for r in reference])
        b = np.concatenate([np.asarray(o[index]) for o in outputs])
        if a.ndim == 2 and a.shape[1] > 1:
            scores.append(float((a.argmax(1) == b.argmax(1)).mean()))
            scores.append(cosine(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))
        elif a.ndim == 3 and len(a) >= 3:
            scores.append(_similarity_correlation(a.mean(1), b.mean(1)))
            scores.append(cosine(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))
        else:
            scores.append(cosine(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))
    return min(scores)


def _similarity_correlation(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    def similarities(e):
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)
        return (e @ e.T)[np.triu_indices(len(e), 1)]

    return float(spearmanr(similarities(a), similarities(b)).statistic)


def layer_errors(model: Model, center: int, method: str, histograms: dict[str, np.ndarray] | None = None,
                 ranges: dict[str, ChannelRanges] | None = None) -> dict[str, float]:
    """The per-layer criterion of `shifted(model, center, method)`: for each crossbar weight, the
    relative change of the real weights the layer computes with, ||W' - W|| / ||W|| with
    W = m (q - z) per output channel (the real requantization multiplier m carries the channel's
    weight scale). The change of the layer's output is at most ||W' - W|| ||x|| for any input x,
    so the criterion ranks layers by how much the shift can disturb them, without an evaluation.
    0 where the shift is exact (the first layer, which is not shifted).

    From the channel histograms: a channel's shifted code is a function of its code (a table of
    256 entries, `weight_moves.code_tables`), so each sum over the channel's weights is a sum over its 256 codes
    weighted by their counts, without the weights (from BERT-Large's 0.3 G weights of both models
    it took 5.1 s of an 81 s profiled compile at load 7)."""
    from .weight_moves import code_tables

    histograms = histograms if histograms is not None else channel_histograms(model)
    names = crossbar_weights(model)
    layers = {layer.weight("weight").name: layer for layer in model.graph.layers if is_crossbar_layer(layer)}
    errors = {names[0]: 0.0} if names else {}
    codes = np.arange(256)
    for name in names[1:]:
        layer = layers[name]
        d, alpha = _plan(model, layer, histograms[name], center, method, ranges[name] if ranges else None)
        zp, multiplier, shift = (channel_param(model, layer, p) for p in ("w_zp", "multiplier", "shift"))
        if (alpha < 1.0).any():
            row_length = np.asarray(model.weights[name]).size // len(zp)
            _, multiplier_after, shift_after = _rescaled(model, layer, alpha, row_length)
        else:
            multiplier_after, shift_after = multiplier, shift
        moved = np.clip(code_tables(zp, d, alpha), 0, 255)
        before = (codes - zp[:, None].astype(np.float64)) * (multiplier / 2.0 ** shift)[:, None]
        after = (moved - (zp + d)[:, None].astype(np.float64)) * (multiplier_after / 2.0 ** shift_after)[:, None]
        counts = histograms[name]
        change = float(np.sqrt((counts * np.square(after - before)).sum()))
        errors[name] = change / max(float(np.sqrt((counts * np.square(before)).sum())), 1e-300)
    return errors


def choose_center(model: Model, calibration, min_agreement: float, hw: Hardware, method: str = "fit") -> CenterChoice:
    """The center (and the layers left where they are) that `center="auto"` takes; see the module
    doc. Costs at most 1 + MAX_CHECKS integer evaluations of the model, 2 when the best center
    passes."""
    return _choose(model, calibration, min_agreement, hw, method)[0]


def _choose(model: Model, calibration, min_agreement: float, hw: Hardware, method: str) -> tuple[CenterChoice, Model]:
    from ..ir.evaluate import evaluate

    histograms = channel_histograms(model)
    ranges = channel_ranges(model, histograms)
    skip: dict[int | None, float] = {None: predicted_center(model, histograms, None, method, hw)[0]}
    clipped = {}
    for center in CENTERS:
        skip[center], clipped[center] = predicted_center(model, histograms, center, method, hw, ranges)
    ranked = [c for c in sorted(CENTERS, key=lambda c: -skip[c]) if skip[c] > skip[None]]
    nothing = CenterChoice(None, skip, {}, clipped)
    if not ranked:
        return nothing, model
    center = ranked[0]
    calibration = list(calibration)[:GUARD_BATCHES]
    reference = [[t.numpy() for t in evaluate(model, inputs)] for inputs in calibration]
    keep: frozenset[str] = frozenset()
    candidate = shifted(model, center, method, histograms=histograms, ranges=ranges)[0]
    errors: dict[str, float] | None = None   # layer_errors of the full shift (the first candidate), when needed
    agreement: dict[int, float] = {}
    for _ in range(MAX_CHECKS):
        outputs = [[t.numpy() for t in evaluate(candidate, inputs)] for inputs in calibration]
        agreement[center] = task_agreement(reference, outputs)
        if agreement[center] >= min_agreement:
            skip[center] = predicted_skip(candidate, hw)   # with the fallback's unshifted layers
            if skip[center] <= skip[None]:
                break
            return CenterChoice(center, skip, agreement, clipped, keep), candidate
        # Fall back layer-group-wise: the half of the still shifted layers that the shift changes
        # most stays where it was; shifts that change nothing cost no agreement and are kept.
        if errors is None:
            errors = layer_errors(model, center, method, histograms, ranges)
        moving = sorted((name for name, e in errors.items() if e > 0 and name not in keep), key=lambda n: errors[n])
        if len(moving) < 2:
            break
        keep = keep | frozenset(moving[len(moving) // 2:])
        # the previous candidate is let go before the next one is made: each holds a copy of every
        # crossbar weight (BERT-Large 0.34 GB), and two at once set the compile's peak memory
        candidate = model
        candidate = shifted(model, center, method, keep, histograms, ranges)[0]
    return CenterChoice(None, skip, agreement, clipped), model


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
            return _choose(model, self.calibration, self.min_agreement, hw or default_hardware(), self.method)[1]
        return model if center is None else shifted(model, int(center), self.method)[0]
