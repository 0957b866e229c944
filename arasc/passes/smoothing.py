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
in integers: one numba pass per weight row makes the row's uint8 codes and its zero point and
scale (the quantize pass's rule, weight_codes.py), and the product with the value's codes is an
exact int8 x int8 -> int32 GEMM (`_code_products`); the readers' exact outputs are made once per
fold. The float64 statement of the same criterion (decode the weights, multiply) is kept in the
tests, which check that both choose the same alpha.

Most alphas need not be computed to the end. Every term of the error is >= 0, so the part
computed so far bounds it from below: each alpha computes one block of weight rows, the one
that looks best then runs to the end, and each other stops once its bound passes the least
error found. The chosen alpha and the errors computed are the same as without stopping (all 96
of BERT-Large's choices checked). It saves less than hoped: on the zoo's random weights the
alphas' errors are often within 1 % of each other, and BERT-Large skips 7 % of the weight codes
and products (blocks of 256 rows would skip more but cost more in per-call overhead).
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from .calibrate import U8_LEVELS, QParams, channel_qparams

ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)   # 0.8 and above only helped on the rows they were fitted to
FIRST_BLOCK_ROWS = 256   # weight rows of an alpha's first step, which ranks the alphas
BLOCK_ROWS = 1024        # of each further step, after which it checks whether to stop: smaller blocks
                         # cost more in per-call overhead (2x at 256 rows on a loaded machine) than they save
PRUNE_MARGIN = 1e-9      # relative: far above the rounding by which a bound's order of summation can differ


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


def _codes(rows: np.ndarray, p: QParams) -> np.ndarray:
    """uint8 codes of `rows` under the per-channel parameters `p`."""
    return np.clip(np.round(rows / p.scale) + p.zp, 0, U8_LEVELS).astype(np.uint8)


def _code_products(codes: np.ndarray, x_zp: np.ndarray, weight: tuple) -> np.ndarray:
    """sum_k (codes[m, k] - x_zp[k]) (w[n, k] - w_zp[n]) for uint8 `codes` [m, k] and a weight from
    `weight_codes`, exact (int64): with a = codes - 128 and c = w - 128 (int8), the sum is
    a @ c.T + sum_k (128 - x_zp[k]) c[n, k] + (128 - w_zp[n]) sum_k (codes[m, k] - x_zp[k]).
    a @ c.T is torch's int8 GEMM where it is exact on this CPU (|sum| <= 2^14 k < 2^31), else
    float64 (integers below 2^53: exact too)."""
    from ..runtime.int8 import int8_product, int8_products_exact

    centred, w_zp, _, zp_term = weight
    a = (codes ^ np.uint8(128)).view(np.int8)
    if int8_products_exact() and codes.shape[1] < 1 << 17:
        products = int8_product(a, centred.T).astype(np.int64)
    else:
        products = (a.astype(np.float64) @ centred.T.astype(np.float64)).astype(np.int64)
    x_sums = (codes.astype(np.int64) - x_zp).sum(1)
    return products + zp_term + np.outer(x_sums, 128 - w_zp)


@dataclass(frozen=True)
class _Fold:
    """One direction of the cross-validation: channel ranges from the `fit` rows, error on the
    `test` rows; each reader's exact result on them and its mean squared row."""
    low: np.ndarray
    high: np.ndarray
    test: np.ndarray
    exact: list[np.ndarray]
    signals: list[float]


def _folds(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None]) -> list[_Fold]:
    result = []
    for fit, test in (folds, folds[::-1]):
        exact = [test if weight is None else test @ weight.T for weight in readers]
        result.append(_Fold(fit.min(0), fit.max(0), test, exact,
                            [float(np.vdot(e, e)) / max(len(e), 1) for e in exact]))
    return result


