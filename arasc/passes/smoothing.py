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

The criterion costs a quantization of every reader's weight for each alpha and fold (7 x 2),
which made it most of a BERT-Large compile (86 s of 117 s on a quiet machine). It is computed
in integers: one numba pass over the weight's rows makes each row's uint8 codes, zero point and
scale for all seven alphas while the row is in cache (the quantize pass's rule,
weight_codes.py), and each product with the value's codes is an exact int8 x int8 -> int32
GEMM (`_code_products`); the readers' exact outputs are made once per fold. The float64
statement of the same criterion (decode the weights, multiply) is kept in the tests, which check
that both choose the same alpha. (An earlier version computed one alpha at a time and stopped
those whose partial error passed the least one found: on the zoo's random weights the alphas'
errors are within 1 % of each other, so it skipped only 7 % of BERT-Large's weight codes.)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .calibrate import U8_LEVELS, QParams, channel_qparams

ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)   # 0.8 and above only helped on the rows they were fitted to
BLOCK_BYTES = 1 << 25   # codes of all alphas for one block of a reader's weight rows: bounds the memory a
                        # large reader (a vocabulary projection) takes


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


@dataclass(frozen=True)
class _Coded:
    """A fold's test rows [m, k] coded with one alpha's parameters, as the products need them."""
    codes: np.ndarray     # uint8 [m, k]
    zp: np.ndarray        # int64 [k]
    scale: np.ndarray     # float64 [k]
    centred: np.ndarray   # int8 [k, m]: the codes less 128, a transposed view (the GEMM's right operand)
    sums: np.ndarray      # int64 [m]: sum_k (codes - zp)

    @classmethod
    def of(cls, rows: np.ndarray, p: QParams) -> _Coded:
        zp, scale = np.asarray(p.zp, np.int64), np.asarray(p.scale, np.float64)
        codes = np.clip(np.round(rows / scale) + zp, 0, U8_LEVELS).astype(np.uint8)
        return cls(codes, zp, scale, (codes ^ np.uint8(128)).view(np.int8).T, (codes.astype(np.int64) - zp).sum(1))


def _code_products(x: _Coded, centred: np.ndarray) -> np.ndarray:
    """c @ a.T, int64 [n, m], for weight codes less 128 c [n, k] and the test rows' a = codes - 128:
    torch's int8 GEMM where it is exact on this CPU (|sum| <= 2^14 k < 2^31), else float64
    (integers below 2^53: exact too). The weight goes on the left, as the interpreter has it:
    1.4-1.8x faster than a @ c.T."""
    from ..runtime.int8 import int8_product, int8_products_exact

    if int8_products_exact() and centred.shape[1] < 1 << 17:
        return int8_product(centred, x.centred)
    return (centred.astype(np.float64) @ x.centred.astype(np.float64)).astype(np.int64)


@dataclass(frozen=True)
class _Fold:
    """One direction of the cross-validation: channel ranges from the `fit` rows, error on the
    `test` rows [m, k]; each reader's exact result on them, transposed ([outputs, m], as the
    products come), and its mean squared row."""
    low: np.ndarray
    high: np.ndarray
    test: np.ndarray
    exact: list[np.ndarray]
    signals: list[float]


def _folds(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None]) -> list[_Fold]:
    result = []
    for fit, test in (folds, folds[::-1]):
        exact = [np.ascontiguousarray(test.T) if weight is None else weight @ test.T for weight in readers]
        result.append(_Fold(fit.min(0), fit.max(0), test, exact,
                            [float(np.vdot(e, e)) / max(len(test), 1) for e in exact]))
    return result


def _fold_errors(fold: _Fold, readers: Sequence[np.ndarray | None], per_row_weights: bool) -> np.ndarray:
    """One fold's error of each alpha of ALPHAS (module docstring): the squared error of what each
    reader computes from the test rows coded with the parameters the fit rows give, relative to
    its exact result, summed over readers. A reader is a linear layer's float weight [n, k] (its
    columns take the channel scales, then it is quantized as the crossbar holds it: per row or
    per weight) or None for a table, which sees the decoded value; its error is the largest
    squared error of an output row over the mean squared exact row."""
    from .weight_codes import add_squared_errors, weight_codes  # numba: loaded only when a value is smoothed

    coded = [_Coded.of(fold.test, smoothed_qparams(fold.low, fold.high, alpha)) for alpha in ALPHAS]
    scales = np.stack([np.broadcast_to(x.scale, (fold.test.shape[1],)) for x in coded])
    zps = np.stack([np.broadcast_to(x.zp, (fold.test.shape[1],)) for x in coded])
    errors = np.zeros(len(ALPHAS))
    for weight, want, signal in zip(readers, fold.exact, fold.signals, strict=True):
        if signal <= 0:
            continue
        squared = np.zeros((len(ALPHAS), len(fold.test)))   # per alpha, each output row's squared error
        if weight is None:
            for alpha, x in enumerate(coded):
                squared[alpha] = np.square(want - ((x.codes - x.zp) * x.scale).T).sum(axis=0)
        else:
            # one range for the weight (not per row): all of it at once
            rows = max(1, BLOCK_BYTES // (len(ALPHAS) * weight.shape[1])) if per_row_weights else len(weight)
            for start in range(0, len(weight), rows):
                block = slice(start, start + rows)
                centred, w_zp, w_scale, zp_term = weight_codes(weight[block], scales, zps, per_row_weights)
                for alpha, x in enumerate(coded):
                    add_squared_errors(_code_products(x, centred[alpha]), zp_term[alpha], w_zp[alpha], x.sums,
                                       w_scale[alpha], want[block], squared[alpha])
        errors += squared.max(axis=1) / signal
    return errors


def alpha_errors(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None],
                 per_row_weights: bool = True) -> np.ndarray:
    """The two-fold cross-validated error of each alpha of ALPHAS: ranges from one fold's rows,
    error on the other's, and the other way round (`_fold_errors`), added."""
    first, second = (_fold_errors(fold, readers, per_row_weights) for fold in _folds(folds, readers))
    return first + second


def choose_alpha(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None],
                 per_row_weights: bool = True) -> float:
    """The alpha of ALPHAS with the least two-fold cross-validated error (module docstring);
    the smaller alpha on a tie. `folds`: two sets of rows [m, channels] of the value;
    `readers`: float64 weights [n, channels] of the linear layers that read it, None for each
    table; `per_row_weights`: whether the crossbar weights have a scale per output row."""
    return ALPHAS[int(np.argmin(alpha_errors(folds, readers, per_row_weights)))]
