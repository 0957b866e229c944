"""Fused integer loops of the interpreter-simulator, compiled by numba.

Each is one pass over its data where numpy needs six to ten (casts, masks, table gathers, separate
sums), and these passes, not the arithmetic, bound the interpreter: a ResNet-50 inference writes
25 M weights (34 M with its replicas) and requantizes 11 M outputs. The products stay with BLAS or torch's int8 GEMM (`int8.py`).
Every kernel is exact integer arithmetic; tests compare each with its plain numpy statement.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, parallel=True)
def write_cells(cells, rows, contents, blocks, masks, partial, pulse_table, changed_table, count,
                pulses, changed):  # pragma: no cover - compiled
    """cells[rows[b]] <- contents[blocks[b]] where masks[blocks[b]] (everywhere when the block
    is not `partial`), for rows that are all different. pulse_table and changed_table, indexed
    by new << 8 | old, give the write pulses and the changed cells of a weight; where count[b],
    pulses[b] and changed[b] receive their sums over write b's cells, elsewhere the cells are
    only copied (the caller knows the counts). The rows are apart, so they are written in
    parallel."""
    for b in prange(len(rows)):
        block = blocks[b]
        p, c = _write_row(cells[rows[b]], contents[block], masks[block], not partial[block], count[b], pulse_table,
                          changed_table)
        if count[b]:
            pulses[b], changed[b] = p, c


@njit(cache=True, nogil=True)
def _write_row(dst, src, mask, whole, count, pulse_table, changed_table):  # pragma: no cover - compiled
    """One write of `write_cells`: its (pulses, changed cells) where `count`, else (0, 0) uncounted."""
    height, width = dst.shape
    p = 0
    c = 0
    if not count:
        # row by row with unsigned indices: a vectorized copy (numba's 2-D slice assignment, and
        # signed indices, which it wraps when negative, kept it elementwise; see `_channel_windows`)
        for r in range(height):
            d, s, m = dst[r], src[r], mask[r]
            if whole:
                for col in range(np.uint64(width)):
                    d[col] = s[col]
            else:
                for col in range(np.uint64(width)):
                    if m[col]:
                        d[col] = s[col]
        return p, c
    for r in range(height):
        for col in range(width):
            if whole or mask[r, col]:  # a cell outside a partial block keeps its level
                pair = (np.int64(src[r, col]) << 8) | dst[r, col]
                p += pulse_table[pair]
                c += changed_table[pair]
                dst[r, col] = src[r, col]
    return p, c


@njit(cache=True, nogil=True, parallel=True)
def requantize(acc, x_sums, w_zp, multiplier, column_terms, shift, floor, ceiling, out):  # pragma: no cover
    """out[b, g*N + c, p] = clip(((acc[g, c, w] - w_zp[g, c] x_sums[g, w]) * multiplier[g, c]
    + column_terms[g, c]) >> shift[g, c], floor[g, c], ceiling) for window w = b * positions + p;
    acc (float32, float64 or int64), x_sums and w_zp (float64) hold exact integers whose
    products and difference stay below 2^53, so they are exact in float64; out [batch, channels,
    positions] is NCHW for a convolution (positions = OH x OW). Every [g, c] parameter is the
    layer's own or its output channel's. The output channels are apart: made in parallel."""
    groups, n, _ = acc.shape
    batch, _, positions = out.shape
    for channel in prange(groups * n):
        g, c = channel // n, channel % n
        column, m, s, low, zp = column_terms[g, c], multiplier[g, c], shift[g, c], floor[g, c], w_zp[g, c]
        for b in range(batch):
            for p in range(positions):
                w = b * positions + p
                q = (np.int64(acc[g, c, w] - zp * x_sums[g, w]) * m + column) >> s
                out[b, channel, p] = min(max(q, low), ceiling)


@njit(cache=True, nogil=True, parallel=True)
def im2col(x, first_channel, kernel, stride, padding, dilation, pad_value, offset, out_hw, out):  # pragma: no cover
    """The windows of a convolution, transposed, less `offset`: out[(c, i, j), (b, oy, ox)] =
    x[b, first_channel + c, oy sh - ph + i dh, ox sw - pw + j dw], or pad_value outside the image.
    Transposed, each row is written in order and read from a row of x; along a row of windows
    only the ends fall in the padding, so the middle is a strided copy without bounds checks.
    The input channels' rows are apart, so they are made in parallel."""
    kh, kw = kernel
    for c in prange(out.shape[0] // (kh * kw)):
        _channel_windows(x, first_channel + c, kernel, stride, padding, dilation, pad_value - offset, offset, out_hw,
                         out, c * kh * kw)


@njit(cache=True, nogil=True)
def _channel_windows(x, channel, kernel, stride, padding, dilation, pad, offset, out_hw, out, first_row):  # pragma: no cover
    """`im2col`'s rows (i, j) of one input channel, rows first_row + i kw + j of out. x and out
    are C-contiguous and the copy indexes both flat with unsigned indices: numba wraps signed
    negative indices, a branch per element that kept LLVM from vectorizing the copy (3-6x
    slower on ResNet-50's convolutions)."""
    batch, channels, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = kernel, stride, padding, dilation, out_hw
    src, dst = x.reshape(-1), out.reshape(-1)
    step = np.uint64(sw)
    for i in range(kh):
        for j in range(kw):
            w = (first_row + i * kw + j) * out.shape[1]
            # windows ox in [lo, hi) read inside the image: 0 <= ox sw - pw + j dw < width
            shift = j * dw - pw
            lo = min(ow, max(0, -(shift // sw) if shift < 0 else 0))
            hi = max(lo, min(ow, (width - 1 - shift) // sw + 1))
            for b in range(batch):
                for oy in range(oh):
                    y = oy * sh - ph + i * dh
                    if y < 0 or y >= height:
                        dst[w:w + ow] = pad
                    else:
                        dst[w:w + lo] = pad
                        # the first pixel read, x[b, channel, y, lo sw + shift], flat
                        first = np.uint64(((b * channels + channel) * height + y) * width + lo * sw + shift)
                        at = np.uint64(w + lo)
                        for ox in range(np.uint64(hi - lo)):
                            dst[at + ox] = src[first + ox * step] - offset
                        dst[w + hi:w + ow] = pad
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



@njit(cache=True, nogil=True)
def rows_out_of_range(sums, low, top, out):  # pragma: no cover - compiled
    """out[i] = whether some sample of row i of sums [windows, columns] leaves low..top: one pass
    keeping each row's extremes (numpy takes a pass for each, and one more to compare)."""
    for i in range(sums.shape[0]):
        row = sums[i]
        highest = row[0]
        lowest = row[0]
        for c in range(1, row.shape[0]):
            highest = max(highest, row[c])
            lowest = min(lowest, row[c])
        out[i] = highest > top or lowest < low


@njit(cache=True, nogil=True)
def out_of_range(row, low, top, found, flags):  # pragma: no cover - compiled
    """The columns of `row` whose sample leaves low..top, into found[:count]; returns count.
    Few do (a few % of a row that has one, on ResNet-50): so one vectorized pass marks them in
    `flags` (uint8, at least len(row) rounded up to 8, zeros past len(row)), and only the
    8-column words of flags that are not 0 are looked into."""
    n = row.shape[0]
    span = np.uint32(top - low)
    for c in range(n):  # a sample below low wraps around to a large distance too
        flags[c] = np.uint32(np.int64(row[c]) - low) > span
    words = flags.view(np.uint64)
    count = 0
    for k in range(words.shape[0]):
        if words[k]:
            for c in range(8 * k, min(8 * k + 8, n)):
                if flags[c]:
                    found[count] = c
                    count += 1
    return count


@njit(cache=True, nogil=True)
def clip_samples(sums, rows, windows, low, top, weight, significance, cut):  # pragma: no cover - compiled
    """The ADC's cut of the samples of `rows` of sums [hot windows, columns] (bitline sums of one
    input bit): a sample s outside low..top reads as the end it passed, so its window's output
    `weight[c]` loses (s - end) x significance[c] (the sample's place in the shift-and-add):
    added to cut[windows[i], weight[c]]. Returns how many samples were clipped."""
    clipped = 0
    found = np.empty(sums.shape[1], np.int64)
    flags = np.zeros(-(-sums.shape[1] // 8) * 8, np.uint8)
    for i in rows:
        w = windows[i]
        for k in range(out_of_range(sums[i], low, top, found, flags)):
            c = found[k]
            s = np.int64(sums[i, c])
            excess = s - top if s > top else s - low
            clipped += 1
            cut[w, weight[c]] += excess * significance[c]
    return clipped


@njit(cache=True, nogil=True)
def recover_samples(sums, rows, windows, codes, by_column, first, width, low, top, weight, significance, cut,
                    again):  # pragma: no cover - compiled
    """RAELLA's recovery of the speculative samples of `rows` of sums [hot windows, columns]
    (bitline sums of input bits first..first + width - 1 driven at once): a sample outside
    low..top is read again one bit at a time, sum_r bit_b(codes[w, r]) x by_column[c, r],
    through the same ADC, and its window's output `weight[c]` loses what the ADC cut of those
    samples, sum_b (s_b - clipped s_b) 2^b x significance[c] (the exact sum it stood for is the
    product's), into cut[w, weight[c]]; again[w] marks the windows read again. Returns (saturated
    speculative samples, clipped single-bit samples)."""
    saturated = 0
    clipped = 0
    found = np.empty(sums.shape[1], np.int64)
    flags = np.zeros(-(-sums.shape[1] // 8) * 8, np.uint8)
    for i in rows:
        w = windows[i]
        x = codes[w]
        count = out_of_range(sums[i], low, top, found, flags)
        saturated += count
        if count:
            again[w] = True
        for k in range(count):
            c = found[k]
            levels = by_column[c]
            lost = 0
            for b in range(first, first + width):
                single = 0
                for r in range(x.shape[0]):
                    single += ((x[r] >> b) & 1) * np.int64(levels[r])
                if single > top:
                    clipped += 1
                    lost += (single - top) << b
                elif single < low:
                    clipped += 1
                    lost += (single - low) << b
            cut[w, weight[c]] += lost * significance[c]
    return saturated, clipped
