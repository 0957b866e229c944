"""The weight codes SmoothQuant's alpha choice tries (smoothing.py): one numba loop, parallel over
the weight's rows, which are independent; it is most of a BERT-Large compile's quantize pass.
Imported only when a value is smoothed: numba costs 0.1 GB and 0.1-0.3 s to load."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, parallel=True)
def weight_codes(weight, column_scale, x_zp, per_row):  # pragma: no cover (numba)
    """The crossbar's view of the float weight [n, k] with its columns scaled by `column_scale`:
    uint8 codes less 128 (int8) [n, k], and per row the zero point, the scale and
    sum_k (128 - x_zp[k]) (code - 128), the term that `smoothing._code_products` needs of the row. Zero
    points and scales per row (`per_row`) or one for the weight, each range widened to include 0,
    rounding half to even: the same arithmetic, in the same order, as the quantize pass's
    `_weight_params` and `calibrate.quantize_array` (tests compare them)."""
    n, k = weight.shape
    low, high = 0.0, 0.0
    if not per_row:   # one range for the weight: a pass to find it first
        for i in range(n):
            for j in range(k):
                v = weight[i, j] * column_scale[j]
                low, high = min(low, v), max(high, v)
    centred = np.empty((n, k), np.int8)
    zp, scale, zp_term = np.empty(n, np.int64), np.empty(n), np.empty(n, np.int64)
    for i in prange(n):   # separate loops over the row: the simple ones vectorize
        row = np.empty(k)
        for j in range(k):
            row[j] = weight[i, j] * column_scale[j]
        lo, hi = low, high
        if per_row:
            lo, hi = 0.0, 0.0
            for j in range(k):
                lo, hi = min(lo, row[j]), max(hi, row[j])
        span = hi - lo
        s = span / 255.0 if span > 0 else 1.0
        z = np.rint(-lo / s)
        for j in range(k):
            centred[i, j] = np.int64(min(max(np.rint(row[j] / s) + z, 0.0), 255.0)) - 128
        term = 0
        for j in range(k):
            term += (128 - x_zp[j]) * centred[i, j]
        zp[i], scale[i], zp_term[i] = np.int64(z), s, term
    return centred, zp, scale, zp_term
