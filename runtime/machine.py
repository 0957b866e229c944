"""The ARAS machine state and one handler per opcode (the interpreter half of the simulator).

State: the Gbuffer values, the contents of every APU row's four crossbars, which layer block
each row holds, and per-layer partial-sum accumulators for layers computed in segments. The two
streams run as the program orders them (`run.py` interleaves them); every `wr` changes cells
and counts pulses against what the cells held, every `mvm` computes from the cells it finds.

A crossbar row's cells are stored packed, the 4 two-bit cells of a weight in one byte
(`isa.tiling.cell_levels` unpacks them): lossless, a quarter of the memory traffic, and pulse
counts come from a 256 x 256 table of per-cell level differences. On a bit-sliced chip (SME,
docs/tiling.md) byte (r, c) of an APU row packs cell (r, c) of each of its crossbar slots, each
slot holding one slice of one column block: the same cells, so the same pulse table.

A layer may slice its weights narrower than the chip's cells (`weight_slice_bits`, RAELLA's
adaptive weight slicing, docs/adc.md): it sees the chip through `layer_hardware`, with more cells
per weight and narrower blocks, whose weights fill the first columns of an APU row's bytes. Each
APU row remembers the slicing of what it holds (a fresh chip's cells, all at level 0, read the same
in any); a write at another slicing programs the whole row (the cells its block leaves empty are
reset to level 0), counting pulses cell by cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..isa.hardware import Hardware
from ..isa.program import Instr, LayerDef, Program
from ..isa.tiling import (
    OFFSET_CENTER,
    SlicedBlock,
    cell_levels,
    layer_hardware,
    matrix_shape,
    slice_levels,
    sliced_blocks,
    sliced_layout,
)
from ..isa.tiling import layer_blocks as tiled_blocks
from .adc import MvmAdc, dynamic_precision, input_slice_bits, window_steps
from .crossbar import BitSerial
from .int8 import int8_product, int8_products_exact, int8_products_wanted
from .kernels import column_sums, requantize, write_cells
from .sfu import I16_MAX, I16_MIN, SFU_OPS, DataError
from .verify import layer_grid
from .windows import conv_windows, less_offset

MAX_PARTIAL_CHAIN = 8  # partial writes in a row whose cell contents a row state still names (`_write_keys`)


class ExecutionError(RuntimeError):
    pass


def _write_table(hw: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """For a (new << 8 | old) weight pair: the write pulses (|new level - old level| summed over
    the weight's cells) and the number of cells whose level changes, two uint8 tables (at most
    16 cells of 6 pulses, with differential pairs of 1-bit slices)."""
    codes = np.arange(1 << hw.crossbar.weight_bits, dtype=np.uint8)
    levels = cell_levels(codes[:, None], hw).astype(np.int16)       # [256, cells]
    diff = np.abs(levels[:, None, :] - levels[None, :, :])           # [new, old, cells]
    pulses, changed = diff.sum(-1), (diff > 0).sum(-1)
    return pulses.astype(np.uint8).reshape(-1), changed.astype(np.uint8).reshape(-1)


@dataclass
class WriteStats:
    pulses: int = 0          # sum of |new level - old level| over written cells
    cells_written: int = 0   # cells whose level changed
    cells_skipped: int = 0   # cells already at the level to write
    blocks: int = 0
    row_writes: dict[int, int] = field(default_factory=dict)  # APU row -> blocks written into it


@dataclass
class _Accumulator:
    acc: np.ndarray | None               # [groups, N, windows]: sum(q_x q_w) so far, exact (see _accumulate)
    windows: list[np.ndarray]            # per group [windows, K] float32 inputs, less the machine's center
    out_hw: tuple[int, ...]
    lead: tuple[int, ...]
    done: set = field(default_factory=set)
    spliced: dict = field(default_factory=dict)  # bit-sliced, ideal ADC: (group, K-chunk, column block) -> codes so far


class Machine:
    def __init__(self, program: Program, weights: dict[str, np.ndarray], hw: Hardware, adc_bits: int | None = None,
                 adc_lsb: int = 1, bit_serial: bool = False, compute: bool = True, int8: bool | None = None):
        self.p, self.w, self.hw = program, weights, hw
        xbar = hw.crossbar
        rows, cols = hw.block
        # packed, one weight's cells per byte; a fresh chip's cells are at level 0: code 128 of a differential pair
        self.cells = np.full((hw.apu_rows, rows, cols), OFFSET_CENTER if hw.differential else 0, np.uint8)
        self.layer_hw = {layer.name: layer_hardware(hw, layer) for layer in program.layers}
        self.row_slice_bits = np.zeros(hw.apu_rows, np.int64)  # the slicing of what each APU row holds; 0: fresh
        self.write_tables = {bits: _write_table(hw.sliced(bits))
                             for bits in {xbar.cell_bits} | {h.crossbar.cell_bits for h in self.layer_hw.values()}}
        # write counts per (row state, layer, block): `_write_keys`
        self._row_state: list[int | None] = [0] * hw.apu_rows
        self._states: dict[tuple, int] = {}
        self._state_depth: dict[int, int] = {0: 0}
        self._write_counts: dict[tuple, tuple[int, int]] = {}
        self.timing_costs: dict = {}   # the timing model's per-program constants (timing.py), kept between runs
        self.owner: list[tuple[str, int] | None] = [None] * hw.apu_rows
        self.values: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}
        self.layers = {layer.name: layer for layer in program.layers}
        self.writes = WriteStats()
        self.bit_serial = BitSerial(xbar.weight_bits, xbar.cell_bits, hw.slices_per_weight, adc_bits, adc_lsb,
                                    signed=hw.differential)
        # How products are made. "exhaustive" emulates every bitline sample (`bit_serial`, the
        # reference); the shortcuts of crossbar.py give the same result: "exact" for an ideal ADC,
        # "clipping" for a finite ADC of unit step.
        if bit_serial or (adc_bits is not None and adc_lsb != 1):
            self.products = "exhaustive"
        else:
            self.products = "exact" if adc_bits is None else "clipping"
        # With an ideal ADC, inputs and weights are multiplied centred on 128 (x - 128, w - 128: what
        # they sum to differs from the cells' product by terms folded into the zero-point correction),
        # as int8 with int32 sums (torch._int_mm: oneDNN's int8 GEMM, exact; about 4x float32 BLAS on
        # this project's CPUs), so one product spans up to 1,024 K-chunks; where that kernel is not
        # exact (or with int8=False; by default where torch is not imported yet), as float32, whose
        # sums stay exact within 2^24: 8 K-chunks.
        # Differential pairs hold w - 128 (docs/adc.md): their bitlines sum x (w - 128) whatever the ADC.
        self.center = 1 << 7 if self.products == "exact" else 0                    # of the inputs
        self.w_center = OFFSET_CENTER if self.products == "exact" or hw.differential else 0
        int8 = int8_products_wanted() if int8 is None else int8
        self.int8 = int8 and self.products == "exact" and xbar.weight_bits == 8 and int8_products_exact()
        # the finite-ADC shortcuts' bitline sums (small levels, wordline values below 2^7) likewise
        self.bit_serial.int8 = int8 and self.products == "clipping" and int8_products_exact()
        largest = (1 << 7) * (1 << (xbar.weight_bits - 1)) * rows
        # the inputs as the products take them (x - 128 of uint8 codes is exact in int8)
        self._input_type = np.int8 if self.int8 else np.float32
        self.exact_chunks = max(1, ((1 << 31) - 1 if self.int8 else 1 << 24) // largest) if self.center else 1
        self._blocks_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._layouts: dict[str, list[SlicedBlock]] = {}    # bit-sliced layers: what each block's slots hold
        self._slot_masks: dict[str, np.ndarray] = {}        # bit-sliced layers: the bits of cells holding a weight
        self._column_cache: dict[str, np.ndarray] = {}
        self._exact_reads: dict[tuple, np.ndarray] = {}  # ideal ADC: `_exact_weights`
        self._reads: dict[tuple, tuple[np.ndarray, np.ndarray, dict]] = {}  # ADC shortcuts: `_shortcut_operands`
        self._acc: dict[str, _Accumulator] = {}
        self.adc_layers: dict[str, list[int]] = {}  # layer -> [ADC samples, clipped samples], finite-ADC paths
        self.last_mvm_adc = MvmAdc(0)               # recoveries of the last mvm (runtime/adc.py), for the timing
        self._recovered: np.ndarray | None = None
        self.handlers = {"wr": self.wr, "signal": self.nop, "wait": self.nop, "load": self.load, "store": self.store,
                         "bank": self.nop, "mvm": self.mvm, "sfu": self.sfu, "release": self.release}
        if not compute:  # timing and write activity only: activations change neither
            self.handlers.update(load=self.nop, store=self.nop, mvm=self.nop, sfu=self.nop)

    def execute(self, instr: Instr) -> None:
        self.handlers[instr.opcode](instr)

    def nop(self, instr: Instr) -> None:
        """signal / wait order the streams (run.py); bank powers banks (timing, energy)."""

    # ---- main memory <-> Gbuffer --------------------------------------------------------------
    def load(self, instr: Instr) -> None:
        port = next(p for p in self.p.inputs if p.name == instr["port"])
        x = self.inputs[port.name]
        if port.attr("scale") is not None:
            x = SFU_OPS["quantize"]([x], {"scale": port.attr("scale"), "zp": port.attr("zp")}, {})
        self.values[instr["out"]] = x

    def store(self, instr: Instr) -> None:
        port = next(p for p in self.p.outputs if p.name == instr["port"])
        self.outputs[port.name] = SFU_OPS["dequantize"]([self.values[instr["value"]]], dict(port.attrs), {})

    # ---- crossbars ----------------------------------------------------------------------------
    def block_contents(self, layer: LayerDef) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(packed blocks [B, rows, cols], mask of the cells that hold a weight, which blocks are
        partial, cells per block), computed once per layer."""
        hw = self.layer_hw[layer.name]
        if layer.name not in self._blocks_cache:
            name, _ = layer.weight("weight")
            if self.hw.bit_sliced:
                blocks, bits = sliced_blocks(self.w[name], dict(layer.attrs), self.block_layout(layer), self.hw)
                self._slot_masks[layer.name] = bits
                used = bits != 0
                cells = np.unpackbits(bits[..., None], -1).reshape(len(bits), -1).sum(1) // self.hw.crossbar.cell_bits
                self._blocks_cache[layer.name] = (blocks, used, np.zeros(len(bits), bool), cells)
            else:
                blocks, used = tiled_blocks(self.w[name], dict(layer.attrs), hw)
                partial = ~used.all((1, 2))
                self._blocks_cache[layer.name] = (blocks, used, partial, used.sum((1, 2)) * hw.cells_per_weight)
        return self._blocks_cache[layer.name]

    def block_layout(self, layer: LayerDef) -> list[SlicedBlock]:
        """A bit-sliced layer's blocks: (group, K-chunk, the (column block, slice) of each crossbar slot)."""
        if layer.name not in self._layouts:
            squeeze = bool(layer.attr("squeeze_out", False))
            self._layouts[layer.name] = sliced_layout(self.w[layer.weight("weight")[0]], dict(layer.attrs), self.hw,
                                                      squeeze)
        return self._layouts[layer.name]

    def wr(self, instr: Instr) -> None:
        self.write_blocks([instr])

    def write_blocks(self, instrs: list[Instr]) -> None:
        """Execute `wr` instructions together (one compiled pass per layer when no row repeats): each
        cell of a block moves to its new level at |new - old| pulses; cells outside a partial
        block keep their level and cost nothing."""
        targets = [(instr, row) for instr in instrs for row in instr["rows"]]
        rows = [row for _, row in targets]
        if len(set(rows)) < len(rows):  # a later write overwrites an earlier one: keep their order
            for instr in instrs:
                self.write_blocks([instr])
            return
        by_layer: dict[str, tuple[list[int], list[int]]] = {}
        for instr, row in targets:
            blocks, rows_of = by_layer.setdefault(instr["layer"], ([], []))
            blocks.append(instr["block"])
            rows_of.append(row)
        for name, (blocks, rows_of) in by_layer.items():
            contents, masks, _, _ = self.block_contents(self.layers[name])
            slice_bits = self.layer_hw[name].crossbar.cell_bits
            resliced = [self.row_slice_bits[row] not in (0, slice_bits) for row in rows_of]
            for block, row, reslice in zip(blocks, rows_of, resliced, strict=True):
                if reslice:
                    self._reprogram(row, contents[block], masks[block], self.layer_hw[name])
                    # what the row's cells of this slicing hold now is the block's alone (`_write_keys`)
                    self._row_state[row] = self._state_id(("reprogrammed", name, block), 0)
            same = [(block, row) for block, row, reslice in zip(blocks, rows_of, resliced, strict=True) if not reslice]
            if same:
                self._write_at_row_slicing(name, [block for block, _ in same], [row for _, row in same])
            self.writes.blocks += len(blocks)
            for block, row in zip(blocks, rows_of, strict=True):
                self.owner[row] = (name, block)
                self.writes.row_writes[row] = self.writes.row_writes.get(row, 0) + 1

    def _write_at_row_slicing(self, name: str, blocks: list[int], rows_of: list[int]) -> None:
        """Write blocks of layer `name` into rows (all different) that hold its slicing or are
        fresh: one compiled pass, pulses counted per cell or found in `_write_counts`."""
        contents, masks, partial, used_cells = self.block_contents(self.layers[name])
        slice_bits, cols = self.layer_hw[name].crossbar.cell_bits, self.layer_hw[name].block[1]
        where = (self.cells[:, :, :cols], np.array(rows_of, np.int64), contents, np.array(blocks, np.int64), masks,
                 partial)
        if name in self._slot_masks:
            # a slot cell that holds no weight (a squeezed-out or edge slice tile) keeps its level
            bits = self._slot_masks[name][blocks]
            merged = (contents[blocks] & bits) | (self.cells[rows_of] & ~bits)
            where = (self.cells, where[1], merged, np.arange(len(blocks)), masks[:1], np.zeros(len(blocks), bool))
        keys = self._write_keys(name, blocks, rows_of, partial)
        known = [self._write_counts.get(key) for key in keys]
        count = np.array([counts is None for counts in known])
        pulses = np.array([0 if counts is None else counts[0] for counts in known], np.int64)
        changed = np.array([0 if counts is None else counts[1] for counts in known], np.int64)
        write_cells(*where, *self.write_tables[slice_bits], count, pulses, changed)
        self.row_slice_bits[rows_of] = slice_bits
        for key, counted, p, c in zip(keys, count, pulses, changed, strict=True):
            if counted and key is not None:
                self._write_counts[key] = (int(p), int(c))
        total_pulses, total_changed = int(pulses.sum()), int(changed.sum())
        self.writes.pulses += total_pulses
        self.writes.cells_written += total_changed
        self.writes.cells_skipped += int(used_cells[blocks].sum()) - total_changed

    def _reprogram(self, row: int, codes: np.ndarray, mask: np.ndarray, hw: Hardware) -> None:
        """Write a block sliced as `hw` into an APU row that holds another slicing: every cell of the
        row moves from its level to the block's, or to 0 where the block holds no weight (code 128
        of a differential pair, code 0 of an unsigned cell), |new - old| pulses each."""
        old_hw = self.hw.sliced(int(self.row_slice_bits[row]))
        old = cell_levels(self.cells[row, :, :old_hw.block[1]], old_hw).astype(np.int16)
        new_codes = np.where(mask, codes, np.uint8(OFFSET_CENTER if hw.differential else 0))
        new = cell_levels(new_codes, hw).astype(np.int16)
        moved = np.abs(new - old)
        changed = int(np.count_nonzero(moved))
        self.writes.pulses += int(moved.sum())
        self.writes.cells_written += changed
        self.writes.cells_skipped += moved.size - changed
        self.cells[row, :, :hw.block[1]] = new_codes
        self.row_slice_bits[row] = hw.crossbar.cell_bits

    def _write_keys(self, layer: str, blocks: list[int], rows: list[int], partial: np.ndarray) -> list[tuple | None]:
        """What the pulses and changed cells of each write depend on, (what its row's cells hold,
        layer, block), for `_write_counts`, or None where the cells are not known; each row's
        state moves on to the one its write leaves. A row's state names its cells' contents at
        the slicing they hold: 0 for a fresh chip; after a whole block, or a block that
        reprogrammed the row (`_reprogram`), that block; after a partial block (cells outside it
        keep their levels), the state before it and the block, up to MAX_PARTIAL_CHAIN partial
        writes in a row (then, and after a bit-sliced write, whose cells merge slots, unknown).
        A steady-state inference writes the same blocks over the same contents as the one
        before, so it finds every count; a key that is found was counted on the same cells."""
        keys: list[tuple | None] = []
        sliced = layer in self._slot_masks
        for block, row in zip(blocks, rows):
            old = self._row_state[row]
            keys.append(None if old is None or sliced else (old, layer, block))
            if sliced:
                new = None
            elif not partial[block]:
                new = self._state_id((layer, block), 0)
            elif old is not None and self._state_depth[old] < MAX_PARTIAL_CHAIN:
                new = self._state_id((old, layer, block), self._state_depth[old] + 1)
            else:
                new = None
            self._row_state[row] = new
        return keys

    def _state_id(self, contents: tuple, depth: int) -> int:
        """The interned id of a row state (`_write_keys`), with its chain of partial writes."""
        if contents not in self._states:
            self._states[contents] = len(self._states) + 1   # 0 is the empty crossbar
            self._state_depth[self._states[contents]] = depth
        return self._states[contents]

    def release(self, instr: Instr) -> None:
        for row in instr["rows"]:
            self.owner[row] = None

    def mvm(self, instr: Instr) -> None:
        layer = self.layers[instr["layer"]]
        attrs = dict(layer.attrs)
        self.last_mvm_adc = MvmAdc(instr.line)
        self._recovered = None
        state = self._acc.get(layer.name) or self._start(layer, attrs, self.values[instr["input"]])
        hw = self.layer_hw[layer.name]
        groups, kb, nb, total = layer_grid(layer, self.hw)
        first, last = instr["blocks"]
        rows = instr["rows"][: last - first + 1]  # replicas hold the same blocks: read the first copy
        k, n = matrix_shape(self.w[layer.weight("weight")[0]].shape, groups)
        held: dict[tuple[int, int], dict[int, int]] = {}  # (group, K-chunk) -> {column block: APU row}
        for block, row in zip(range(first, last + 1), rows):
            if self.owner[row] != (layer.name, block):
                raise ExecutionError(f"line {instr.line}: APU row {row} holds {self.owner[row]}, not "
                                     f"{layer.name}[{block}]")
            state.done.add(block)
            if self.hw.bit_sliced:
                continue
            g, local = divmod(block, kb * nb)
            j, i = divmod(local, kb)
            held.setdefault((g, i), {})[j] = row
        if self.hw.bit_sliced:
            held = self._splice(layer, range(first, last + 1), rows)
            if self.products == "exact":
                # Centred products take w - 128 once per weight: the slices a layer's segments hold
                # are gathered first, and the product made once all are (the sum is the same).
                for (g, i), columns in held.items():
                    for j, codes in columns.items():
                        state.spliced.setdefault((g, i, j), np.zeros(self.hw.block, np.uint8))[...] |= codes
                if len(state.done) < total:
                    return
                held = self._every_block(state.spliced, groups, kb, nb)
        # the periphery's shift-and-add follows the layer's slices
        self.bit_serial.cell_bits, self.bit_serial.cells_per_weight = hw.crossbar.cell_bits, hw.slices_per_weight
        for g, chunks, columns in self._products(held):
            r0 = chunks[0] * hw.block[0]
            r1 = min(r0 + len(chunks) * hw.block[0], k)
            x = state.windows[g][:, r0:r1]
            rows_read = [held[g, chunks[0]][j] for j in columns]
            if dynamic_precision(layer):
                self._count_dynamic_steps(layer, x, chunks, columns, n)
            # products are made transposed, [columns, windows]: output channels stay rows to the end
            if self.products == "exact":  # the product with the weights the cells encode
                weights = self._exact_weights(layer.name, hw, held, (g, chunks, columns), r1 - r0, n)
                product = int8_product(weights, x.T) if self.int8 else weights @ x.T
            else:
                product = self._adc_product(layer.name, x, held, (g, chunks, columns), rows_read, n)
            self._accumulate(hw, state, g, product, columns, n)
        if self._recovered is not None:
            self.last_mvm_adc.recovered_windows = int(np.count_nonzero(self._recovered))
        if len(state.done) == total:
            self.values[instr["out"]] = self._finish(layer, attrs, state, k, n)
            del self._acc[layer.name]

    def _splice(self, layer: LayerDef, blocks: range, rows: list[int]) -> dict:
        """The SFU's splice of a bit-sliced segment (SME): each slot's partial sums, shifted by its
        slice's significance, added into its column block. The sum is linear in the cells, so the
        same result is the product with the codes the slots spell, slot levels shifted into place:
        these codes stand in for the APU rows of the packed map ((group, K-chunk) -> {column block:
        codes}, which `_codes` reads). A squeezed-out slice adds nothing."""
        bits = self.hw.crossbar.cell_bits
        level_mask = np.uint8((1 << bits) - 1)
        layout = self.block_layout(layer)
        held: dict[tuple[int, int], dict[int, np.ndarray]] = {}
        for block, row in zip(blocks, rows):
            g, i, slots = layout[block]
            columns = held.setdefault((g, i), {})
            for s, (j, t) in enumerate(slots):
                codes = columns.setdefault(j, np.zeros(self.hw.block, np.uint8))
                codes |= ((self.cells[row] >> np.uint8(s * bits)) & level_mask) << np.uint8(t * bits)
        return held

    def _every_block(self, spliced: dict, groups: int, kb: int, nb: int) -> dict:
        """Every (group, K-chunk) -> {column block: codes} of a bit-sliced layer, the codes its
        slots spelled, and 0 for a block whose slices were all squeezed out."""
        empty = np.zeros(self.hw.block, np.uint8)
        return {(g, i): {j: spliced.get((g, i, j), empty) for j in range(nb)} for g in range(groups) for i in range(kb)}

    def _codes(self, where, hw: Hardware) -> np.ndarray:
        """The packed codes of an APU row (its index) holding blocks sliced as `hw`, or the spliced
        codes of a bit-sliced one."""
        return self.cells[where, :, :hw.block[1]] if isinstance(where, (int, np.integer)) else where

    def _products(self, held: dict[tuple[int, int], dict[int, int]]) -> list[tuple[int, list[int], list[int]]]:
        """The products one mvm makes: (group, consecutive K-chunks, column blocks). Blocks sharing
        a K-chunk read the same inputs, so one product spans all their columns; with an ideal ADC
        consecutive K-chunks over the same columns also share one product, as many as float32
        sums stay exact for (the bit-serial emulation keeps one crossbar's 128 rows per sample)."""
        span = self.exact_chunks
        products: list[tuple[int, list[int], list[int]]] = []
        for g, i in sorted(held):
            columns = sorted(held[g, i])
            if products:
                last_g, chunks, last_columns = products[-1]
                if (last_g, chunks[-1] + 1, last_columns) == (g, i, columns) and len(chunks) < span:
                    chunks.append(i)
                    continue
            products.append((g, [i], columns))
        return products

    def _exact_weights(self, layer: str, hw: Hardware, held: dict, where: tuple, height: int, n: int) -> np.ndarray:
        """The weights of one exact product, transposed and contiguous ([columns, rows], as the
        GEMM reads them fastest), read from the cells. Cells a block's write put there (below its
        height, in its used columns) hold exactly its contents until the row is written again
        (`write_blocks`), and `mvm` has checked that each row still holds the block it reads: so
        the matrix depends only on the blocks, (layer, group, K-chunks, column blocks), and is
        kept per those, for every later read of the same blocks (each inference reads them
        again; a chip too small for the model writes them again too). Spliced codes of
        bit-sliced layers are not kept."""
        g, chunks, columns = where
        key = (layer, g, tuple(chunks), tuple(columns))
        weights = self._exact_reads.get(key)
        if weights is None:
            weights = np.ascontiguousarray(self._weight_matrix(hw, held, g, chunks, columns, height)[:, :self._width(hw, columns, n)].T)
            if all(isinstance(held[g, i][j], (int, np.integer)) for i in chunks for j in columns):
                self._exact_reads[key] = weights
        return weights

    def _weight_matrix(self, hw: Hardware, held: dict, g: int, chunks: list[int], columns: list[int],
                       height: int) -> np.ndarray:
        """The weights (less `w_center`) of K-chunks x column blocks, read from the cells, as the
        products take them (int8 or float32); rows past the layer's K (stale cells no wordline
        drives) are left out."""
        block_rows, block_cols = hw.block
        codes = np.empty((height, len(columns) * block_cols), np.uint8)
        for a, i in enumerate(chunks):
            r0 = a * block_rows
            h = min(block_rows, height - r0)
            for s, j in enumerate(columns):
                codes[r0:r0 + h, s * block_cols:(s + 1) * block_cols] = self._codes(held[g, i][j], hw)[:h]
        if self.int8:  # w_center is 128: flipping the top bit of a uint8 code gives code - 128 in two's complement
            return (codes ^ np.uint8(self.w_center)).view(np.int8)
        weights = codes.astype(np.float32)
        weights -= self.w_center
        return weights

    def _adc_product(self, layer: str, x: np.ndarray, held: dict, where: tuple, rows: list[int], n: int) -> np.ndarray:
        """The product through the ADC, [columns, windows], sample by sample ("exhaustive") or by
        the clipping shortcut, over the columns that hold the layer's weights: the others of a
        partial block (empty or stale cells) are neither converted nor counted, and stay 0.
        Samples and clipped samples are also counted per layer (`adc_layers`)."""
        g, chunks, columns = where
        hw = self.layer_hw[layer]
        used = self._used_columns(hw, columns, n)
        counts = (self.bit_serial.samples, self.bit_serial.clipped)
        slice_bits = input_slice_bits(self.layers[layer])
        if self.products == "exhaustive" and slice_bits == 1:
            codes = np.zeros((x.shape[0], hw.block[0]), np.uint8)  # rows past K get no input
            codes[:, :x.shape[1]] = x
            part = self.bit_serial.product(codes, self._used_levels(hw, rows, used))
        else:
            weights, levels, saturable = self._shortcut_operands(layer, held, where, rows, used, x.shape[1])
            if slice_bits > 1:
                part, recovered = self.bit_serial.speculative_product(x, weights, levels, slice_bits, saturable)
                self._count_recoveries(hw, recovered, columns, n, slice_bits)
            else:
                part = self.bit_serial.clipping_product(x, weights, levels, saturable)
        layer_counts = self.adc_layers.setdefault(layer, [0, 0])
        layer_counts[0] += self.bit_serial.samples - counts[0]
        layer_counts[1] += self.bit_serial.clipped - counts[1]
        product = np.zeros((len(columns) * hw.block[1], x.shape[0]), part.dtype)
        product[used] = part.T
        return product

    def _shortcut_operands(self, layer: str, held: dict, where: tuple, rows: list, used: np.ndarray,
                           height: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """What the ADC shortcuts take from the cells of one read: the weights [height, used
        columns], the levels of the used slices, and a cache for their saturable columns. A block's
        cells below its height and in its used columns hold exactly what its write put there
        (`write_blocks`; other cells are neither driven nor converted), so these depend only on
        the blocks the rows hold: they are kept per (layer, blocks held), and a block written
        again, as a chip too small for the model does every inference, finds them. (The spliced
        codes of bit-sliced layers are not kept.)"""
        g, chunks, columns = where
        hw = self.layer_hw[layer]
        packed = all(isinstance(row, (int, np.integer)) for row in rows)
        key = (layer, tuple(self.owner[row] for row in rows)) if packed else None
        if key not in self._reads:
            weights = self._weight_matrix(hw, held, g, chunks, columns, height)[:, used]
            operands: tuple[np.ndarray, np.ndarray, dict] = (weights, self._used_levels(hw, rows, used), {})
            if key is None:
                return operands
            self._reads[key] = operands
        return self._reads[key]

    def _used_levels(self, hw: Hardware, rows: list, used: np.ndarray) -> np.ndarray:
        """`_levels` of the weight slices in the `used` product columns."""
        levels = self._levels(hw, rows)
        return levels.reshape(len(levels), -1, hw.slices_per_weight)[:, used].reshape(len(levels), -1)

    def _count_dynamic_steps(self, layer: LayerDef, x: np.ndarray, chunks: list[int], columns: list[int],
                             n: int) -> None:
        """Dynamic precision: the input steps each K-chunk's APU rows run over the product's windows
        (runtime/adc.py), for the busiest row (the instruction's time) and summed over crossbars."""
        record = self.last_mvm_adc
        hw = self.layer_hw[layer.name]
        block_rows, block_cols = hw.block
        crossbars = sum(-(-min(block_cols, n - j * block_cols) // hw.weights_per_row) for j in columns)
        for a in range(len(chunks)):
            codes = x[:, a * block_rows:(a + 1) * block_rows].astype(np.int16) + self.center  # codes, int8 or float x
            steps = int(window_steps(codes.astype(np.uint8), input_slice_bits(layer)).sum())
            record.busiest_row_steps = max(record.busiest_row_steps or 0, steps)
            record.crossbar_steps = (record.crossbar_steps or 0) + steps * crossbars

    def _count_recoveries(self, hw: Hardware, recovered: np.ndarray, columns: list[int], n: int,
                          slice_bits: int) -> None:
        """Recovered (window, input slice) pairs of one product: their union over the instruction's
        products (for its time), and the single-bit steps they rerun on the product's crossbars
        (for its conversions and energy)."""
        self._recovered = recovered if self._recovered is None else self._recovered | recovered
        block_cols = hw.block[1]
        crossbars = sum(-(-min(block_cols, n - j * block_cols) // hw.weights_per_row) for j in columns)
        self.last_mvm_adc.recovered_crossbar_steps += int(np.count_nonzero(recovered)) * slice_bits * crossbars

    def _used_columns(self, hw: Hardware, columns: list[int], n: int) -> np.ndarray:
        """Indices of the product columns (column blocks side by side) that hold one of the n weights."""
        block_cols = hw.block[1]
        return np.concatenate([slot * block_cols + np.arange(min(block_cols, n - j * block_cols))
                               for slot, j in enumerate(columns)])

    def _levels(self, hw: Hardware, rows: list[int]) -> np.ndarray:
        """[block rows, weight slices of the rows side by side]: what each slice of APU rows that share
        inputs adds to its bitline sum per driven row (a cell level, or a differential pair's difference)."""
        return np.hstack([slice_levels(self._codes(row, hw), hw) for row in rows])

    def _width(self, hw: Hardware, columns: list[int], n: int) -> int:
        """Product columns that hold weights: the last column block of a layer may be partial."""
        block_cols = hw.block[1]
        if columns == list(range(columns[0], columns[0] + len(columns))):
            return min(len(columns) * block_cols, n - columns[0] * block_cols)
        return len(columns) * block_cols

    def _accumulate(self, hw: Hardware, state: _Accumulator, g: int, product: np.ndarray, columns: list[int],
                    n: int) -> None:
        """Add a product [columns, windows] into the layer's partial sums. A layer whose first
        product is all of it keeps that product as its sums (exact integers in float32); any
        further product makes them float64, exact below 2^53."""
        block_cols = hw.block[1]
        groups = len(state.windows)
        consecutive = columns == list(range(columns[0], columns[0] + len(columns)))
        if state.acc is None and groups == 1 and consecutive and columns[0] == 0 and self._width(hw, columns, n) == n:
            state.acc = product[None, :n]
            return
        wide = np.int64 if product.dtype.kind == "i" else np.float64
        if state.acc is None:
            state.acc = np.zeros((groups, n, product.shape[1]), wide)
        elif state.acc.dtype != wide:
            state.acc = state.acc.astype(wide)
        acc = state.acc[g]
        if consecutive:  # one add
            c0 = columns[0] * block_cols
            width = self._width(hw, columns, n)
            acc[c0:c0 + width] += product[:width]
            return
        for slot, j in enumerate(columns):
            c0 = j * block_cols
            width = min(block_cols, n - c0)
            acc[c0:c0 + width] += product[slot * block_cols:slot * block_cols + width]

    def _start(self, layer: LayerDef, attrs: dict, x: np.ndarray) -> _Accumulator:
        weight = self.w[layer.weight("weight")[0]]
        if layer.op == "qconv2d":
            windows, out_hw = conv_windows(x, attrs, weight.shape[2:], self.center, self._input_type)
            lead = (x.shape[0],)
        else:
            windows = [less_offset(x.reshape(-1, x.shape[-1]), self.center, self._input_type)]
            out_hw, lead = (), x.shape[:-1]
        state = _Accumulator(None, windows, out_hw, lead)  # the partial sums come with the first product
        self._acc[layer.name] = state
        return state

    def _finish(self, layer: LayerDef, attrs: dict, state: _Accumulator, k: int, n: int) -> np.ndarray:
        """Digital zero-point correction, bias, requantization (DESIGN.md section 3):
        out_zp + round_half_up((acc - w_zp sum(x) - x_zp sum(w) + k x_zp w_zp + bias) m / 2^shift),
        with the terms known offline folded into one constant per output column. With inputs and
        weights centred on c, the same formula holds with x - c, w - c, x_zp - c and w_zp - c.
        w_zp, m, shift and out_zp are the layer's or, given as weights, each output channel's."""
        groups, windows = len(state.windows), state.windows[0].shape[0]
        x_sums = np.empty((groups, windows), np.int64)
        for g, win in enumerate(state.windows):
            column_sums(win.T, x_sums[g])
        w_zp, multiplier, shift, out_zp = (self._channel_param(layer, attrs, name, groups, n)
                                           for name in ("w_zp", "multiplier", "shift", "out_zp"))
        positions = math.prod(state.out_hw) if layer.op == "qconv2d" else 1
        wide = bool(attrs.get("wide"))
        out = np.empty((windows // positions, groups * n, positions), np.int16 if wide else np.uint8)
        low = I16_MIN if wide else 0
        floor = np.maximum(out_zp, low) if attrs.get("relu") else np.full_like(out_zp, low)
        requantize(state.acc, x_sums.astype(np.float64), (w_zp - self.w_center).astype(np.float64), multiplier,
                   self._column_terms(layer, attrs, k, n), shift, floor, I16_MAX if wide else 255, out)
        if layer.op == "qconv2d":
            return out.reshape(out.shape[0], groups * n, *state.out_hw)
        return out.reshape(*state.lead, groups * n)

    def _channel_param(self, layer: LayerDef, attrs: dict, name: str, groups: int, n: int) -> np.ndarray:
        """int64 [groups, n]: a requantization parameter, the layer's attribute or its per-channel weight."""
        ref = layer.weight(name)
        value = self.w[ref[0]] if ref is not None else attrs[name]
        return np.broadcast_to(np.asarray(value, np.int64).reshape(-1), (groups * n,)).reshape(groups, n)

    def _column_terms(self, layer: LayerDef, attrs: dict, k: int, n: int) -> np.ndarray:
        """int64 [groups, n]: (k x_zp w_zp - x_zp sum(w) + bias) m + 2^(shift-1) + (out_zp << shift),
        (x_zp, w_zp and w less the centre) digital constants of the layer, known offline. Adding
        out_zp << shift before the flooring shift equals adding out_zp after it."""
        if layer.name not in self._column_cache:
            groups = attrs.get("groups", 1)
            weight = self.w[layer.weight("weight")[0]].reshape(groups, n, k).astype(np.int64) - self.w_center
            w_zp, multiplier, shift, out_zp = (self._channel_param(layer, attrs, name, groups, n)
                                               for name in ("w_zp", "multiplier", "shift", "out_zp"))
            x_zp, w_zp = attrs["x_zp"] - self.center, w_zp - self.w_center
            terms = k * x_zp * w_zp - x_zp * weight.sum(2)
            bias = layer.weight("bias")
            if bias is not None:
                terms = terms + self.w[bias[0]].astype(np.int64).reshape(groups, n)
            self._column_cache[layer.name] = terms * multiplier + (1 << (shift - 1)) + (out_zp << shift)
        return self._column_cache[layer.name]

    # ---- special function unit ----------------------------------------------------------------
    def sfu(self, instr: Instr) -> None:
        inputs = [self.values[name] for name in instr["inputs"]]
        weights = {role: self.w[name] for role, name, _ in instr["weights"]}
        try:
            self.values[instr["out"]] = SFU_OPS[instr["op"]](inputs, dict(instr["attrs"]), weights)
        except DataError as err:
            err.line = instr.line
            raise
