"""Static checks before a program runs (DESIGN.md section 5): every name resolves, indices are
in range, values are defined before use, tensors match their declared types, every wait has a
signal, the two streams cannot deadlock, no APU row is written while a layer may still read it,
every `mvm` reads rows that hold exactly its blocks, and the Gbuffer banks can hold each layer.
(Releases only tell the timing model when rows fall idle: safety follows from the write/read order.)

Concurrency is checked for every interleaving at once with vector clocks over the write and
compute streams: event a happens before event b iff a's clock is componentwise <= b's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..isa.diagnostics import render_error
from ..isa.hardware import Hardware
from ..isa.program import DTYPES, Instr, Program
from ..isa.tiling import block_grid, matrix_shape
from .sfu import SFU_OPS


class VerifyError(ValueError):
    """The program is inconsistent; the message starts with file:line:col."""


@dataclass(frozen=True)
class Event:
    stream: str
    index: int
    clock: tuple[int, int]

    def before(self, other: Event) -> bool:
        return all(a <= b for a, b in zip(self.clock, other.clock)) and self != other


def layer_grid(layer, hw: Hardware) -> tuple[int, int, int, int]:
    """(groups, kb, nb, total blocks) of a crossbar layer, from its weight's shape."""
    _, spec = layer.weight("weight")
    groups = layer.attr("groups", 1)
    k, n = matrix_shape(spec.shape, groups)
    kb, nb = block_grid(k, n, hw)
    return groups, kb, nb, groups * kb * nb


