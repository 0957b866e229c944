"""Compiled loops of the ADC schemes (docs/adc.md), kept apart from the ideal-ADC kernels.

`write_cells_wide` is `kernels.write_cells` for weights of more than 15 cells (1-bit slices in
differential pairs: 16 cells), whose changed-cell count does not fit the packed table's 4 bits:
it reads the write pulses and the changed cells of a (new, old) weight pair from two tables."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def write_cells_wide(cells, rows, contents, blocks, masks, partial, pulse_table, changed_table):  # pragma: no cover
    """cells[rows[b]] <- contents[blocks[b]] where masks[blocks[b]] (everywhere when the block is
    not `partial`), for rows that are all different; returns (pulses, changed cells) summed over
    all writes, from pulse_table and changed_table indexed by new << 8 | old."""
    pulses = 0
    changed = 0
    height, width = cells.shape[1], cells.shape[2]
    for b in range(len(rows)):
        dst, src, block = cells[rows[b]], contents[blocks[b]], blocks[b]
        whole = not partial[block]
        for r in range(height):
            for col in range(width):
                if whole or masks[block, r, col]:
                    pair = (np.int64(src[r, col]) << 8) | dst[r, col]
                    pulses += pulse_table[pair]
                    changed += changed_table[pair]
                    dst[r, col] = src[r, col]
    return pulses, changed
