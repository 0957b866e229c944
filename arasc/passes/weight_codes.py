"""The weight codes SmoothQuant's alpha choice tries (smoothing.py): one numba loop, parallel over
the weight's rows, which are independent, that makes a row's codes for every candidate alpha in
one visit. It is most of a BERT-Large compile's quantize pass, bound by arithmetic rather than
memory: per weight and alpha about 1.1 ns on one core, half of it the row's range while that
was a float min and max (see `_range`). Imported only when a value is smoothed: numba costs
0.1 GB and 0.1-0.3 s to load."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

SIGN_BIT = np.int64(-(1 << 63))


@njit(cache=True, nogil=True, inline="always")
def _order_key(bits):  # pragma: no cover (numba)
    """An int64 that orders as the float64 of these bits does (a negative float's magnitude bits
    flipped; an involution, so it also maps a key back): LLVM vectorizes min and max of
    integers, not numba's float min and max, which keep Python's NaN rules (4x slower)."""
    return bits ^ ((bits >> 63) & ~SIGN_BIT)


@njit(cache=True, nogil=True)
def _range(row):  # pragma: no cover (numba)
    """min(0, row) and max(0, row)."""
    bits = row.view(np.int64)
    lo, hi = np.int64(0), np.int64(0)   # the key of 0.0
    for j in range(len(bits)):
        key = _order_key(bits[j])
        lo, hi = min(lo, key), max(hi, key)
    ends = np.array([_order_key(lo), _order_key(hi)]).view(np.float64)
    return ends[0], ends[1]


@njit(cache=True, nogil=True, parallel=True)
def weight_codes(weight, column_scales, x_zps, per_row):  # pragma: no cover (numba)
    """The crossbar's view of the float weight [n, k] with its columns scaled by each row of
    `column_scales` [a, k]: per scaling, uint8 codes less 128 (int8) [a, n, k], and per row the
    zero point, the scale and sum_k (128 - x_zps[., k]) (code - 128) [a, n], the term that
    `add_squared_errors` needs of the row. Zero points and scales per row (`per_row`) or
    one for the weight, each range widened to include 0, rounding half to even: the same
    arithmetic, in the same order, as the quantize pass's `_weight_params` and
    `calibrate.quantize_array` (tests compare them)."""
    n, k = weight.shape
    scalings = column_scales.shape[0]
    low, high = np.zeros(scalings), np.zeros(scalings)
    if not per_row:   # one range for the weight: a pass to find it first
        for a in range(scalings):
            for i in range(n):
                for j in range(k):
                    v = weight[i, j] * column_scales[a, j]
                    low[a], high[a] = min(low[a], v), max(high[a], v)
    centred = np.empty((scalings, n, k), np.int8)
    zp, scale, zp_term = np.empty((scalings, n), np.int64), np.empty((scalings, n)), np.empty((scalings, n), np.int64)
    for i in prange(n):   # separate loops over the row: the simple ones vectorize
        row = np.empty(k)
        for a in range(scalings):
            for j in range(k):
                row[j] = weight[i, j] * column_scales[a, j]
            lo, hi = _range(row) if per_row else (low[a], high[a])
            span = hi - lo
            s = span / 255.0 if span > 0 else 1.0
            z = np.rint(-lo / s)
            for j in range(k):
                centred[a, i, j] = np.int64(min(max(np.rint(row[j] / s) + z, 0.0), 255.0)) - 128
            term = 0
            for j in range(k):
                term += (128 - x_zps[a, j]) * centred[a, i, j]
            zp[a, i], scale[a, i], zp_term[a, i] = np.int64(z), s, term
    return centred, zp, scale, zp_term


@njit(cache=True, nogil=True)
def add_squared_errors(products, zp_term, w_zp, x_sums, w_scale, want, squared):  # pragma: no cover (numba)
    """squared[m] += sum_n (held[n, m] - want[n, m])^2, where held is what the crossbar computes of
    test row m at output n with one alpha's weight codes: w_scale[n] sum_k (w[n, k] - w_zp[n])
    (codes[m, k] - x_zp[k]), whose integer sum is, with c = w - 128 and a = codes - 128,
    products[n, m] (c @ a.T) + zp_term[n] + (128 - w_zp[n]) x_sums[m] (`weight_codes` makes
    zp_term, x_sums is sum_k (codes[m, k] - x_zp[k])). One pass: numpy's version of the same
    took a temporary per term, as long as the int8 GEMM itself."""
    n, m = products.shape
    for i in range(n):
        for j in range(m):
            error = (products[i, j] + zp_term[i] + (128 - w_zp[i]) * x_sums[j]) * w_scale[i] - want[i, j]
            squared[j] += error * error