class Verifier:
    def __init__(self, program: Program, weights: dict[str, np.ndarray], hw: Hardware, source: str, filename: str):
        self.p, self.weights, self.hw = program, weights, hw
        self.source, self.filename = source, filename

    def fail(self, instr: Instr | None, message: str):
        line, col = (instr.line, instr.column) if instr is not None and instr.line else (1, 1)
        raise VerifyError(render_error(self.source, self.filename, line, col, message))

    def fail_line(self, line: int, message: str):
        raise VerifyError(render_error(self.source, self.filename, line or 1, 1, message))

    def run(self) -> None:
        self.check_tensors()
        self.check_streams_static()
        self.check_values()
        self.check_concurrency()

    # ---- names and tensors --------------------------------------------------------------------
    def check_tensor(self, line: int, name: str, spec) -> None:
        if name not in self.weights:
            self.fail_line(line, f"weight @{name} is not in {self.p.weights[0]}")
        array = self.weights[name]
        if array.dtype != np.dtype(DTYPES[spec.dtype]) or tuple(array.shape) != spec.shape:
            self.fail_line(line, f"weight @{name}: the file holds {array.dtype}{list(array.shape)}, "
                                 f"the program says {spec}")

    def check_tensors(self) -> None:
        for layer in self.p.layers:
            if layer.op not in ("qconv2d", "qlinear"):
                self.fail_line(layer.line, f".layer {layer.name}: op {layer.op} does not run on crossbars "
                                           f"(qconv2d, qlinear)")
            if layer.weight("weight") is None:
                self.fail_line(layer.line, f".layer {layer.name} has no weight")
            for _, name, spec in layer.weights:
                self.check_tensor(layer.line, name, spec)
        for instr in self.p.compute:
            if instr.opcode == "sfu":
                if instr["op"] not in SFU_OPS:
                    self.fail(instr, f"unknown SFU op {instr['op']}; known: {', '.join(sorted(SFU_OPS))}")
                for _, name, spec in instr["weights"]:
                    self.check_tensor(instr.line, name, spec)

    # ---- per-stream checks --------------------------------------------------------------------
    def check_streams_static(self) -> None:
        layers = {layer.name: layer for layer in self.p.layers}
        rows_total = self.hw.apu_rows
        signals: dict[str, Instr] = {}
        for stream in ("write", "compute"):
            for instr in self.p.stream(stream):
                if instr.opcode == "signal":
                    if instr["token"] in signals:
                        self.fail(instr, f"token ${instr['token']} is signalled twice")
                    signals[instr["token"]] = instr
                rows = instr.get("rows", ())
                if len(set(rows)) != len(rows):
                    self.fail(instr, "an APU row is listed twice")
                bad = [r for r in rows if not 0 <= r < rows_total]
                if bad:
                    self.fail(instr, f"APU row {bad[0]} is out of range: the chip has rows 0..{rows_total - 1}")
                if instr.opcode in ("wr", "mvm"):
                    if instr["layer"] not in layers:
                        self.fail(instr, f"no .layer {instr['layer']}")
                    total = layer_grid(layers[instr["layer"]], self.hw)[3]
                    first, last = (instr["block"],) * 2 if instr.opcode == "wr" else instr["blocks"]
                    if not 0 <= first <= last < total:
                        self.fail(instr, f"block {first if first >= total else last} out of range: "
                                         f"{instr['layer']} has blocks 0..{total - 1}")
                    if instr.opcode == "mvm" and len(rows) % (last - first + 1):
                        self.fail(instr, f"{len(rows)} rows for {last - first + 1} blocks: rows must be "
                                         f"whole replicas of the block range")
                if instr.opcode == "bank":
                    self.check_banks(instr)
        for stream in ("write", "compute"):
            for instr in self.p.stream(stream):
                if instr.opcode == "wait" and instr["token"] not in signals:
                    self.fail(instr, f"wait ${instr['token']} has no matching signal in either stream")
        for layer in self.p.layers:
            covered = [i["blocks"] for i in self.p.compute if i.opcode == "mvm" and i["layer"] == layer.name]
            total = layer_grid(layer, self.hw)[3]
            expected, ok = 0, True
            for first, last in covered:
                ok &= first == expected
                expected = last + 1
            if not ok or expected != total:
                self.fail_line(layer.line, f"the mvm instructions of {layer.name} must cover its blocks 0..{total - 1} "
                                           f"once, in order; they cover {covered}")

    def check_banks(self, instr: Instr) -> None:
        banks = self.hw.gbuffer.banks_bytes
        chosen = instr["in"] + instr["out"]
        if any(not 0 <= b < len(banks) for b in chosen):
            self.fail(instr, f"bank index out of range: the Gbuffer has banks 0..{len(banks) - 1}")
        if set(instr["in"]) & set(instr["out"]):
            self.fail(instr, "a bank holds a layer's inputs or its outputs, never both")

    def check_values(self) -> None:
        """Every value defined once before use, bank capacities, declared types of ports."""
        defined: dict[str, object] = {}
        pending_bank = None
        inputs = {port.name: port for port in self.p.inputs}
        for instr in self.p.compute:
            op = instr.opcode
            if op == "bank":
                pending_bank = instr
            if op == "load":
                if instr["port"] not in inputs:
                    self.fail(instr, f"no .input {instr['port']}")
                if instr["type"].shape != inputs[instr["port"]].type.shape:
                    self.fail(instr, f"load of {instr['port']} as {instr['type']}, but .input declares "
                                     f"{inputs[instr['port']].type}")
            reads = {"mvm": lambda i: (i["input"],), "sfu": lambda i: i["inputs"], "store": lambda i: (i["value"],)}
            for name in reads.get(op, lambda i: ())(instr):
                if name not in defined:
                    self.fail(instr, f"%{name} is read before any instruction defines it")
            if op in ("mvm", "sfu") and pending_bank is not None:
                need_in = sum(defined[n].nbytes for n in reads[op](instr))
                self.check_capacity(pending_bank, need_in, instr["type"].nbytes, instr)
            if op in ("load", "sfu") or (op == "mvm" and instr["out"] not in defined):
                if op != "mvm" and instr["out"] in defined:
                    self.fail(instr, f"%{instr['out']} is defined twice")
                defined[instr["out"]] = instr["type"]
        for port in self.p.outputs:
            stored = [i for i in self.p.compute if i.opcode == "store" and i["port"] == port.name]
            if len(stored) != 1:
                self.fail_line(port.line, f".output {port.name} must be stored exactly once, found {len(stored)}")
            if port.value not in defined or defined[port.value].shape != port.type.shape:
                self.fail_line(port.line, f".output {port.name}: %{port.value} is not a defined value of shape "
                                          f"{list(port.type.shape)}")

    def check_capacity(self, bank: Instr, need_in: int, need_out: int, instr: Instr) -> None:
        banks = self.hw.gbuffer.banks_bytes
        have_in, have_out = (sum(banks[b] for b in bank[side]) for side in ("in", "out"))
        short = max(0, need_in - have_in) + max(0, need_out - have_out)
        if short > bank["spill"]:
            self.fail(instr, f"inputs {need_in:,} B and output {need_out:,} B do not fit the banks chosen at line "
                             f"{bank.line} (in {have_in:,} B, out {have_out:,} B) plus spill={bank['spill']:,} B")

    # ---- concurrency --------------------------------------------------------------------------
    def check_concurrency(self) -> None:
        """Run both streams abstractly, honouring waits, with vector clocks; check the row protocol."""
        streams = {"write": self.p.write, "compute": self.p.compute}
        pc = {"write": 0, "compute": 0}
        clock = {"write": [0, 0], "compute": [0, 0]}
        axis = {"write": 0, "compute": 1}
        raised: dict[str, tuple[int, int]] = {}
        writes: dict[int, list[tuple[Event, tuple[str, int]]]] = {}
        reads: dict[int, list[tuple[Event, Instr]]] = {}
        while any(pc[s] < len(streams[s]) for s in streams):
            progressed = False
            for s in ("compute", "write"):
                while pc[s] < len(streams[s]):
                    instr = streams[s][pc[s]]
                    if instr.opcode == "wait":
                        if instr["token"] not in raised:
                            break
                        clock[s] = [max(a, b) for a, b in zip(clock[s], raised[instr["token"]])]
                    clock[s][axis[s]] += 1
                    event = Event(s, pc[s], tuple(clock[s]))
                    if instr.opcode == "signal":
                        raised[instr["token"]] = tuple(clock[s])
                    elif instr.opcode == "wr":
                        for r in instr["rows"]:
                            writes.setdefault(r, []).append((event, (instr["layer"], instr["block"])))
                    elif instr.opcode == "mvm":
                        for r in instr["rows"]:
                            reads.setdefault(r, []).append((event, instr))
                    pc[s] += 1
                    progressed = True
            if not progressed:
                stuck = [streams[s][pc[s]] for s in streams if pc[s] < len(streams[s])]
                self.fail(stuck[0], "deadlock: " + " and ".join(
                    f"the {s} stream waits for ${streams[s][pc[s]]['token']}" for s in streams
                    if pc[s] < len(streams[s])) + ", which nothing left can signal")
        self.check_rows(writes, reads)

    def check_rows(self, writes, reads) -> None:
        for row, uses in reads.items():
            for event, instr in uses:
                first, last = instr["blocks"]
                span = last - first + 1
                slot = instr["rows"].index(row) % span
                wanted = (instr["layer"], first + slot)
                history = writes.get(row, [])
                seen = [(w, what) for w, what in history if w.before(event)]
                if not seen or seen[-1][1] != wanted:
                    held = f"{seen[-1][1][0]}[{seen[-1][1][1]}]" if seen else "nothing"
                    self.fail(instr, f"APU row {row} must hold {wanted[0]}[{wanted[1]}] when this mvm reads it, "
                                     f"but the writes ordered before it leave {held} there")
                later = [w for w, _ in history if not w.before(event) and w is not seen[-1][0]]
                racing = [w for w in later if not event.before(w)]
                if racing:
                    write = self.p.write[racing[0].index]
                    self.fail(write, f"APU row {row} may be written here while the mvm at line {instr.line} "
                                     f"computes on it: wait for that layer's release first")
