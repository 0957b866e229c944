"""Time and energy of a run (paper III-B, IV, VII; DESIGN.md section 2): an event-driven model of
the two streams, fed each instruction as the interpreter executes it.

Each stream has its own clock. `wait` moves a stream's clock to the time the token was raised.
The compute stream runs one instruction after another:
- `mvm`: compute_cycles_per_window per activation window, every crossbar of the segment in
  parallel, windows shared among replicas; the accumulation unit adds its latency. A window
  reads K input bytes and writes N output bytes through the ports of the layer's banks
  (gbuffer_bytes_per_cycle_per_bank each): with many replicas, or one window of a wide linear
  layer, those ports and not the crossbars set the pace.
- `sfu`: output elements over the SFU lanes. Attention's activation-by-activation products
  (`qmatmul`) are multiply-accumulates on the unit the hardware's [matmul] table names: the
  SFU's lanes, or a digital MAC array of macs_per_cycle.
- `load`/`store`: bytes at the main-memory bandwidth.
The write stream issues `wr`s without waiting for them: a block's 4 crossbars are written row
by row in write_cycles_per_crossbar, in parallel with every other block in flight. Main memory
streams each crossbar's 4,096 weight bytes during its write, so at most
floor(bandwidth / (bytes per block / write cycles)) blocks can be in flight; a further `wr`
waits for the earliest to finish. A write-stream `signal` raises its token when every write issued
before it has finished; the stream itself goes on issuing.

Energy: write pulses x write_j_per_pulse; weight and activation bytes x main_memory_j_per_byte;
crossbar activations (used crossbars x windows) x compute_j_per_crossbar_window, scaled by the
input steps a window takes (runtime/adc.py), and their ADC conversions (every bitline, or
differential pair, of a used crossbar, per input step) x adc_j_per_conversion, plus one
accumulation per output per extra K-block; SFU element-operations x sfu_j_per_op (a `qmatmul`'s
multiply-accumulates at j_per_mac on the MAC array); Gbuffer bytes
read and written x gbuffer_access_j_per_byte; and the static power of the banks each `bank`
instruction turns on, for as long as they stay on (all others are power-gated). Activations a
`bank` spills (they exceed the Gbuffer) cost a round trip through main memory.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from ..isa.hardware import Hardware
from ..isa.opcodes import OPCODES
from ..isa.program import CHANNEL_PARAMS, Instr, Program
from ..isa.tiling import block_grid, layer_hardware, matrix_shape, slot_crossbars, slot_shape
from .adc import INPUT_BITS, MvmAdc, input_slice_bits, input_steps
from .verify import layer_grid


@dataclass
class Span:
    track: str
    name: str
    start: float
    end: float


@dataclass
class Energy:
    write: float = 0.0
    compute: float = 0.0
    static: float = 0.0
    memory: float = 0.0
    sfu: float = 0.0
    matmul: float = 0.0                                # qmatmul on the [matmul] unit, SFU or array
    gbuffer: float = 0.0
    adc: float = 0.0

    @property
    def total(self) -> float:
        return self.write + self.compute + self.static + self.memory + self.sfu + self.matmul + self.gbuffer + self.adc


@dataclass
class MatmulWork:
    """Attention's activation-by-activation products (`qmatmul`) and what they cost on their unit."""
    macs: int = 0
    cycles: int = 0


