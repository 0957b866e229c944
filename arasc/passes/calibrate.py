"""Calibration for the quantize pass: statistics of every float value, and the ranges chosen from them.

The calibration inputs are streamed: each input tuple runs once through the float evaluator and
only running statistics are kept (a tensor's min and max, the min and max of each channel along
its last dimension, and a histogram), never the activations themselves. The histogram needs the
final min and max, so it takes a second pass over the inputs.

Observers (DESIGN.md section 3; docs/quantization.md compares them on trained networks):
- `minmax`: the whole observed range, never clipping a calibration value;
- `percentile`: the 0.01 % and 99.99 % quantiles of the histogram;
- `mse`: the range whose uint8 grid gives the least expected squared error over the
  histogram, rounding inside the range and clipping outside (the error-minimising search of
  TensorRT's and PyTorch's histogram observers). It includes the whole range as a candidate, so
  it clips only where clipping lowers the error.
"""
from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..ir import Model, evaluate

U8_LEVELS = 255
I16_MAX = (1 << 15) - 1
BINS = 2048
OBSERVERS = ("mse", "percentile", "minmax")
PERCENTILE = 1e-4          # the tail clipped on each side by the percentile observer
WIDE_HEADROOM = 2.0        # int16 values keep a factor 2 above the calibrated |max| for unseen inputs
SAMPLE_BYTES = 128 << 20   # rows kept of the sampled values, all together (float32), for choosing smoothing
SAMPLE_ROWS = (128, 2048)  # rows kept per sampled value: at least, at most


@dataclass(frozen=True)
class QParams:
    """Quantization of a tensor: real = scale * (q - zp). scale and zp are numbers, or arrays with
    one entry per channel along the last dimension; `wide` codes are int16, others uint8."""

    scale: float | np.ndarray
    zp: int | np.ndarray
    wide: bool = False
    levels: int = U8_LEVELS     # uint8 codes run 0..255; a wider table index 0..levels

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.scale) > 0

    def __eq__(self, other):
        return (isinstance(other, QParams) and (self.wide, self.levels) == (other.wide, other.levels)
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zp, other.zp))

    def __hash__(self):
        return hash((self.wide, self.levels, np.asarray(self.scale).tobytes(), np.asarray(self.zp).tobytes()))


def qparams(low: float, high: float, levels: int = U8_LEVELS) -> QParams:
    """Affine parameters of codes 0..levels (uint8 by default) covering [low, high] widened to
    include 0, so real 0 (padding, ReLU's floor) has an exact code, the zero point."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high == low:
        return QParams(1.0, 0, levels=levels)  # an all-zero tensor: any scale represents it exactly
    scale = (high - low) / levels
    return QParams(scale, int(round(-low / scale)), levels=levels)


def channel_qparams(low: np.ndarray, high: np.ndarray) -> QParams:
    """Per-channel uint8 parameters, each channel's [low, high] widened to include 0."""
    low, high = np.minimum(low, 0.0).astype(np.float64), np.maximum(high, 0.0).astype(np.float64)
    span = high - low
    scale = np.where(span > 0, span / U8_LEVELS, 1.0)
    return QParams(scale, np.round(-low / scale).astype(np.int64))


def wide_qparams(absmax: float) -> QParams:
    """Symmetric int16 parameters (zero point 0) with headroom above the calibrated |max|."""
    return QParams(absmax * WIDE_HEADROOM / I16_MAX if absmax > 0 else 1.0, 0, wide=True)


def tensor_qparams(array: np.ndarray) -> QParams:
    return qparams(float(array.min()), float(array.max()))


def quantize_array(array: np.ndarray, p: QParams) -> np.ndarray:
    """round_half_even(array / scale) + zp saturated to uint8 (int16 when wide), in float64;
    parameters broadcast against the array (per-channel ones along the last dimension, or shaped for rows)."""
    q = np.divide(array, p.scale, dtype=np.float64)   # one float64 temporary, worked on in place:
    np.round(q, out=q)                                # a BERT-Large embedding table is 250 MB of it
    q += p.zp
    if p.wide:
        return np.clip(q, -I16_MAX - 1, I16_MAX, out=q).astype(np.int16)
    return np.clip(q, 0, U8_LEVELS, out=q).astype(np.uint8)


