"""The ARAS machine state and one handler per opcode (the interpreter half of the simulator).

State: the Gbuffer values, the contents of every APU row's four crossbars, which layer block
each row holds, and per-layer partial-sum accumulators for layers computed in segments. The two
streams run as the program orders them (`run.py` interleaves them); every `wr` changes cells
and counts pulses against what the cells held, every `mvm` computes from the cells it finds.

A crossbar row's cells are stored packed, the 4 two-bit cells of a weight in one byte
(`isa.tiling.cell_levels` unpacks them): lossless, a quarter of the memory traffic, and pulse
counts come from a 256 x 256 table of per-cell level differences.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..isa.hardware import Hardware
from ..isa.program import Instr, LayerDef, Program
from ..isa.tiling import cell_levels, layer_blocks as tiled_blocks, matrix_shape
from .crossbar import BitSerial
from .sfu import SFU_OPS
from .verify import layer_grid
from .windows import conv_windows


class ExecutionError(RuntimeError):
    pass


def _write_table(hw: Hardware) -> np.ndarray:
    """For a packed (new << 8 | old) weight pair: 16 x the write pulses (|new level - old level|
    summed over the weight's cells, at most 4 x 3) + the number of cells whose level changes."""
    codes = np.arange(1 << hw.crossbar.weight_bits, dtype=np.uint8)
    levels = cell_levels(codes[:, None], hw).astype(np.int16)       # [256, cells]
    diff = np.abs(levels[:, None, :] - levels[None, :, :])           # [new, old, cells]
    pulses, changed = diff.sum(-1), (diff > 0).sum(-1)
    if pulses.max() > 15 or changed.max() > 15:
        raise ValueError("packed write costs need at most 15 pulses and 15 cells per weight")
    return (pulses * 16 + changed).astype(np.uint8).reshape(-1)


@dataclass
class WriteStats:
    pulses: int = 0          # sum of |new level - old level| over written cells
    cells_written: int = 0   # cells whose level changed
    cells_skipped: int = 0   # cells already at the level to write
    blocks: int = 0


@dataclass
class _Accumulator:
    acc: np.ndarray                      # float64 [groups, windows, N]: sum(q_x q_w) so far, exact
    windows: list[np.ndarray]            # per group [windows, K] uint8 inputs
    out_hw: tuple[int, ...]
    lead: tuple[int, ...]
    done: set = field(default_factory=set)


class Machine:
    def __init__(self, program: Program, weights: dict[str, np.ndarray], hw: Hardware, adc_bits: int | None = None,
                 adc_lsb: int = 1, bit_serial: bool | None = None, compute: bool = True):
        self.p, self.w, self.hw = program, weights, hw
        xbar = hw.crossbar
        rows, cols = hw.block
        self.cells = np.zeros((hw.apu_rows, rows, cols), np.uint8)  # packed: one weight's cells per byte
        self.write_table = _write_table(hw)
        self.owner: list[tuple[str, int] | None] = [None] * hw.apu_rows
        self.values: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}
        self.layers = {layer.name: layer for layer in program.layers}
        self.writes = WriteStats()
        self.bit_serial = BitSerial(xbar.weight_bits, xbar.cell_bits, hw.cells_per_weight, adc_bits, adc_lsb)
        self.use_bit_serial = adc_bits is not None if bit_serial is None else bit_serial
        self._blocks_cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._weight_sums: dict[str, np.ndarray] = {}
        self._acc: dict[str, _Accumulator] = {}
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
    def block_contents(self, layer: LayerDef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(packed blocks [B, rows, cols], mask of the cells that hold a weight, cells per block),
        computed once per layer."""
        if layer.name not in self._blocks_cache:
            name, _ = layer.weight("weight")
            blocks, used = tiled_blocks(self.w[name], dict(layer.attrs), self.hw)
            self._blocks_cache[layer.name] = (blocks, used, used.sum((1, 2)) * self.hw.cells_per_weight)
        return self._blocks_cache[layer.name]

    def wr(self, instr: Instr) -> None:
        self.write_blocks([instr])

    def write_blocks(self, instrs: list[Instr]) -> None:
        """Execute `wr` instructions together (one vectorised pass when no row repeats): each
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
            contents, masks, used_cells = self.block_contents(self.layers[name])
            new, used, old = contents[blocks], masks[blocks], self.cells[rows_of]
            merged = np.where(used, new, old)  # cells outside a partial block pair with themselves: 0 pulses
            cost = self.write_table[merged.astype(np.uint16) << 8 | old]
            self.writes.pulses += int((cost >> 4).sum(dtype=np.int64))
            changed = int((cost & 15).sum(dtype=np.int64))
            self.writes.cells_written += changed
            self.writes.cells_skipped += int(used_cells[blocks].sum()) - changed
            self.writes.blocks += len(blocks)
            self.cells[rows_of] = merged
            for block, row in zip(blocks, rows_of):
                self.owner[row] = (name, block)

    def release(self, instr: Instr) -> None:
        for row in instr["rows"]:
            self.owner[row] = None

    def mvm(self, instr: Instr) -> None:
        layer = self.layers[instr["layer"]]
        attrs = dict(layer.attrs)
        state = self._acc.get(layer.name) or self._start(layer, attrs, self.values[instr["input"]])
        groups, kb, nb, total = layer_grid(layer, self.hw)
        first, last = instr["blocks"]
        rows = instr["rows"][: last - first + 1]  # replicas hold the same blocks: read the first copy
        k, n = matrix_shape(self.w[layer.weight("weight")[0]].shape, groups)
        block_rows, block_cols = self.hw.block
        # Blocks sharing a K-chunk read the same inputs: one product over all their columns.
        chunks: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for block, row in zip(range(first, last + 1), rows):
            if self.owner[row] != (layer.name, block):
                raise ExecutionError(f"line {instr.line}: APU row {row} holds {self.owner[row]}, not "
                                     f"{layer.name}[{block}]")
            g, local = divmod(block, kb * nb)
            j, i = divmod(local, kb)
            chunks.setdefault((g, i), []).append((j, row))
            state.done.add(block)
        for (g, i), columns in chunks.items():
            r0 = i * block_rows
            x = state.windows[g][:, r0:r0 + block_rows]
            if self.use_bit_serial:
                x = np.pad(x, ((0, 0), (0, block_rows - x.shape[1])))  # rows past K get no input
                levels = np.hstack([cell_levels(self.cells[row], self.hw) for _, row in columns])
                product = self.bit_serial.product(x, levels)
            else:  # the ideal ADC: the product with the weights the cells encode, exactly
                weights = np.hstack([self.cells[row][:x.shape[1]] for _, row in columns]).astype(np.float32)
                product = x.astype(np.float32) @ weights
            js = [j for j, _ in columns]
            if js == list(range(js[0], js[0] + len(js))):  # consecutive column blocks: one add
                c0 = js[0] * block_cols
                width = min(len(js) * block_cols, n - c0)
                state.acc[g][:, c0:c0 + width] += product[:, :width]
                continue
            for slot, j in enumerate(js):
                c0 = j * block_cols
                width = min(block_cols, n - c0)
                state.acc[g][:, c0:c0 + width] += product[:, slot * block_cols:slot * block_cols + width]
        if len(state.done) == total:
            self.values[instr["out"]] = self._finish(layer, attrs, state, k, n)
            del self._acc[layer.name]

    def _start(self, layer: LayerDef, attrs: dict, x: np.ndarray) -> _Accumulator:
        weight = self.w[layer.weight("weight")[0]]
        groups = attrs.get("groups", 1)
        if layer.op == "qconv2d":
            windows, out_hw = conv_windows(x, attrs, weight.shape[2:])
            lead = (x.shape[0],)
        else:
            windows, out_hw, lead = [x.reshape(-1, x.shape[-1])], (), x.shape[:-1]
        _, n = matrix_shape(weight.shape, groups)
        # float64 holds every partial sum exactly (below 2^53), and adds float32 products without a cast
        state = _Accumulator(np.zeros((groups, windows[0].shape[0], n), np.float64), windows, out_hw, lead)
        self._acc[layer.name] = state
        return state

    def _finish(self, layer: LayerDef, attrs: dict, state: _Accumulator, k: int, n: int) -> np.ndarray:
        """Digital zero-point correction, bias, requantization (DESIGN.md section 3)."""
        groups = state.acc.shape[0]
        if layer.name not in self._weight_sums:  # a digital constant of the layer, known offline
            weight = self.w[layer.weight("weight")[0]].reshape(groups, n, k)
            self._weight_sums[layer.name] = weight.sum(2, dtype=np.int64)[:, None, :]
        w_sum = self._weight_sums[layer.name]
        x_sum = np.stack([win.sum(1, dtype=np.uint32) for win in state.windows]).astype(np.int64)[:, :, None]
        # the float64 accumulator holds exact integers: convert without rounding
        acc = state.acc.astype(np.int64) - attrs["w_zp"] * x_sum - attrs["x_zp"] * w_sum + k * attrs["x_zp"] * attrs["w_zp"]
        acc = acc.transpose(1, 0, 2).reshape(acc.shape[1], groups * n)
        bias = layer.weight("bias")
        if bias is not None:
            acc = acc + self.w[bias[0]].astype(np.int64)
        floor = attrs["out_zp"] if attrs.get("relu") else 0
        shift = attrs["shift"]
        q = attrs["out_zp"] + ((acc * attrs["multiplier"] + (1 << (shift - 1))) >> shift)
        out = np.clip(q, floor, 255).astype(np.uint8)
        if layer.op == "qconv2d":
            oh, ow = state.out_hw
            return out.reshape(state.lead[0], oh, ow, groups * n).transpose(0, 3, 1, 2).copy()
        return out.reshape(*state.lead, groups * n)

    # ---- special function unit ----------------------------------------------------------------
    def sfu(self, instr: Instr) -> None:
        inputs = [self.values[name] for name in instr["inputs"]]
        weights = {role: self.w[name] for role, name, _ in instr["weights"]}
        self.values[instr["out"]] = SFU_OPS[instr["op"]](inputs, dict(instr["attrs"]), weights)