@dataclass
class Timing:
    program: Program
    hw: Hardware
    clock: dict = field(default_factory=lambda: {"write": 0.0, "compute": 0.0})
    raised: dict = field(default_factory=dict)
    inflight: list = field(default_factory=list)       # completion times of block writes in flight
    last_write_done: float = 0.0
    spans: list = field(default_factory=list)
    marks: list = field(default_factory=list)          # (track, name, time): token raises
    energy: Energy = field(default_factory=Energy)
    peak_inflight: int = 0
    banks: tuple = ()
    ports: tuple = (1, 1)                              # banks holding the inputs, the outputs
    banks_since: float = 0.0
    adc_conversions: int = 0                           # ADC conversions, every bitline (pair) of a used crossbar
    layer_adc: dict = field(default_factory=dict)      # layer -> [ADC conversions, single-bit steps rerun]
    matmul: MatmulWork = field(default_factory=MatmulWork)
    costs: dict = field(default_factory=dict)          # per-program constants, kept between runs (__post_init__)

    def __post_init__(self):
        self.max_inflight = max_blocks_writing(self.hw)
        self.row_tracks = [f"row {r}" for r in range(self.hw.apu_rows)]
        self._handlers = {opcode: getattr(self, "_" + opcode) for opcode in OPCODES}
        self._grids: dict[str, tuple[int, int, int, int]] = {}  # layer -> (K, N, kb, nb)
        self._sliced: dict[str, tuple[tuple[int, int], int]] = {}  # layer -> its block, weights per crossbar row
        # what a program's writes and segments cost does not change between its inferences: the
        # caller may pass the `costs` of an earlier run's Timing (run.py keeps them on the machine)
        self._write_costs = self.costs.setdefault("write", {})      # (layer, block) -> `_write_cost`
        self._segment_work = self.costs.setdefault("segment", {})   # (layer, first, last) -> crossbars, adds
        self.layers = {layer.name: layer for layer in self.program.layers}
        # declared types of every value: the timing model needs shapes, never values
        self.types = {i["out"]: i["type"] for i in self.program.compute if i.opcode in ("load", "mvm", "sfu")}
        # Per-channel requantization parameters (w_zp, multiplier, shift, out_zp) come from main
        # memory with the layer's weights, once per inference, into the requantization unit.
        self.channel_param_bytes = {layer.name: sum(spec.nbytes for role, _, spec in layer.weights
                                                    if role in CHANNEL_PARAMS) for layer in self.program.layers}

    # ---- streams ------------------------------------------------------------------------------
    def record(self, stream: str, instr: Instr, machine) -> None:
        self._handlers[instr.opcode](stream, instr, machine)

    def _advance(self, stream: str, cycles: float, name: str, tracks=()) -> None:
        start = self.clock[stream]
        self.clock[stream] = start + cycles
        if cycles > 0:
            self.spans.append(Span(stream, name, start, start + cycles))
            for track in tracks:
                self.spans.append(Span(track, name, start, start + cycles))

    def _wait(self, stream, instr, machine):
        self.clock[stream] = max(self.clock[stream], self.raised[instr["token"]])

    def _signal(self, stream, instr, machine):
        # writes run in the background: the token waits for them, the write stream does not
        done = self.last_write_done if stream == "write" else 0.0
        self.raised[instr["token"]] = max(self.clock[stream], done)
        self.marks.append((stream, f"signal {instr['token']}", self.raised[instr["token"]]))

    def _wr(self, stream, instr, machine):
        cycles = self.hw.crossbar.write_cycles_per_crossbar
        layer, block = self.layers[instr["layer"]], instr["block"]
        memory_j, name = self._write_cost(layer, block, machine)
        inflight = self.inflight
        for row in instr["rows"]:
            while inflight and inflight[0] <= self.clock[stream]:
                heapq.heappop(inflight)
            if len(inflight) >= self.max_inflight:
                self.clock[stream] = heapq.heappop(inflight)
            start = self.clock[stream]
            heapq.heappush(inflight, start + cycles)
            self.peak_inflight = max(self.peak_inflight, len(inflight))
            self.last_write_done = max(self.last_write_done, start + cycles)
            self.spans.append(Span(self.row_tracks[row], name, start, start + cycles))
            self.energy.memory += memory_j

    def _write_cost(self, layer, block, machine) -> tuple[float, str]:
        """(main-memory joules, span name) of a block's write into one row: the same every
        inference, so computed once per block."""
        key = (layer.name, block)
        if key not in self._write_costs:
            memory_j = self._block_bytes(layer, block, machine) * self.hw.energy.main_memory_j_per_byte
            self._write_costs[key] = (memory_j, f"write {layer.name}[{block}]")
        return self._write_costs[key]

    def _grid(self, layer) -> tuple[int, int, int, int]:
        """(K, N, kb, nb) of a layer's weight matrix (of each group) and block grid."""
        if layer.name not in self._grids:
            _, spec = layer.weight("weight")
            k, n = matrix_shape(spec.shape, layer.attr("groups", 1))
            hw = layer_hardware(self.hw, layer)
            self._grids[layer.name] = (k, n, *block_grid(k, n, hw))
            self._sliced[layer.name] = (hw.block, hw.weights_per_row)
        return self._grids[layer.name]

    def _block_shape(self, layer, block) -> tuple[int, int]:
        """(matrix rows, matrix columns) a block of `layer` holds: edge blocks are partial."""
        k, n, kb, nb = self._grid(layer)
        rows, cols = self._sliced[layer.name][0]
        j, i = divmod(block % (kb * nb), kb)
        return min(rows, k - i * rows), min(cols, n - j * cols)

    def _block_bytes(self, layer, block, machine) -> float:
        """Bytes main memory streams for a block's write: its weights, or on a bit-sliced chip the
        cells of its slice tiles (cell_bits each: a dense block streams as many bytes as a packed one)."""
        if not self.hw.bit_sliced:
            rows, cols = self._block_shape(layer, block)
            return rows * cols * self.hw.crossbar.weight_bits / 8
        k, n = self._grid(layer)[:2]
        entry = machine.block_layout(layer)[block]
        cells = sum(math.prod(slot_shape(entry, slot, k, n, self.hw)) for slot in entry[2])
        return cells * self.hw.crossbar.cell_bits / 8

    def _block_crossbars_and_adds(self, layer, blocks: range, machine) -> tuple[int, int]:
        """(crossbars computing, partial sums added per window) of a segment's blocks. A packed
        block adds one partial sum per column; a bit-sliced one one per slot and column, the SFU's
        splice of the slices (SME), and computes only the crossbars its slots fill."""
        if not self.hw.bit_sliced:
            self._grid(layer)
            block, weights_per_row = self._sliced[layer.name]
            crossbars = sum(math.ceil(self._block_shape(layer, b)[1] / weights_per_row) for b in blocks)
            return crossbars, len(blocks) * block[1]
        k, n = self._grid(layer)[:2]
        layout = machine.block_layout(layer)
        crossbars = sum(slot_crossbars(layout[b], k, n, self.hw) for b in blocks)
        return crossbars, sum(len(layout[b][2]) for b in blocks) * self.hw.block[1]

    def _mvm(self, stream, instr, machine):
        layer = self.layers[instr["layer"]]
        first, last = instr["blocks"]
        replicas = len(instr["rows"]) // (last - first + 1)
        shape = instr["type"].shape
        windows = shape[0] * shape[2] * shape[3] if layer.op == "qconv2d" else math.prod(shape[:-1])
        k, n = self._grid(layer)[:2]
        groups = layer.attr("groups", 1)
        steps = input_steps(layer)
        record = machine.last_mvm_adc if machine.last_mvm_adc.line == instr.line else MvmAdc(instr.line)
        rerun = record.recovered_windows * input_slice_bits(layer)
        busiest = record.busiest_row_steps
        cycles = mvm_cycles(self.hw, windows, replicas, groups * k, groups * n, self.ports, steps, rerun, busiest)
        self._advance(stream, cycles, f"mvm {layer.name}", [self.row_tracks[r] for r in instr["rows"]])
        key = (layer.name, first, last)
        if key not in self._segment_work:
            self._segment_work[key] = self._block_crossbars_and_adds(layer, range(first, last + 1), machine)
        crossbars, adds = self._segment_work[key]
        e = self.hw.energy
        run_steps = crossbars * windows * steps if record.crossbar_steps is None else record.crossbar_steps
        crossbar_steps = run_steps + record.recovered_crossbar_steps
        self.energy.compute += crossbar_steps * e.compute_j_per_crossbar_window / INPUT_BITS
        self.adc_conversions += crossbar_steps * self.hw.conversions_per_step
        self.energy.adc += crossbar_steps * self.hw.conversions_per_step * e.adc_j_per_conversion
        self.layer_adc.setdefault(layer.name, [0, 0])
        self.layer_adc[layer.name][0] += crossbar_steps * self.hw.conversions_per_step
        self.layer_adc[layer.name][1] += rerun
        self.energy.compute += windows * adds * e.accumulate_j_per_add
        self._gbuffer(self.types[instr["input"]].nbytes + instr["type"].nbytes)
        params = self.channel_param_bytes.pop(layer.name, 0)   # the first segment brings them
        self.energy.memory += params * e.main_memory_j_per_byte

    def _sfu(self, stream, instr, machine):
        out = instr["type"]
        elements = math.prod(out.shape)
        name = f"sfu {instr['op']} {instr['out']}"
        if instr["op"] == "qmatmul":
            macs = elements * self.types[instr["inputs"][0]].shape[-1]
            cycles, joules = matmul_cost(self.hw, macs)
            self.matmul.macs += macs
            self.matmul.cycles += cycles
            self._advance(stream, cycles, name)
            self.energy.matmul += joules
        else:
            self._advance(stream, sfu_cycles(self.hw, elements), name)
            self.energy.sfu += elements * self.hw.energy.sfu_j_per_op
        in_bytes = sum(self.types[name].nbytes for name in instr["inputs"])
        self._gbuffer(in_bytes + out.nbytes)

    def _transfer(self, stream, nbytes, name):
        cycles = nbytes / (self.hw.memory.bandwidth_bytes_per_s / self.hw.chip.clock_hz)
        self._advance(stream, math.ceil(cycles), name)
        self.energy.memory += nbytes * self.hw.energy.main_memory_j_per_byte
        self._gbuffer(nbytes)

    def _load(self, stream, instr, machine):
        self._transfer(stream, instr["type"].nbytes, f"load {instr['port']}")

    def _store(self, stream, instr, machine):
        self._transfer(stream, self.types[instr["value"]].nbytes, f"store {instr['port']}")

    def _bank(self, stream, instr, machine):
        self._close_banks(self.clock[stream])
        self.banks = instr["in"] + instr["out"]
        self.ports = (max(1, len(instr["in"])), max(1, len(instr["out"])))
        if instr["spill"]:  # partitioned activations go out to main memory and come back
            self._transfer(stream, 2 * instr["spill"], "spill")

    def _release(self, stream, instr, machine):
        pass

    def _gbuffer(self, nbytes):
        self.energy.gbuffer += nbytes * self.hw.energy.gbuffer_access_j_per_byte

    def _close_banks(self, now):
        watts = sum(self.hw.gbuffer_bank_static_w[b] for b in self.banks)
        self.energy.static += watts * self.hw.seconds(now - self.banks_since)
        self.banks_since = now

    # ---- results ------------------------------------------------------------------------------
    def finish(self, machine) -> None:
        end = max(self.clock["compute"], self.last_write_done)
        self._close_banks(end)
        self.energy.write = machine.writes.pulses * self.hw.energy.write_j_per_pulse
        self.cycles = end