@dataclass
class Stats:
    """Running statistics of one float value over the calibration inputs."""

    low: float = np.inf
    high: float = -np.inf
    channel_low: np.ndarray | None = None     # per channel along the last dimension
    channel_high: np.ndarray | None = None
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    # Rows (along the last dimension) of values the quantize pass asks to sample: those of even
    # and of odd calibration inputs apart, every `stride`-th row, at most `limit` in all.
    folds: tuple[list[np.ndarray], list[np.ndarray]] = field(default_factory=lambda: ([], []))
    stride: int = 1

    def absmax(self) -> float:
        return max(abs(self.low), abs(self.high))

    def add_range(self, value: torch.Tensor) -> None:
        # in the value's own precision (the least and largest values are the same numbers in
        # float64), one pass: the tensor's range is the range of its channels' ranges
        v = value.detach()
        if v.dim() == 0:
            self.low, self.high = min(self.low, float(v)), max(self.high, float(v))
            return
        lo, hi = (t.to(torch.float64).numpy() for t in torch.aminmax(v.reshape(-1, v.shape[-1]), dim=0))
        self.low, self.high = min(self.low, float(lo.min())), max(self.high, float(hi.max()))
        if self.channel_low is None:
            self.channel_low, self.channel_high = lo, hi
        else:
            self.channel_low, self.channel_high = np.minimum(self.channel_low, lo), np.maximum(self.channel_high, hi)

    def add_histogram(self, value: torch.Tensor) -> None:
        if self.high > self.low:
            self.histogram += torch.histc(value.detach().to(torch.float64), BINS, self.low, self.high).to(torch.int64).numpy()

    def add_sample(self, value: torch.Tensor, index: int, limit: int) -> None:
        """Keep rows of `value`, the output on calibration input number `index`; past `limit`
        rows, every other row of those kept and of those to come (an even spread, bounded)."""
        rows = value.detach().reshape(-1, value.shape[-1]).to(torch.float32).numpy()[::self.stride]
        self.folds[index % 2].append(rows.copy())
        while sum(len(r) for fold in self.folds for r in fold) > limit and self.stride < 1 << 20:
            self.stride *= 2
            for fold in self.folds:
                fold[:] = [r[::2] for r in fold]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled rows as two folds: even and odd calibration inputs, or with a single
        input, its even and odd rows."""
        even, odd = (np.concatenate(f).astype(np.float64) if f else np.zeros((0, 0)) for f in self.folds)
        if not len(odd):
            even, odd = even[0::2], even[1::2]
        return even, odd

    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, BINS + 1)


def observe(model: Model, calibration: Iterable[Sequence], histograms: bool = True,
            sampled: Collection[str] = ()) -> dict[str, Stats]:
    """Statistics of every floating-point value (graph inputs and layers) over the calibration
    inputs, each a tuple with one array per graph input, run through the float evaluator; the
    values named in `sampled` also keep a bounded sample of their rows (SAMPLE_BYTES in all)."""
    stats: dict[str, Stats] = {}

    def gather(index: int, name: str, value: torch.Tensor) -> None:
        if value.is_floating_point():
            stats.setdefault(name, Stats()).add_range(value)
            if name in sampled and value.dim() > 0:
                share = SAMPLE_BYTES // (len(sampled) * value.shape[-1] * 4)
                stats[name].add_sample(value, index, int(np.clip(share, *SAMPLE_ROWS)))

    def add_histogram(name: str, value: torch.Tensor) -> None:
        if name in stats:
            stats[name].add_histogram(value)

    calibration = list(calibration)
    if histograms and len(calibration) == 1:
        # one input: each value's range is final as soon as it is seen, so its histogram is
        # taken in the same evaluation instead of a second one
        def gather_both(name: str, value: torch.Tensor) -> None:
            gather(0, name, value)
            add_histogram(name, value)

        evaluate(model, tuple(calibration[0]), gather_both)
        return stats
    for index, inputs in enumerate(calibration):
        evaluate(model, tuple(inputs), functools.partial(gather, index))
    if histograms:
        for inputs in calibration:
            evaluate(model, tuple(inputs), add_histogram)
    return stats


def choose_range(stats: Stats, observer: str) -> tuple[float, float]:
    """The [low, high] an observer picks for a uint8 value (module docstring)."""
    if observer == "minmax" or not stats.high > stats.low or not stats.histogram.any():
        return stats.low, stats.high
    if observer == "percentile":
        cumulative = np.cumsum(stats.histogram) / stats.histogram.sum()
        edges = stats.edges()
        low = edges[np.searchsorted(cumulative, PERCENTILE)]
        high = edges[np.searchsorted(cumulative, 1 - PERCENTILE) + 1]
        return float(low), float(high)
    if observer == "mse":
        return _least_squared_error(stats)
    raise ValueError(f"unknown observer {observer!r}; choose from {', '.join(OBSERVERS)}")


def _least_squared_error(stats: Stats) -> tuple[float, float]:
    """Clip ranges [f_lo * low, f_hi * high] with f on a log grid from 1 % to 100 %, searched one
    end at a time (two rounds), for the least expected squared error of the uint8 grid over the
    histogram: rounding inside the range (step^2 / 12 a value), clipping outside (bin centres
    stand for their values)."""
    edges = stats.edges()
    centres, counts = (edges[:-1] + edges[1:]) / 2, stats.histogram.astype(np.float64)
    low, high = min(stats.low, 0.0), max(stats.high, 0.0)

    def error(lo: float, hi: float) -> float:
        step = (hi - lo) / U8_LEVELS
        clipped = np.clip(centres, lo, hi)
        return float(counts @ ((centres - clipped) ** 2) + counts[centres == clipped].sum() * step * step / 12)

    factors = np.geomspace(0.01, 1.0, 41)
    lo, hi = low, high
    for _ in range(2):
        if high > 0:
            hi = min((high * f for f in factors), key=lambda h: error(lo, h))
        if low < 0:
            lo = min((low * f for f in factors), key=lambda v: error(v, hi))
    return lo, hi


def grouped_channel_ranges(stats: Stats, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ranges coarsened to `groups` groups of channels with similar ranges, each
    channel taking its group's envelope (per-embedding-group quantization, Bondarenko et al.,
    "Understanding and Overcoming the Challenges of Efficient Transformer Quantization", EMNLP
    2021): a handful of scales generalise beyond the calibration inputs where one per channel
    overfits them. Groups halve in size towards the widest channels, where the outliers are."""
    low, high = np.minimum(stats.channel_low, 0.0), np.maximum(stats.channel_high, 0.0)
    order = np.argsort(high - low, kind="stable")
    n = len(order)
    bounds = sorted({0, n, *(int(n * (1 - 2.0 ** -i)) for i in range(1, groups))})
    group_low, group_high = np.empty_like(low), np.empty_like(high)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        members = order[start:stop]
        group_low[members], group_high[members] = low[members].min(), high[members].max()
    return group_low, group_high
