"""Fused integer loops of the interpreter-simulator, compiled by numba.

Each is one pass over its data where numpy needs six to ten (casts, masks, table gathers, separate
sums), and these passes, not the arithmetic, bound the interpreter: a ResNet-50 inference writes
25 M weights (34 M with its replicas) and requantizes 11 M outputs. The products stay with BLAS or torch's int8 GEMM (`int8.py`).
Every kernel is exact integer arithmetic; tests compare each with its plain numpy statement.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def write_cells(cells, rows, contents, blocks, masks, partial, pulse_table, changed_table, count,
                pulses, changed):  # pragma: no cover - compiled
    """cells[rows[b]] <- contents[blocks[b]] where masks[blocks[b]] (everywhere when the block
    is not `partial`), for rows that are all different. pulse_table and changed_table, indexed
    by new << 8 | old, give the write pulses and the changed cells of a weight; where count[b],
    pulses[b] and changed[b] receive their sums over write b's cells, elsewhere the cells are
    only copied (the caller knows the counts)."""
    height, width = cells.shape[1], cells.shape[2]
    for b in range(len(rows)):
        dst, src, block = cells[rows[b]], contents[blocks[b]], blocks[b]
        whole = not partial[block]
        if not count[b]:
            if whole:
                dst[:, :] = src
            else:
                for r in range(height):
                    for col in range(width):
                        if masks[block, r, col]:
                            dst[r, col] = src[r, col]
            continue
        p = 0
        c = 0
        for r in range(height):
            for col in range(width):
                if whole or masks[block, r, col]:  # a cell outside a partial block keeps its level
                    pair = (np.int64(src[r, col]) << 8) | dst[r, col]
                    p += pulse_table[pair]
                    c += changed_table[pair]
                    dst[r, col] = src[r, col]
        pulses[b] = p
        changed[b] = c


@njit(cache=True, nogil=True)
def requantize(acc, x_sums, w_zp, multiplier, column_terms, shift, floor, ceiling, out):  # pragma: no cover
    """out[b, g*N + c, p] = clip(((acc[g, c, w] - w_zp[g, c] x_sums[g, w]) * multiplier[g, c]
    + column_terms[g, c]) >> shift[g, c], floor[g, c], ceiling) for window w = b * positions + p;
    acc (float32, float64 or int64), x_sums and w_zp (float64) hold exact integers whose
    products and difference stay below 2^53, so they are exact in float64; out [batch, channels,
    positions] is NCHW for a convolution (positions = OH x OW). Every [g, c] parameter is the
    layer's own or its output channel's."""
    groups, n, _ = acc.shape
    batch, _, positions = out.shape
    for g in range(groups):
        for c in range(n):
            column, m, s, low, zp = column_terms[g, c], multiplier[g, c], shift[g, c], floor[g, c], w_zp[g, c]
            for b in range(batch):
                for p in range(positions):
                    w = b * positions + p
                    q = (np.int64(acc[g, c, w] - zp * x_sums[g, w]) * m + column) >> s
                    out[b, g * n + c, p] = min(max(q, low), ceiling)


@njit(cache=True, nogil=True)
def im2col(x, first_channel, kernel, stride, padding, dilation, pad_value, offset, out_hw, out):  # pragma: no cover
    """The windows of a convolution, transposed, less `offset`: out[(c, i, j), (b, oy, ox)] =
    x[b, first_channel + c, oy sh - ph + i dh, ox sw - pw + j dw], or pad_value outside the image.
    Transposed, each row is written in order and read from a row of x; along a row of windows
    only the ends fall in the padding, so the middle is a strided copy without bounds checks."""
    batch, _, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    pad = pad_value - offset
    for c in range(out.shape[0] // (kh * kw)):
        for i in range(kh):
            for j in range(kw):
                row = out[(c * kh + i) * kw + j]
                # windows ox in [lo, hi) read inside the image: 0 <= ox sw - pw + j dw < width
                shift = j * dw - pw
                lo = min(ow, max(0, -(shift // sw) if shift < 0 else 0))
                hi = max(lo, min(ow, (width - 1 - shift) // sw + 1))
                w = 0
                for b in range(batch):
                    image = x[b, first_channel + c]
                    for oy in range(oh):
                        y = oy * sh - ph + i * dh
                        if y < 0 or y >= height:
                            row[w:w + ow] = pad
                        else:
                            line = image[y]
                            row[w:w + lo] = pad
                            for ox in range(lo, hi):
                                row[w + ox] = line[ox * sw + shift] - offset
                            row[w + hi:w + ow] = pad
                        w += ow


@njit(cache=True, nogil=True)
def column_sums(mat, out):  # pragma: no cover - compiled
    """out[w] = sum over k of mat[k, w], in int64: the input sums of each window (mat is the
    transposed windows, [K, windows], as `im2col` makes them), one pass in the order im2col wrote them."""
    out[:] = 0
    for k in range(mat.shape[0]):
        for w in range(mat.shape[1]):
            out[w] += np.int64(mat[k, w])


@njit(cache=True, nogil=True)
def qadd_pair(a, b, zps, multipliers, bias, shift, floor, ceiling, out):  # pragma: no cover - compiled
    """out = clip(((a - zps[0]) multipliers[0] + (b - zps[1]) multipliers[1] + bias) >> shift,
    floor, ceiling) over flat integer arrays of one size: the residual add, in one pass."""
    for i in range(a.size):
        q = ((np.int64(a[i]) - zps[0]) * multipliers[0] + (np.int64(b[i]) - zps[1]) * multipliers[1] + bias) >> shift
        out[i] = min(max(q, floor), ceiling)