def mvm_cycles(hw: Hardware, windows: int, replicas: int, k: int, n: int, ports: tuple[int, int] = (1, 1),
               input_steps: int = INPUT_BITS, rerun_steps: int = 0, busiest_row_steps: int | None = None) -> int:
    """Cycles of an `mvm` over `windows` on `replicas` copies: compute_cycles_per_window per
    window step (of INPUT_BITS input steps; fewer with input slicing, and `rerun_steps` more
    single-bit steps where speculation recovered, runtime/adc.py), but never less than moving each
    window's k input and n output bytes through the ports of the layer's (input, output) banks;
    then the accumulation latency. With dynamic precision, `busiest_row_steps` (the input steps
    of the APU row with the most, over all windows) replaces windows x input_steps."""
    per_window = hw.crossbar.compute_cycles_per_window
    run = math.ceil(windows / replicas) * input_steps if busiest_row_steps is None else \
        math.ceil(busiest_row_steps / replicas)
    steps = math.ceil((run + math.ceil(rerun_steps / replicas)) * per_window / INPUT_BITS)
    port = hw.latency.gbuffer_bytes_per_cycle_per_bank
    traffic = max(math.ceil(windows * k / (ports[0] * port)), math.ceil(windows * n / (ports[1] * port)))
    return max(steps, traffic) + hw.latency.accumulate_latency_cycles


