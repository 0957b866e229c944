"""The weight-mean shift's loops over every crossbar weight code (shift_weights.py, paper V-C),
compiled by numba: counting each channel's codes, mapping the counts through a candidate
center's moves, and moving the codes. BERT-Large holds 0.3 G crossbar weights; numpy's versions
of these loops (a bincount per block of channels, a float64 table per channel and center, float64
temporaries of every squeezed weight) took 4.7 s of its compile. Imported where they run: numba
costs 0.1-0.3 s to load."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, inline="always")
def moved_code(code, zp, d, alpha):  # pragma: no cover (numba)
    """Where the shift takes `code` of a channel with zero point `zp`, move `d` and scale `alpha`
    (1: not squeezed), before clipping to 0..255: scaled about the zero point by alpha (rounded
    half to even, in float64), then moved by d."""
    if alpha < 1.0:
        return np.int64(np.rint((code - zp) * alpha)) + zp + d
    return code + d


@njit(cache=True, nogil=True, parallel=True)
def count_codes(codes, counts):  # pragma: no cover (numba)
    """Add to counts[c, v] how many codes of row c of `codes` [C, K] (uint8) are v."""
    for c in prange(codes.shape[0]):
        for j in range(codes.shape[1]):
            counts[c, codes[c, j]] += 1


@njit(cache=True, nogil=True, parallel=True)
def code_histogram(codes):  # pragma: no cover (numba)
    """How many of the uint8 `codes` (one dimension) are each value, int64 [256]."""
    parts = 64   # each counted apart in parallel, then added
    partial = np.zeros((parts, 256), np.int64)
    size = (len(codes) + parts - 1) // parts
    for p in prange(parts):
        for j in range(p * size, min((p + 1) * size, len(codes))):
            partial[p, codes[j]] += 1
    return partial.sum(axis=0)


@njit(cache=True, nogil=True, parallel=True)
def moved_counts(counts, zp, d, alpha):  # pragma: no cover (numba)
    """The code histogram, int64 [256], of a layer whose channels' code counts are `counts`
    [C, 256] once each channel's codes are moved (`moved_code`) and clipped to 0..255; and how
    many of its weights clipped."""
    parts = 64   # groups of channels counted apart in parallel, then added
    histograms = np.zeros((parts, 256), np.int64)
    clipped = np.zeros(parts, np.int64)
    size = (counts.shape[0] + parts - 1) // parts
    for p in prange(parts):
        for c in range(p * size, min((p + 1) * size, counts.shape[0])):
            for code in range(256):
                n = np.int64(counts[c, code])
                if n:
                    moved = moved_code(code, zp[c], d[c], alpha[c])
                    if moved < 0 or moved > 255:
                        clipped[p] += n
                        moved = min(max(moved, 0), 255)
                    histograms[p, moved] += n
    return histograms.sum(axis=0), clipped.sum()


@njit(cache=True, nogil=True, parallel=True)
def move_codes(codes, zp, d, alpha):  # pragma: no cover (numba)
    """The codes [C, K] (uint8) with each channel's moved (`moved_code`) and clipped to 0..255,
    and how many clipped."""
    moved_codes = np.empty_like(codes)
    clipped = np.zeros(codes.shape[0], np.int64)
    for c in prange(codes.shape[0]):
        for j in range(codes.shape[1]):
            moved = moved_code(np.int64(codes[c, j]), zp[c], d[c], alpha[c])
            if moved < 0 or moved > 255:
                clipped[c] += 1
                moved = min(max(moved, 0), 255)
            moved_codes[c, j] = moved
    return moved_codes, clipped.sum()


@njit(cache=True, nogil=True)
def code_tables(zp, d, alpha):  # pragma: no cover (numba)
    """Where each channel's moves take each of the 256 codes, int64 [C, 256], before clipping."""
    tables = np.empty((len(zp), 256), np.int64)
    for c in range(len(zp)):
        for code in range(256):
            tables[c, code] = moved_code(code, zp[c], d[c], alpha[c])
    return tables
