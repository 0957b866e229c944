"""The ARAS machine state and one handler per opcode (the interpreter half of the simulator).

State: the Gbuffer values, the cell levels of every APU row's four crossbars, which layer block
each row holds, and per-layer partial-sum accumulators for layers computed in segments. The two
streams run as the program orders them (`run.py` interleaves them); every `wr` changes cells
and counts pulses against what the cells held, every `mvm` computes from the cells it finds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..isa.hardware import Hardware
from ..isa.program import Instr, LayerDef, Program
from ..isa.tiling import UNUSED, layer_cells, matrix_shape
from .crossbar import BitSerial, cell_weights
from .sfu import SFU_OPS
from .verify import layer_blocks
from .windows import conv_windows


class ExecutionError(RuntimeError):
    pass


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
                 adc_lsb: int = 1, bit_serial: bool | None = None):
        self.p, self.w, self.hw = program, weights, hw
        xbar = hw.crossbar
        self.cells = np.zeros((hw.apu_rows, hw.chip.apus_per_row, xbar.rows, xbar.cols_cells), np.uint8)
        self.owner: list[tuple[str, int] | None] = [None] * hw.apu_rows
        self.values: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}
        self.layers = {layer.name: layer for layer in program.layers}
        self.writes = WriteStats()
        self.bit_serial = BitSerial(xbar.weight_bits, xbar.cell_bits, hw.cells_per_weight, adc_bits, adc_lsb)
        self.use_bit_serial = adc_bits is not None if bit_serial is None else bit_serial
        self._cells_cache: dict[str, np.ndarray] = {}
        self._row_weights: dict[int, np.ndarray] = {}
        self._used_counts: dict[tuple[str, int], int] = {}
        self._acc: dict[str, _Accumulator] = {}
        self.handlers = {"wr": self.wr, "signal": self.nop, "wait": self.nop, "load": self.load, "store": self.store,
                         "bank": self.nop, "mvm": self.mvm, "sfu": self.sfu, "release": self.release}

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
    def layer_cells(self, layer: LayerDef) -> np.ndarray:
        if layer.name not in self._cells_cache:
            name, _ = layer.weight("weight")
            self._cells_cache[layer.name] = layer_cells(self.w[name], dict(layer.attrs), self.hw)
        return self._cells_cache[layer.name]

    def wr(self, instr: Instr) -> None:
        layer = self.layers[instr["layer"]]
        new = self.layer_cells(layer)[instr["block"]]
        used = new != UNUSED
        target = np.where(used, new, 0)
        for row in instr["rows"]:
            old = self.cells[row]
            stale = np.where(used, old, 0)  # cells outside the block are not written: no pulses
            delta = np.maximum(target, stale) - np.minimum(target, stale)
            self.writes.pulses += int(delta.sum(dtype=np.int64))
            changed = int(np.count_nonzero(delta))
            self.writes.cells_written += changed
            self.writes.cells_skipped += self._used_count(instr["layer"], instr["block"], used) - changed
            self.writes.blocks += 1
            np.copyto(old, new, where=used)
            self.owner[row] = (layer.name, instr["block"])
            self._row_weights.pop(row, None)

    def _used_count(self, layer: str, block: int, used: np.ndarray) -> int:
        key = (layer, block)
        if key not in self._used_counts:
            self._used_counts[key] = int(np.count_nonzero(used))
        return self._used_counts[key]

    def release(self, instr: Instr) -> None:
        for row in instr["rows"]:
            self.owner[row] = None

    def mvm(self, instr: Instr) -> None:
        layer = self.layers[instr["layer"]]
        attrs = dict(layer.attrs)
        state = self._acc.get(layer.name) or self._start(layer, attrs, self.values[instr["input"]])
        self.last_windows = state.windows[0].shape[0]  # for the timing model
        self.last_in_bytes = self.values[instr["input"]].nbytes
        groups, kb, nb, total = layer_blocks(layer, self.hw)
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
                products = [self.bit_serial.product(x, self.cells[row]) for _, row in columns]
            else:
                weights = np.hstack([self.row_weights(row)[:x.shape[1]] for _, row in columns])
                products = np.split(x.astype(np.float32) @ weights, len(columns), axis=1)
            for (j, _), product in zip(columns, products):
                c0 = j * block_cols
                width = min(block_cols, n - c0)
                state.acc[g][:, c0:c0 + width] += product[:, :width]
        if len(state.done) == total:
            self.values[instr["out"]] = self._finish(layer, attrs, state, k, n)
            del self._acc[layer.name]

    def row_weights(self, row: int) -> np.ndarray:
        """The weights an APU row's cells encode, [rows, weights], cached until the row is rewritten."""
        if row not in self._row_weights:
            self._row_weights[row] = cell_weights(self.cells[row], self.hw.crossbar.cell_bits, self.hw.cells_per_weight)
        return self._row_weights[row]

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
        weight = self.w[layer.weight("weight")[0]].astype(np.int64).reshape(groups, n, k)
        x_sum = np.stack([win.sum(1, dtype=np.int64) for win in state.windows])[:, :, None]
        w_sum = weight.sum(2)[:, None, :]
        acc = np.rint(state.acc).astype(np.int64) - attrs["w_zp"] * x_sum - attrs["x_zp"] * w_sum + k * attrs["x_zp"] * attrs["w_zp"]
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
