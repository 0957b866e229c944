"""SmoothQuant for the 8-bit values that crossbars and tables read, with its strength chosen per value.

A trained transformer's layer-norm and GELU outputs have a few channels whose range is 10-30x
the others' (docs/quantization.md). One uint8 scale for the tensor gives the ordinary channels
a handful of codes. SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models", ICML 2023) gives channel k the scale
s (r_k / r)^alpha, r_k its range and s = r / 255 the tensor's: the reader takes the factors
into its weight columns (the quantize pass folds them, exactly), so part of an outlier
channel's range moves into the weights. alpha = 0 is one scale for the tensor (with a zero point
per channel), alpha = 1 one scale per channel; in between the weights of the outlier rows grow
less, which matters on an 8-bit crossbar whose columns are quantized as a whole.

No single alpha suits every value (measured on all-MiniLM-L6-v2: 0.5 suits the layer norms and
ruins GELU outputs whose rarely active channels then clip on unseen sentences), so `"auto"`
chooses alpha per value by cross-validation on the calibration inputs: ranges from one half of
the sampled rows, error measured on the other half (and the other way round), the error being
the relative squared error of what the readers compute: a linear reader's outputs with its
weights quantized as the crossbar holds them, a table reader's input. Choosing on rows the
ranges did not see is what rejects the alphas that overfit the observed channel ranges.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .calibrate import U8_LEVELS, QParams, channel_qparams

ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)   # 0.8 and above only helped on the rows they were fitted to


def smoothed_qparams(low: np.ndarray, high: np.ndarray, alpha: float) -> QParams:
    """Per-channel uint8 parameters for channel ranges [low, high] (each widened to include 0):
    channel k's scale is s (r_k / r)^alpha, so its codes span 255 (r_k / r)^(1 - alpha)."""
    low, high = np.minimum(low, 0.0).astype(np.float64), np.maximum(high, 0.0).astype(np.float64)
    span = high - low
    largest = float(span.max())
    if largest == 0:
        return channel_qparams(low, high)
    scale = largest / U8_LEVELS * np.maximum(span / largest, 1e-6) ** alpha
    return QParams(scale, np.clip(np.round(-low / scale), 0, U8_LEVELS).astype(np.int64))


def _fake_quantized(rows: np.ndarray, p: QParams) -> np.ndarray:
    """rows through the uint8 codes of `p`, in units of the codes (q - zp), as the crossbar reads them."""
    return np.clip(np.round(rows / p.scale) + p.zp, 0, U8_LEVELS) - p.zp


def relative_error(fit: np.ndarray, test: np.ndarray, alpha: float, readers: Sequence[np.ndarray | None],
                   quantize_weight: Callable[[np.ndarray], np.ndarray]) -> float:
    """Squared error of what each reader computes from `test` rows coded with the parameters that
    `fit` rows give, relative to its exact result, summed over readers. A reader is a linear
    layer's float weight [n, k] (its columns take the channel scales, then `quantize_weight`
    gives the weight the crossbar holds) or None for a table, which sees the decoded value."""
    p = smoothed_qparams(fit.min(0), fit.max(0), alpha)
    codes = _fake_quantized(test, p)
    total = 0.0
    for weight in readers:
        if weight is None:
            exact, approx = test, codes * p.scale
        else:
            exact, approx = test @ weight.T, codes @ quantize_weight(weight * p.scale).T
        signal = float(np.vdot(exact, exact)) / max(len(exact), 1)
        if signal > 0:
            total += float(np.square(exact - approx).sum(axis=1).max()) / signal
    return total


def choose_alpha(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None],
                 quantize_weight: Callable[[np.ndarray], np.ndarray]) -> float:
    """The alpha of ALPHAS with the least two-fold cross-validated error (module docstring);
    the smaller alpha on a tie. `folds`: two sets of rows [m, channels] of the value."""
    first, second = folds

    def error(alpha: float) -> float:
        return (relative_error(first, second, alpha, readers, quantize_weight)
                + relative_error(second, first, alpha, readers, quantize_weight))

    return min(ALPHAS, key=error)