def sfu_cycles(hw: Hardware, elements: int) -> int:
    """Cycles of one SFU operation over `elements`, a vector of sfu_lanes at a time."""
    return math.ceil(elements / hw.latency.sfu_lanes) * hw.latency.sfu_cycles_per_vector


def matmul_cost(hw: Hardware, macs: int) -> tuple[int, float]:
    """(cycles, joules) of `macs` activation-by-activation multiply-accumulates on the unit the
    hardware's [matmul] table names: the SFU (one per lane per vector, sfu_j_per_op each) or the
    digital MAC array (macs_per_cycle a cycle, j_per_mac each)."""
    if hw.matmul.unit == "sfu":
        return sfu_cycles(hw, macs), macs * hw.energy.sfu_j_per_op
    return math.ceil(macs / hw.matmul.macs_per_cycle), macs * hw.matmul.j_per_mac


def max_blocks_writing(hw: Hardware) -> int:
    """Blocks main memory can feed at once: each streams its bytes over one crossbar write time."""
    block_bytes = hw.chip.apus_per_row * hw.weights_per_crossbar * hw.crossbar.weight_bits / 8
    bytes_per_cycle = hw.memory.bandwidth_bytes_per_s / hw.chip.clock_hz
    return max(1, math.floor(bytes_per_cycle / (block_bytes / hw.crossbar.write_cycles_per_crossbar)))