def _alpha_error(alpha: float, folds: list[_Fold], readers: Sequence[np.ndarray | None],
                 per_row_weights: bool) -> Generator[float, None, float]:
    """The error of `alpha` (module docstring): for each fold, the squared error of what each
    reader computes from the test rows coded with the parameters the fit rows give, relative to
    its exact result, summed over readers, then over the two folds. A reader is a linear layer's
    float weight [n, k] (its columns take the channel scales, then it is quantized as the crossbar
    holds it: per row or per weight) or None for a table, which sees the decoded value; its error
    is the largest squared error of an output row over the mean squared exact row.

    Every term is >= 0, so the error only grows as it is computed: this generator yields a lower
    bound of it after each block of weight rows (the rows' share of each output row's squared
    error) and returns the error itself, summed in the same order whatever is pruned."""
    from .weight_codes import weight_codes  # numba: loaded only when a value is smoothed

    fold_errors: list[float] = []
    rows = FIRST_BLOCK_ROWS
    for fold in folds:
        p = smoothed_qparams(fold.low, fold.high, alpha)
        codes, zp, scale = _codes(fold.test, p), np.asarray(p.zp), np.asarray(p.scale)
        done = sum(fold_errors)
        total = 0.0
        for weight, want, signal in zip(readers, fold.exact, fold.signals, strict=True):
            if signal <= 0:
                continue
            if weight is None:
                approx = (codes - zp) * scale
            else:
                approx = np.empty_like(want)
                partial = np.zeros(len(want))
                start = 0
                while start < len(weight):
                    # one range for the weight (not per row): all of it at once
                    block = slice(start, start + (rows if per_row_weights else len(weight)))
                    held = weight_codes(weight[block], scale, zp, per_row_weights)
                    approx[:, block] = _code_products(codes, zp, held) * held[2]
                    partial += np.square(want[:, block] - approx[:, block]).sum(axis=1)
                    start, rows = block.stop, BLOCK_ROWS
                    yield done + total + float(partial.max()) / signal
            total += float(np.square(want - approx).sum(axis=1).max()) / signal
        fold_errors.append(total)
    return fold_errors[0] + fold_errors[1]


def _step(run: Generator[float, None, float]) -> tuple[bool, float]:
    """(finished, the error) or (not finished, a lower bound of it)."""
    try:
        return False, next(run)
    except StopIteration as stop:
        return True, stop.value


def alpha_errors(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None],
                 per_row_weights: bool = True, prune: bool = True) -> np.ndarray:
    """The two-fold cross-validated error of each alpha of ALPHAS; with `prune`, inf for an alpha
    whose error is certainly above the least one. Each alpha first computes one block; the one
    with the least bound then runs to the end, and every other stops once its bound passes the
    least error found (by more than rounding could account for: the bound sums the rows'
    squared errors in another order). The errors computed are the same numbers either way."""
    prepared = _folds(folds, readers)
    runs = [_alpha_error(alpha, prepared, readers, per_row_weights) for alpha in ALPHAS]
    errors = np.full(len(ALPHAS), np.inf)
    pending = []
    for index, run in enumerate(runs):
        finished, value = _step(run)
        if finished:
            errors[index] = value
        else:
            pending.append((value, index))
    for bound, index in sorted(pending):   # the alpha that looks best after one block goes first
        while not (prune and bound > errors.min() * (1 + PRUNE_MARGIN)):
            finished, bound = _step(runs[index])
            if finished:
                errors[index] = bound
                break
        runs[index].close()
    return errors


def choose_alpha(folds: tuple[np.ndarray, np.ndarray], readers: Sequence[np.ndarray | None],
                 per_row_weights: bool = True) -> float:
    """The alpha of ALPHAS with the least two-fold cross-validated error (module docstring);
    the smaller alpha on a tie. `folds`: two sets of rows [m, channels] of the value;
    `readers`: float64 weights [n, channels] of the linear layers that read it, None for each
    table; `per_row_weights`: whether the crossbar weights have a scale per output row."""
    return ALPHAS[int(np.argmin(alpha_errors(folds, readers, per_row_weights)))]
