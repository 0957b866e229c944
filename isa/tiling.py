"""Crossbar tiling: where every weight of a layer lives on the ARAS chip (paper II-C and Fig. 3,
IV-A, IV-C, VI). Pure numpy on weight arrays and a `Hardware`; no IR. docs/tiling.md.

    layer weight --weight_matrix--> K x N matrices, one per conv group
    K x N matrix --to_cells--> cell levels [blocks, crossbars, rows, cells] --from_cells--> matrix

Mapping. A conv kernel (Cin/groups x kh x kw) is unrolled into one column (II-C), so column n of
the matrix is weight[n].reshape(-1), in (cin, kh, kw) row-major order: K = Cin/groups*kh*kw rows
(crossbar inputs), N = Cout columns. A linear weight [N, K] is the same rule with one window.
The matrix is cut into blocks of `hw.block` (128 x 128), one per APU row, because the 4 APUs of
a row share their 128 inputs and hold one layer (IV-C). Crossbar c of a block holds block
columns c*32 .. c*32+31; an 8-bit weight is 4 consecutive 2-bit cells of its crossbar row, the
first cell holding the least significant bits (VI: "cell 1 = bits 1:0"), so weight column w of
a crossbar uses cells 4w .. 4w+3. Every size comes from the Hardware.

Block order. Block (i, j) holds matrix rows i*128.. and columns j*128..; blocks are numbered
column-major, b = j*kb + i. A layer larger than the chip runs in segments of consecutive
blocks (IV-A); in this order each output column set completes inside one segment except at most
one per segment boundary, the only one whose partial sums must wait for the next segment.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .hardware import Hardware

# Level of a cell that holds no weight (edge blocks are partial). Real levels are
# 0 .. 2**cell_bits - 1 <= 15 (cell_bits is 1, 2 or 4), so 255 can never be one.
UNUSED = 255
# Differential cell pairs hold a weight code q as its signed offset q - 128 (docs/adc.md); the
# digital periphery adds 128 x sum(x) back.
OFFSET_CENTER = 128


def layer_hardware(hw: Hardware, layer) -> Hardware:
    """The chip as `layer` (an IR layer or a program's layer) uses it: sliced at the layer's
    `weight_slice_bits` where it has one (arasc/passes/weight_slicing.py), else as it is."""
    bits = layer.attr("weight_slice_bits", None)
    return hw if bits is None else hw.sliced(bits)


def matrix_shape(weight_shape: tuple[int, ...], groups: int = 1) -> tuple[int, int]:
    """(K, N) of each of a layer's `groups` weight matrices, from its weight shape [Cout, ...]."""
    return math.prod(weight_shape[1:]), weight_shape[0] // groups


def weight_matrix(weight: np.ndarray, attrs: Mapping) -> list[np.ndarray]:
    """The K x N weight matrices of a conv or linear layer, one per group (views, no copy).

    A grouped conv's groups read different input channels, while an APU row's crossbars share
    their inputs (IV-C), so each group is a matrix of its own, tiled separately."""
    groups = attrs.get("groups", 1)
    columns = weight.reshape(weight.shape[0], -1)  # row n = kernel n unrolled, (cin, kh, kw) row-major
    per_group = weight.shape[0] // groups
    return [columns[g * per_group:(g + 1) * per_group].T for g in range(groups)]


def block_grid(k: int, n: int, hw: Hardware) -> tuple[int, int]:
    """(kb, nb): blocks down the K rows and across the N columns of a K x N matrix."""
    rows, cols = hw.block
    return -(-k // rows), -(-n // cols)


def crossbars_used(k: int, n: int, hw: Hardware) -> int:
    """Crossbars holding at least one weight of a K x N matrix: each block row of it spans
    ceil(N / 32) crossbars; the others of a partial block's APU row stay unwritten."""
    kb, _ = block_grid(k, n, hw)
    return kb * -(-n // hw.weights_per_row)


def segment_count(apu_rows: int, hw: Hardware) -> int:
    """Segments a layer of `apu_rows` blocks runs in, each at most the chip's APU rows (IV-A)."""
    return -(-apu_rows // hw.apu_rows)


def locate(r, c, k: int, hw: Hardware):
    """Where weight (r, c) of a K x N matrix lives: (block, crossbar, row, first cell); the
    weight occupies cells first .. first + cells_per_weight - 1. Vectorised over r and c."""
    rows, cols = hw.block
    kb, _ = block_grid(k, 1, hw)
    i, row = np.divmod(r, rows)
    j, col = np.divmod(c, cols)
    crossbar, w = np.divmod(col, hw.weights_per_row)
    return j * kb + i, crossbar, row, w * hw.cells_per_weight


def to_cells(matrix: np.ndarray, hw: Hardware) -> np.ndarray:
    """The cell levels of a K x N matrix of unsigned weights, as uint8
    [blocks, crossbars per block, crossbar rows, cells per row]; cells holding no weight are UNUSED."""
    _check_weights(matrix, hw)
    k, n = matrix.shape
    kb, nb = block_grid(k, n, hw)
    rows, _ = hw.block
    xbars, per_row, cpw, bits = hw.chip.apus_per_row, hw.weights_per_row, hw.cells_per_weight, hw.crossbar.cell_bits
    # Lay the cells out in matrix order (row, column, cell) first, so the padding is a single fill.
    cells = np.full((kb * rows, nb * xbars * per_row, cpw), UNUSED, np.uint8)
    used = cells[:k, :n]
    if hw.differential:
        used[...] = cell_levels(matrix, hw).reshape(k, n, cpw)
    else:
        # uint8 shifts keep the arithmetic in uint8: int64 temporaries of VGG-16's fc6 would take 3 GB.
        np.right_shift(matrix[:, :, None], (bits * np.arange(cpw)).astype(matrix.dtype), out=used, casting="unsafe")
        np.bitwise_and(used, (1 << bits) - 1, out=used)
    # (i, row, j, crossbar, w, cell) -> (j, i, crossbar, row, w, cell): blocks column-major.
    grid = cells.reshape(kb, rows, nb, xbars, per_row, cpw).transpose(2, 0, 3, 1, 4, 5)
    return grid.reshape(nb * kb, xbars, rows, per_row * cpw)


def from_cells(levels: np.ndarray, k: int, n: int, hw: Hardware) -> np.ndarray:
    """The K x N weight matrix `to_cells` mapped to `levels`: its exact inverse. Raises
    ValueError if `levels` is not such a map (wrong shape, a weight cell out of range, or a
    cell outside the matrix not UNUSED)."""
    kb, nb = block_grid(k, n, hw)
    rows, _ = hw.block
    xbars, per_row, cpw, bits = hw.chip.apus_per_row, hw.weights_per_row, hw.cells_per_weight, hw.crossbar.cell_bits
    expected = (kb * nb, xbars, rows, hw.crossbar.cols_cells)
    if levels.shape != expected:
        raise ValueError(f"cell levels of a {k} x {n} matrix have shape {expected}, got {levels.shape}")
    cells = levels.reshape(nb, kb, xbars, rows, per_row, cpw).transpose(1, 3, 0, 2, 4, 5)
    cells = cells.reshape(kb * rows, nb * xbars * per_row, cpw)
    used = cells[:k, :n]
    if used.max(initial=0) >> bits:
        raise ValueError(f"a weight cell holds a level above {(1 << bits) - 1}")
    if np.count_nonzero(cells != UNUSED) != used.size:
        raise ValueError(f"a cell outside the {k} x {n} matrix is not UNUSED ({UNUSED})")
    dtype = np.min_scalar_type((1 << hw.crossbar.weight_bits) - 1)
    if hw.differential:
        signed = used[:, :, 0::2].astype(np.int64) - used[:, :, 1::2]    # pair t: positive - negative cell
        offset = signed @ (1 << (bits * np.arange(hw.slices_per_weight)))
        return (offset + OFFSET_CENTER).astype(dtype)
    matrix = np.zeros((k, n), dtype)
    for t in range(cpw):
        matrix |= used[:, :, t].astype(dtype) << dtype.type(bits * t)
    return matrix


def layer_cells(weight: np.ndarray, attrs: Mapping, hw: Hardware) -> np.ndarray:
    """The cell levels of a whole conv or linear layer: its groups' blocks one after the other,
    [groups * kb * nb, crossbars, rows, cells], in the order of the layer's APU rows."""
    return np.concatenate([to_cells(m, hw) for m in weight_matrix(weight, attrs)])


def _check_weights(matrix: np.ndarray, hw: Hardware) -> None:
    bits = hw.crossbar.weight_bits
    if matrix.ndim != 2 or matrix.dtype.kind != "u":
        raise TypeError(f"expected a 2-D matrix of unsigned integer weights (quantize first), "
                        f"got {matrix.dtype}{list(matrix.shape)}")
    if matrix.max(initial=0) >> bits:
        raise ValueError(f"weight {matrix.max()} does not fit the chip's {bits}-bit weights")


def layer_blocks(weight: np.ndarray, attrs: Mapping, hw: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """A whole layer's blocks as the weights each APU row holds, [blocks, rows, block columns]
    (column c*32 + w is weight w of crossbar c, so its cells are `to_cells`'s 4w..4w+3 of
    crossbar c), in the order of `layer_cells`, with a mask of the positions that hold a weight.
    The same content as the cell levels, four 2-bit cells packed per byte."""
    rows, cols = hw.block
    blocks, masks = [], []
    for matrix in weight_matrix(weight, attrs):
        k, n = matrix.shape
        kb, nb = block_grid(k, n, hw)
        padded = np.zeros((kb * rows, nb * cols), matrix.dtype)
        padded[:k, :n] = matrix
        used = np.zeros(padded.shape, bool)
        used[:k, :n] = True
        for grid, out in ((padded, blocks), (used, masks)):
            # (i, row, j, col) -> (j, i, row, col): blocks column-major, as to_cells numbers them
            out.append(grid.reshape(kb, rows, nb, cols).transpose(2, 0, 1, 3).reshape(nb * kb, rows, cols))
    return np.concatenate(blocks), np.concatenate(masks)


def cell_levels(weights: np.ndarray, hw: Hardware) -> np.ndarray:
    """Packed weights [..., crossbars * weights per row] -> their cell levels
    [..., crossbars * cells per row], cell t of a weight holding bits (t+1)*cell_bits-1 .. t*cell_bits.
    With differential pairs, cells 2t and 2t+1 are the positive and negative cell of slice t of
    the offset q - 128: slice t of |q - 128| in the cell of the offset's sign, 0 in the other."""
    if hw.differential:
        signed = slice_levels(weights, hw).reshape(*weights.shape, hw.slices_per_weight)
        pairs = np.stack([np.maximum(signed, 0), np.maximum(-signed, 0)], -1).astype(np.uint8)
        return pairs.reshape(*weights.shape[:-1], weights.shape[-1] * hw.cells_per_weight)
    bits, cpw = hw.crossbar.cell_bits, hw.cells_per_weight
    shifts = (bits * np.arange(cpw)).astype(weights.dtype)
    levels = (weights[..., None] >> shifts) & ((1 << bits) - 1)
    return levels.reshape(*weights.shape[:-1], weights.shape[-1] * cpw)


def slice_levels(weights: np.ndarray, hw: Hardware) -> np.ndarray:
    """Packed weights [..., W] -> what each weight slice adds to its bitline sum per driven row,
    int8 [..., W * slices]: the cell level (unsigned cells), or the positive less the negative
    cell of the pair (differential), slice t of |q - 128| with the sign of q - 128. Slice t has
    significance 2^(cell_bits t): sum_t level_t 2^(cell_bits t) is q, or q - 128."""
    bits, slices = hw.crossbar.cell_bits, hw.slices_per_weight
    if not hw.differential:
        return cell_levels(weights, hw).astype(np.int8)
    offset = weights.astype(np.int16) - OFFSET_CENTER
    magnitude = np.abs(offset)[..., None] >> (bits * np.arange(slices, dtype=np.int16))
    signed = (magnitude & ((1 << bits) - 1)) * np.sign(offset)[..., None]
    return signed.astype(np.int8).reshape(*weights.shape[:-1], weights.shape[-1] * slices)


# ---- SME's bit-sliced mapping (docs/tiling.md, "Bit-sliced mapping") ------------------------------
#
# Slice t of a weight is bits (t+1)*cell_bits-1 .. t*cell_bits of its code. A slice tile (i, j, t) is
# slice t of the weights of block (i, j): 128 rows x 128 columns, one cell per weight, which fills one
# crossbar of the default chip (in general 1 / slices_per_weight of an APU row's cells: a crossbar slot).
# An APU row holds `slices_per_weight` slice tiles of one layer's K-chunk i (its crossbars share the
# inputs, IV-C), so the dense map needs exactly as many APU rows as the packed one: the same cells,
# rearranged. Squeeze-out leaves out the tiles that are zero for every weight; the rest of K-chunk i
# are packed `slices_per_weight` to an APU row, in (column block, slice) order.

Slot = tuple[int, int]                      # (column block j, weight slice t) a crossbar slot holds
SlicedBlock = tuple[int, int, tuple[Slot, ...]]  # (group, K-chunk i, its slots in slot order)


def slice_tile_nonzero(matrix: np.ndarray, hw: Hardware) -> np.ndarray:
    """bool [kb, nb, slices]: which slice tiles of a K x N matrix of codes hold a non-zero level."""
    k, n = matrix.shape
    kb, nb = block_grid(k, n, hw)
    rows, cols = hw.block
    bits = hw.crossbar.cell_bits
    padded = np.zeros((kb * rows, nb * cols), matrix.dtype)
    padded[:k, :n] = matrix
    # per block, the OR of its codes: slice t is non-zero somewhere iff bits of slice t are set in it
    ors = np.bitwise_or.reduce(padded.reshape(kb, rows, nb, cols), axis=(1, 3))
    shifts = bits * np.arange(hw.slices_per_weight)
    return ((ors[:, :, None] >> shifts) & ((1 << bits) - 1)) != 0


def sliced_layout(weight: np.ndarray, attrs: Mapping, hw: Hardware, squeeze: bool) -> list[SlicedBlock]:
    """The blocks (APU rows) of a bit-sliced layer, in block order: for each group, chunk c of the
    slots of every K-chunk i, c outer and i inner, so that the dense layout numbers block (i, j) as
    the packed map does (j kb + i) and holds its slices (j, 0), (j, 1), ... in slot order. With
    `squeeze`, slice tiles that are zero for every weight are left out; a layer keeps at least one
    block (all-zero weights: one empty-valued slot), so that it still has an mvm to run."""
    per_row = hw.slices_per_weight
    layout: list[SlicedBlock] = []
    for g, matrix in enumerate(weight_matrix(weight, attrs)):
        kb, nb = block_grid(*matrix.shape, hw)
        present = slice_tile_nonzero(matrix, hw) if squeeze else np.ones((kb, nb, per_row), bool)
        slots = [[(j, t) for j in range(nb) for t in range(per_row) if present[i, j, t]] for i in range(kb)]
        chunks = max(-(-len(row_slots) // per_row) for row_slots in slots)
        for c in range(chunks):
            layout.extend((g, i, tuple(slots[i][c * per_row:(c + 1) * per_row]))
                          for i in range(kb) if len(slots[i]) > c * per_row)
    return layout or [(0, 0, ((0, 0),))]


def sliced_block_count(weight: np.ndarray, attrs: Mapping, hw: Hardware, squeeze: bool) -> int:
    """APU rows of a bit-sliced layer: `len(sliced_layout(...))`, counted without listing them."""
    if not squeeze:
        return sum(math.prod(block_grid(*m.shape, hw)) for m in weight_matrix(weight, attrs))
    per_row = hw.slices_per_weight
    count = sum(int((-(-slice_tile_nonzero(m, hw).sum((1, 2)) // per_row)).sum()) for m in weight_matrix(weight, attrs))
    return max(1, count)


def slot_shape(block: SlicedBlock, slot: Slot, k: int, n: int, hw: Hardware) -> tuple[int, int]:
    """(rows, columns) of the weights a slot's slice tile holds: edge tiles are partial."""
    rows, cols = hw.block
    return min(rows, k - block[1] * rows), min(cols, n - slot[0] * cols)


def slot_crossbars(block: SlicedBlock, k: int, n: int, hw: Hardware) -> int:
    """Crossbars of an APU row that a bit-sliced block writes and computes: slot s is cells
    s * block columns .. of the row's crossbars side by side, one cell per weight."""
    cols_cells, width = hw.crossbar.cols_cells, hw.block[1]
    used = set()
    for s, slot in enumerate(block[2]):
        first = s * width
        used.update(range(first // cols_cells, (first + slot_shape(block, slot, k, n, hw)[1] - 1) // cols_cells + 1))
    return len(used)


def sliced_blocks(weight: np.ndarray, attrs: Mapping, layout: list[SlicedBlock],
                  hw: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """What each APU row of a bit-sliced layer holds, as the machine stores it: uint8
    [blocks, rows, block columns] whose bits s*cell_bits.. at (r, c) are the level of slot s's cell
    (r, c), and a mask of the same shape with the bits of the cells that hold a weight set. Slot s
    holding slice t of column block j puts level (code >> t*cell_bits) & (2^cell_bits - 1) of
    weight (i*128 + r, j*128 + c) there. Dense, the byte is the packed map's code."""
    rows, cols = hw.block
    bits = hw.crossbar.cell_bits
    level_mask = (1 << bits) - 1
    matrices = weight_matrix(weight, attrs)
    contents = np.zeros((len(layout), rows, cols), np.uint8)
    masks = np.zeros((len(layout), rows, cols), np.uint8)
    grids = []
    for matrix in matrices:
        k, n = matrix.shape
        kb, nb = block_grid(k, n, hw)
        padded = np.zeros((kb * rows, nb * cols), np.uint8)
        padded[:k, :n] = matrix
        grids.append((padded.reshape(kb, rows, nb, cols), k, n))
    for b, block in enumerate(layout):
        g, i, slots = block
        grid, k, n = grids[g]
        for s, (j, t) in enumerate(slots):
            level = (grid[i, :, j, :] >> np.uint8(t * bits)) & np.uint8(level_mask)
            contents[b] |= level << np.uint8(s * bits)
            h, w = slot_shape(block, (j, t), k, n, hw)
            masks[b, :h, :w] |= np.uint8(level_mask << (s * bits))
    return contents, masks