def upper_bound_cycles(program: Program, hw: Hardware) -> float:
    """Paper VII-B: the time to write every weight of the DNN once with all crossbars busy.

    A block write holds its APU row for write_cycles_per_crossbar, and at most `slots` blocks are
    in flight (the rows, or what main memory feeds). Writes that never overlap more than `slots`
    at a time can be laid on `slots` tracks, each writing one block after another (an interval
    graph is colourable with as many colours as its largest overlap), so some track writes
    ceil(blocks / slots) blocks in a row: no schedule is shorter than that many whole writes.
    The paper's BERT figures are exactly that (130 and 39 inferences/s: 10 and 33 rounds)."""
    blocks = sum(layer_grid(layer, hw)[3] for layer in program.layers)
    return write_rounds(blocks, hw) * hw.crossbar.write_cycles_per_crossbar


def write_rounds(blocks: int, hw: Hardware) -> int:
    """Whole block-write times needed to write `blocks` (upper_bound_cycles); at least one."""
    slots = min(hw.apu_rows, max_blocks_writing(hw))
    return max(1, math.ceil(blocks / slots))


def lifespan_years(hw: Hardware, writes_per_inference: int, seconds_per_inference: float) -> float:
    """Paper VII-D: years until the most-written cells reach the endurance, running back to back.
    Every write into an APU row counts against each of its cells: an upper bound on the writes a
    cell sees (cells already at their level are skipped), so a lower bound on the lifespan."""
    if not writes_per_inference or not seconds_per_inference:
        return math.inf
    inferences = hw.crossbar.endurance_writes / writes_per_inference
    return inferences * seconds_per_inference / (365.25 * 24 * 3600)


def summary(timing: Timing, machine, program: Program, hw: Hardware, inference: int) -> dict:
    cycles = timing.cycles
    seconds = hw.seconds(cycles)
    bound = upper_bound_cycles(program, hw)
    e = timing.energy
    w = machine.writes
    return {
        "program": program.name,
        "hardware": program.hw[0],
        "inference": inference,
        "note": "steady state: the second of two inferences, starting from the cells the first left"
        if inference == 2 else "first inference, from empty crossbars",
        "cycles": int(round(cycles)),
        "seconds": seconds,
        "inferences_per_second": 1.0 / seconds if seconds else math.inf,
        "upper_bound_inferences_per_second": 1.0 / hw.seconds(bound),
        "fraction_of_upper_bound": bound / cycles if cycles else 0.0,
        "energy_joules": {"write": e.write, "compute": e.compute + e.sfu + e.matmul + e.adc, "static": e.static,
                          "memory": e.memory + e.gbuffer, "total": e.total},
        "adc": {"conversions": timing.adc_conversions, "energy_joules": e.adc},
        "write_pulses": w.pulses,
        "cells_written": w.cells_written,
        "cells_skipped": w.cells_skipped,
        "blocks_written": w.blocks,
        "most_writes_per_row": max(w.row_writes.values(), default=0),
        "lifespan_years": lifespan_years(hw, max(w.row_writes.values(), default=0), seconds),
        "activation_matmul": {"unit": hw.matmul.unit, "macs": timing.matmul.macs, "cycles": timing.matmul.cycles,
                              "joules": e.matmul},
        "peak_blocks_writing": timing.peak_inflight,
        "max_blocks_writing_by_bandwidth": timing.max_inflight,
    }


def chrome_trace(timing: Timing, hw: Hardware) -> dict:
    """Chrome / Perfetto JSON: one track per stream and per APU row (pid 0), times in microseconds.
    Row tracks hold block writes and layer computes; stream tracks hold computes and token raises."""
    used = {s.track for s in timing.spans} | {track for track, _, _ in timing.marks}
    tracks = sorted(used, key=lambda t: (t not in ("compute", "write"), int(t.split()[1]) if t.startswith("row") else 0, t))
    tid = {t: i for i, t in enumerate(tracks)}
    us = 1e6 / hw.chip.clock_hz
    events = [{"name": "thread_name", "ph": "M", "pid": 0, "tid": tid[t], "args": {"name": t}} for t in tracks]
    events += [{"name": s.name, "ph": "X", "pid": 0, "tid": tid[s.track], "ts": s.start * us,
                "dur": (s.end - s.start) * us} for s in timing.spans]
    events += [{"name": name, "ph": "i", "s": "t", "pid": 0, "tid": tid[track], "ts": t * us}
               for track, name, t in timing.marks]
    return {"traceEvents": events, "displayTimeUnit": "ms"}

