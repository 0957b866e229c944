"""Static checks before a program runs (DESIGN.md section 5): the verifier is the specification of
what a program may say, so that a program it accepts runs without an error and computes what
its text means (tests/test_fuzz.py checks both on generated and mutated programs).

- every attribute of every layer, SFU op, port and bank has the type and range the opcode
  table gives it (isa/opcodes.py), nothing is missing, nothing unknown, every weight role known;
- every declared type equals what produces it: a weight's the file's tensor, a load's its
  port, an mvm's the layer's output, an sfu's what the op itself computes from its operands'
  types (run on zero-filled operands, as the IR verifier runs ops on meta tensors), and each
  value's size fits this machine's memory;
- each value is defined once, before use, never overwritten (an mvm's segments define their
  value with the last one); every opcode runs in its stream only (`store`, `sfu`, `release` in
  compute); a `store` goes to an `.output` whose value it is;
- every wait has a signal, the two streams cannot deadlock, no APU row is written while a layer
  may still read it, every `mvm` reads rows that hold exactly its blocks (a `release` empties a
  row, so an mvm after it finds nothing), and the Gbuffer banks can hold each layer.

Concurrency is checked for every interleaving at once with vector clocks over the write and
compute streams: event a happens before event b iff a's clock is componentwise <= b's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..isa.diagnostics import render_error
from ..isa.hardware import Hardware, machine_memory_bytes
from ..isa.opcodes import CODES, INPUT_ATTRS, LAYER_OPS, OPCODES, OUTPUT_ATTRS, SFU_SPECS, OpSpec
from ..isa.program import DTYPES, Instr, LayerDef, Program, TensorSpec
from ..isa.tiling import block_grid, layer_hardware, matrix_shape, sliced_block_count
from .sfu import SFU_OPS
from .windows import output_length

# The interpreter keeps every value and makes int64/float64 temporaries of an op's operands:
# refuse a program whose values need more than this share of the machine's memory.
MEMORY_SHARE = 0.5
TEMPORARY_FACTOR = 8      # bytes of temporaries per byte of an op's operands and result, at most
SOFTMAX_TABLE_MAX = 1 << 16  # qsoftmax's exponentials: table[0] = 2^16 stands for exp(0) (qops.py)
SOFTMAX_TABLE_LENGTH = 1 << 16  # one entry per distance max - x of int16 codes, at most (qops.softmax_table)
LUT_TABLE_LENGTH = 1 << 12   # a qlut table read by a 12-bit index (arasc/passes/quantize.py TABLE_INDEX_LEVELS)
U8_CODES = 256


def _largest_offset(t: TensorSpec, zp: int) -> int:
    """The largest |x - zp| of codes of type t: 255 for u8, 2^15 + zp for int16."""
    return max(zp, 255 - zp) if t.dtype == "u8" else (1 << 15) + abs(zp)


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
    """(groups, kb, nb, total blocks) of a crossbar layer, from its weight's shape; a squeezed-out
    layer's blocks depend on its weight values, so its total is its `apu_rows`, which the
    verifier checks against them (`check_layer`)."""
    _, spec = layer.weight("weight")
    groups = layer.attr("groups", 1)
    k, n = matrix_shape(spec.shape, groups)
    kb, nb = block_grid(k, n, layer_hardware(hw, layer))
    if layer.attr("squeeze_out", False):
        return groups, kb, nb, layer.attr("apu_rows")
    return groups, kb, nb, groups * kb * nb


def attribute_problems(spec: OpSpec, attrs: dict, inputs: int) -> str | None:
    """What is wrong with `attrs` for an op of `spec` with `inputs` inputs, in words, or None."""
    missing = [a for a in spec.attrs if a not in attrs]
    unknown = [a for a in attrs if a not in spec.attrs and a not in spec.optional]
    if missing or unknown:
        allowed = ", ".join(list(spec.attrs) + [f"{a} (optional)" for a in spec.optional]) or "none"
        return (f"{'missing attributes ' + ', '.join(missing) if missing else ''}"
                f"{'; ' if missing and unknown else ''}{'unknown attributes ' + ', '.join(unknown) if unknown else ''}"
                f"; {spec.name} takes: {allowed}")
    for name, value in attrs.items():
        kind = spec.attrs.get(name) or spec.optional[name]
        problem = kind.problem(value, inputs)
        if problem:
            return f"attribute {name}: {problem}"
    return None


def either_problems(spec: OpSpec, attrs: dict, weights) -> str | None:
    """A requantization parameter given once: as an attribute (per layer) or as a weight of the
    same role (per channel), not both and not neither."""
    roles = {role for role, _, _ in weights}
    for name in spec.either:
        if (name in attrs) == (name in roles):
            how = "both as an attribute and as a weight" if name in attrs else "neither as an attribute nor as a weight"
            return f"{name} is given {how}; give it once (attribute: per layer, int32 weight: per channel)"
    return None


def channel_problems(spec: OpSpec, weights, tensors: dict, channels: int) -> str | None:
    """Per-channel parameters: one int32 per channel, each of the attribute's kind."""
    for role, name, tensor in weights:
        if role not in spec.either:
            continue
        if tensor.shape != (channels,):
            return f"weight {role}=@{name} is {tensor}; a per-channel {role} has one value per channel ({channels})"
        kind = spec.attrs.get(role) or spec.optional[role]
        values = np.asarray(tensors[name]).astype(np.int64)
        for value in (int(values.min()), int(values.max())) if values.size else ():
            problem = kind.problem(value, 1)
            if problem:
                return f"weight {role}=@{name}: {problem}"
    return None


def role_problems(spec: OpSpec, weights) -> str | None:
    roles = [role for role, _, _ in weights]
    for role in roles:
        if role not in spec.roles and role not in spec.optional_roles:
            known = ", ".join(list(spec.roles) + [f"{r} (optional)" for r in spec.optional_roles]) or "none"
            return f"unknown weight role '{role}'; {spec.name} takes: {known}"
        if roles.count(role) > 1:
            return f"weight role '{role}' given twice"
    missing = [r for r in spec.roles if r not in roles]
    if missing:
        return f"missing weight role {', '.join(missing)}"
    for role, name, tensor in weights:
        allowed = spec.roles.get(role) or spec.optional_roles[role]
        if tensor.dtype not in allowed:
            return f"weight {role}=@{name} is {tensor.dtype}; {spec.name} takes {role} as {', '.join(allowed)}"
    return None


def _code_type(attrs: dict) -> str:
    """A crossbar layer's output codes: int16 when `wide` (the residual stream), else uint8."""
    return "i16" if attrs.get("wide", False) else "u8"


def conv_output(x: TensorSpec, weight: TensorSpec, attrs: dict) -> tuple[TensorSpec | None, str]:
    """qconv2d's output type for input x, or (None, why not)."""
    if len(x.shape) != 4 or len(weight.shape) != 4:
        return None, f"qconv2d takes a 4-D input and a 4-D weight, got {x} and {weight}"
    groups = attrs["groups"]
    cout, cin_group, kh, kw = weight.shape
    if cout % groups or x.shape[1] != cin_group * groups:
        return None, (f"input {x} has {x.shape[1]} channels; weight {weight} with groups={groups} "
                      f"needs {cin_group * groups} and {cout} output channels divisible by {groups}")
    out_hw = [output_length(x.shape[2 + a], (kh, kw)[a], attrs["stride"][a], attrs["padding"][a],
                            attrs["dilation"][a]) for a in (0, 1)]
    if min(out_hw) < 1:
        return None, f"kernel {kh}x{kw} does not fit input {x} with padding {list(attrs['padding'])}"
    return TensorSpec(_code_type(attrs), (x.shape[0], cout, *out_hw)), ""


def linear_output(x: TensorSpec, weight: TensorSpec, attrs: dict) -> tuple[TensorSpec | None, str]:
    if len(weight.shape) != 2 or not x.shape or x.shape[-1] != weight.shape[1]:
        return None, f"qlinear takes an input [..., K] and a weight [N, K], got {x} and {weight}"
    return TensorSpec(_code_type(attrs), x.shape[:-1] + (weight.shape[0],)), ""


class Verifier:
    def __init__(self, program: Program, weights: dict[str, np.ndarray], hw: Hardware, source: str, filename: str):
        self.p, self.weights, self.hw = program, weights, hw
        self.source, self.filename = source, filename
        self.layers = {layer.name: layer for layer in program.layers}
        self.memory = int(machine_memory_bytes() * MEMORY_SHARE)
        self.levels: dict[str, int] = {}  # an int16 table index: its largest code (a `levels` requantization)

    def fail(self, instr: Instr | None, message: str):
        line, col = (instr.line, instr.column) if instr is not None and instr.line else (1, 1)
        what = f"{instr.opcode}: " if instr is not None else ""
        raise VerifyError(render_error(self.source, self.filename, line, col, what + message))

    def fail_line(self, line: int, message: str):
        raise VerifyError(render_error(self.source, self.filename, line or 1, 1, message))

    def run(self) -> None:
        self.check_ports()
        self.check_layers()
        self.check_streams_static()
        self.check_values()
        self.check_concurrency()

    # ---- header: ports, layers, tensors ------------------------------------------------------
    def check_tensor(self, line: int, where: str, name: str, spec: TensorSpec) -> None:
        if name not in self.weights:
            self.fail_line(line, f"{where}: weight @{name} is not in {self.p.weights[0]}")
        array = self.weights[name]
        if array.dtype != np.dtype(DTYPES[spec.dtype]) or tuple(array.shape) != spec.shape:
            self.fail_line(line, f"{where}: weight @{name}: the file holds {array.dtype}{list(array.shape)}, "
                                 f"the program says {spec}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            self.fail_line(line, f"{where}: weight @{name} holds NaN or infinite values")

    def check_ports(self) -> None:
        names = set()
        for kind, ports, spec in (("input", self.p.inputs, INPUT_ATTRS), ("output", self.p.outputs, OUTPUT_ATTRS)):
            for port in ports:
                where = f".{kind} {port.name}"
                if port.name in names:
                    self.fail_line(port.line, f"{where}: a second port of this name")
                names.add(port.name)
                attrs = dict(port.attrs)
                quantized = kind == "output" or attrs
                for name, value in attrs.items():
                    problem = (f"unknown attribute; allowed: {', '.join(spec)}" if name not in spec
                               else spec[name].problem(value, 0))
                    if problem:
                        self.fail_line(port.line, f"{where}: attribute {name}: {problem}")
                if quantized and set(attrs) != set(spec):
                    self.fail_line(port.line, f"{where}: give both scale and zp (a quantized port), "
                                              f"{'or neither' if kind == 'input' else 'always'}")
                # an input quantized by `load` may be any number (an integer mask the model casts
                # to float); an output is dequantized to f32
                if kind == "output" and port.type.dtype != "f32":
                    self.fail_line(port.line, f"{where}: a quantized output is f32 outside the chip, not "
                                              f"{port.type.dtype}")
                self.check_size(port.line, where, port.type)

    def check_size(self, line: int, where: str, spec: TensorSpec, factor: int = 1) -> None:
        if spec.nbytes * factor > self.memory:
            self.fail_line(line, f"{where}: {spec} needs {spec.nbytes * factor:,} B, more than this machine can "
                                 f"simulate ({self.memory:,} B, {MEMORY_SHARE:.0%} of its memory)")

    def check_layers(self) -> None:
        for layer in self.p.layers:
            where = f".layer {layer.name}"
            if sum(other.name == layer.name for other in self.p.layers) > 1:
                self.fail_line(layer.line, f"{where}: a second layer of this name")
            spec = LAYER_OPS.get(layer.op)
            if spec is None:
                self.fail_line(layer.line, f"{where}: op {layer.op} does not run on crossbars "
                                           f"({', '.join(LAYER_OPS)})")
            problem = (attribute_problems(spec, dict(layer.attrs), 1) or role_problems(spec, layer.weights)
                       or either_problems(spec, dict(layer.attrs), layer.weights))
            if problem:
                self.fail_line(layer.line, f"{where}: {problem}")
            for _, name, tensor in layer.weights:
                self.check_tensor(layer.line, where, name, tensor)
            _, weight = layer.weight("weight")
            problem = channel_problems(spec, layer.weights, self.weights, weight.shape[0] if weight.shape else 1)
            if problem:
                self.fail_line(layer.line, f"{where}: {problem}")
            self.check_layer_shapes(layer, where)

    def check_layer_shapes(self, layer: LayerDef, where: str) -> None:
        """Weight rank and groups, the bias, the tile map (docs/tiling.md) against the weight, and
        that the integer requantization cannot overflow int64 (machine.py's column terms)."""
        _, weight = layer.weight("weight")
        rank = 4 if layer.op == "qconv2d" else 2
        groups = layer.attr("groups", 1)
        if len(weight.shape) != rank or min(weight.shape) < 1 or weight.shape[0] % groups:
            self.fail_line(layer.line, f"{where}: {layer.op} takes a {rank}-D weight with output channels "
                                       f"divisible by groups={groups}, got {weight}")
        k, n = matrix_shape(weight.shape, groups)
        bias = layer.weight("bias")
        if bias is not None and bias[1].shape != (weight.shape[0],):
            self.fail_line(layer.line, f"{where}: bias {bias[1]} must be [{weight.shape[0]}], one per output channel")
        slice_bits = layer.attr("weight_slice_bits", None)
        problem = None if slice_bits is None else self.hw.slice_bits_problem(slice_bits)
        if problem:
            self.fail_line(layer.line, f"{where}: weight_slice_bits={slice_bits}: {problem}")
        kb, nb = block_grid(k, n, layer_hardware(self.hw, layer))
        segments = sum(1 for i in self.p.compute if i.opcode == "mvm" and i["layer"] == layer.name)
        apu_rows = groups * kb * nb
        if layer.attr("squeeze_out", False):
            if not self.hw.bit_sliced:
                self.fail_line(layer.line, f"{where}: squeeze_out needs a bit-sliced chip (weight_mapping = "
                                           f"\"bit_sliced\"); {self.hw.chip.name} packs a weight's cells")
            apu_rows = sliced_block_count(self.weights[layer.weight("weight")[0]], dict(layer.attrs), self.hw, True)
        tile = {"k": k, "n": n, "blocks": (kb, nb), "apu_rows": apu_rows, "segments": segments}
        for name, value in tile.items():
            if layer.attr(name) != value:
                self.fail_line(layer.line, f"{where}: attribute {name}={layer.attr(name)}, but the weight "
                                           f"{weight} and its mvm instructions give {name}={value}")
        largest_bias = int(np.abs(self.weights[bias[0]].astype(np.int64)).max()) if bias else 0
        # |acc - zero-point terms + bias| <= 4 k 255^2 + |bias|, times the multiplier, plus the rounding.
        # Per-channel parameters: the largest channel's bounds every channel's.
        multiplier, shift = (self.largest_param(layer, name) for name in ("multiplier", "shift"))
        bound = (4 * k * 255 * 255 + largest_bias) * multiplier + (256 << shift)
        if bound >= 1 << 63:
            self.fail_line(layer.line, f"{where}: multiplier={multiplier} and shift={shift} with K={k} and "
                                       f"|bias| up to {largest_bias} may overflow the int64 requantization")

    def largest_param(self, layer: LayerDef, name: str) -> int:
        """A requantization parameter of a layer: its attribute, or the largest of its per-channel weight."""
        given = layer.weight(name)
        if given is None:
            return layer.attr(name)
        return int(self.weights[given[0]].astype(np.int64).max())

    # ---- per-stream checks --------------------------------------------------------------------
    def check_streams_static(self) -> None:
        rows_total = self.hw.apu_rows
        signals: dict[str, Instr] = {}
        for stream in ("write", "compute"):
            for instr in self.p.stream(stream):
                if stream not in OPCODES[instr.opcode].streams:
                    self.fail(instr, f"runs in the {' and '.join(OPCODES[instr.opcode].streams)} stream, "
                                     f"not in the {stream} stream")
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
                    if instr["layer"] not in self.layers:
                        self.fail(instr, f"no .layer {instr['layer']}")
                    total = layer_grid(self.layers[instr["layer"]], self.hw)[3]
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
            segments = [i for i in self.p.compute if i.opcode == "mvm" and i["layer"] == layer.name]
            covered = [i["blocks"] for i in segments]
            total = layer_grid(layer, self.hw)[3]
            expected, ok = 0, True
            for first, last in covered:
                ok &= first == expected
                expected = last + 1
            if not ok or expected != total:
                self.fail_line(layer.line, f".layer {layer.name}: its mvm instructions must cover its blocks "
                                           f"0..{total - 1} once, in order; they cover {covered}")
            for instr in segments[1:]:
                if (instr["out"], instr["input"], instr["type"]) != (segments[0]["out"], segments[0]["input"],
                                                                     segments[0]["type"]):
                    self.fail(instr, f"a segment of {layer.name} must read, define and type the same values as "
                                     f"its first segment at line {segments[0].line}")

    def check_banks(self, instr: Instr) -> None:
        banks = self.hw.gbuffer.banks_bytes
        chosen = instr["in"] + instr["out"]
        if any(not 0 <= b < len(banks) for b in chosen):
            self.fail(instr, f"bank index out of range: the Gbuffer has banks 0..{len(banks) - 1}")
        if set(instr["in"]) & set(instr["out"]):
            self.fail(instr, "a bank holds a layer's inputs or its outputs, never both")

    # ---- values and their types ---------------------------------------------------------------
    def check_values(self) -> None:
        """Every value defined once before use and never overwritten, its declared type what its
        producer makes, bank capacities, stores."""
        defined: dict[str, TensorSpec] = {}
        started: set[str] = set()  # layers whose first mvm segment has run
        pending_bank = None
        total_bytes = 0
        inputs = {port.name: port for port in self.p.inputs}
        outputs = {port.name: port for port in self.p.outputs}
        stored: dict[str, Instr] = {}
        reads = {"mvm": lambda i: (i["input"],), "sfu": lambda i: i["inputs"], "store": lambda i: (i["value"],)}
        for instr in self.p.compute:
            op = instr.opcode
            if op == "bank":
                pending_bank = instr
            for name in reads.get(op, lambda i: ())(instr):
                if name not in defined:
                    self.fail(instr, f"%{name} is read before any instruction defines it")
            if op == "store":
                self.check_store(instr, outputs, stored, defined)
            if op not in ("load", "mvm", "sfu"):
                continue
            out = instr["out"]
            first_segment = op != "mvm" or instr["layer"] not in started
            if first_segment and out in defined:
                self.fail(instr, f"%{out} is defined twice: this would overwrite the value defined before")
            self.check_size(instr.line, f"{op} %{out}", instr["type"])
            produced = {"load": self.load_type, "mvm": self.mvm_type, "sfu": self.sfu_type}[op](instr, defined, inputs)
            if produced != instr["type"]:
                self.fail(instr, f"%{out} is declared {instr['type']}, but {op} makes {produced}")
            if op in ("mvm", "sfu") and pending_bank is not None:
                need_in = sum(defined[n].nbytes for n in reads[op](instr))
                self.check_capacity(pending_bank, need_in, instr["type"].nbytes, instr)
            if op == "mvm":
                started.add(instr["layer"])
                if instr["blocks"][1] + 1 < layer_grid(self.layers[instr["layer"]], self.hw)[3]:
                    continue  # the value is defined by the layer's last segment
            defined[out] = instr["type"]
            if op == "sfu" and "levels" in dict(instr["attrs"]):
                self.levels[out] = dict(instr["attrs"])["levels"]
            total_bytes += instr["type"].nbytes
            if total_bytes > self.memory:
                self.fail(instr, f"the program's values need more than {self.memory:,} B, more than this machine "
                                 f"can simulate ({MEMORY_SHARE:.0%} of its memory)")
        for port in self.p.outputs:
            if port.name not in stored:
                self.fail_line(port.line, f".output {port.name} is never stored")

    def check_store(self, instr: Instr, outputs: dict, stored: dict, defined: dict) -> None:
        port = outputs.get(instr["port"])
        if port is None:
            self.fail(instr, f"no .output {instr['port']}" + (f"; outputs: {', '.join(outputs)}" if outputs else ""))
        if instr["port"] in stored:
            self.fail(instr, f".output {port.name} is stored a second time (first at line {stored[port.name].line})")
        stored[port.name] = instr
        if instr["value"] != port.value:
            self.fail(instr, f".output {port.name} is %{port.value}, not %{instr['value']}")
        value = defined[instr["value"]]
        if value.dtype not in CODES or value.shape != port.type.shape:
            self.fail(instr, f"%{instr['value']} is {value}; .output {port.name} dequantizes a "
                             f"u8 or i16 [{','.join(map(str, port.type.shape))}]")

    def load_type(self, instr: Instr, defined: dict, inputs: dict) -> TensorSpec:
        port = inputs.get(instr["port"])
        if port is None:
            self.fail(instr, f"no .input {instr['port']}")
        return TensorSpec("u8", port.type.shape) if port.attrs else port.type

    def mvm_type(self, instr: Instr, defined: dict, inputs: dict) -> TensorSpec:
        layer = self.layers[instr["layer"]]
        x = defined[instr["input"]]
        if x.dtype != "u8":
            self.fail(instr, f"{layer.op} {layer.name} reads u8 activations, %{instr['input']} is {x}")
        _, weight = layer.weight("weight")
        attrs = dict(layer.attrs)
        out, why = conv_output(x, weight, attrs) if layer.op == "qconv2d" else linear_output(x, weight, attrs)
        if out is None:
            self.fail(instr, f"{layer.name}: {why}")
        k, n = matrix_shape(weight.shape, layer.attr("groups", 1))
        windows = math.prod(out.shape) // (n * layer.attr("groups", 1))
        # float32 windows [windows, k] and float64 partial sums [n, windows], per group
        self.check_size(instr.line, f"mvm {layer.name}", TensorSpec("f32", (layer.attr("groups", 1), windows, k + 2 * n)))
        return out

    def sfu_type(self, instr: Instr, defined: dict, inputs: dict) -> TensorSpec:
        spec = SFU_SPECS.get(instr["op"])
        if spec is None:
            self.fail(instr, f"unknown SFU op {instr['op']}; known: {', '.join(sorted(SFU_SPECS))}")
        operands = [defined[name] for name in instr["inputs"]]
        fewest, most = spec.inputs
        if not fewest <= len(operands) <= most:
            self.fail(instr, f"{spec.name} takes {fewest}..{most} inputs, got {len(operands)}")
        attrs = dict(instr["attrs"])
        problem = (attribute_problems(spec, attrs, len(operands)) or role_problems(spec, instr["weights"])
                   or either_problems(spec, attrs, instr["weights"]))
        if problem:
            self.fail(instr, f"{spec.name}: {problem}")
        for name, operand in zip(instr["inputs"], operands):
            if operand.dtype not in spec.input_dtypes:
                self.fail(instr, f"{spec.name} takes {', '.join(spec.input_dtypes)} inputs, %{name} is {operand}")
        for _role, name, tensor in instr["weights"]:
            self.check_tensor(instr.line, f"sfu {spec.name}", name, tensor)
        if spec.either and operands[0].shape:
            rank = len(operands[0].shape)
            dim = attrs.get("dim", -1)
            channels = operands[0].shape[dim % rank] if -rank <= dim < rank else 1
            problem = channel_problems(spec, instr["weights"], self.weights, channels)
            if problem:
                self.fail(instr, f"{spec.name}: {problem}")
        self.check_tables(instr, operands)
        largest = max([t.nbytes for t in operands] + [instr["type"].nbytes])
        self.check_size(instr.line, f"sfu {spec.name}", TensorSpec("u8", (largest,)), TEMPORARY_FACTOR)
        return self.run_abstractly(instr, operands)

    def check_tables(self, instr: Instr, operands: list[TensorSpec]) -> None:
        """What zero-filled operands cannot show: lookup tables are indexed by data (their shapes,
        the range of the codes that index them and, for the softmaxes, their values: a positive
        first entry), and the integer products of qmatmul and qmul grow with their operands."""
        op, attrs = instr["op"], dict(instr["attrs"])
        table = next((self.weights[name] for role, name, _ in instr["weights"] if role == "table"), None)
        if op == "qlut":
            self.check_lut(instr, operands[0], table, attrs)
        if op == "maxpool2d" and len(operands[0].shape) >= 2:
            self.check_pool_windows(instr, operands[0], attrs)
        if op in ("qmatmul", "qmul") and operands[0].shape:
            zps = (attrs["a_zp"], attrs["b_zp"]) if op == "qmatmul" else attrs["zps"]
            left, right = (_largest_offset(t, zp) for t, zp in zip(operands, zps))
            inner = operands[0].shape[-1] if op == "qmatmul" else 1
            largest = inner * left * right
            # qmatmul sums in float64, exact below 2^53; requantization multiplies in int64
            if largest >= 1 << 53 or largest * attrs["multiplier"] + (1 << (attrs["shift"] - 1)) >= 1 << 63:
                self.fail(instr, f"{op} of {operands[0]} and {operands[1]} (K={inner}) with multiplier="
                                 f"{attrs['multiplier']} may overflow the int64 requantization")
        if op in ("qsoftmax", "qmasked_softmax"):
            # qmasked_softmax indexes its table by max - x clipped to 0..255; qsoftmax by max - x
            # clipped to the table's last entry, so any length serves
            shortest = U8_CODES if op == "qmasked_softmax" else 1
            values = table.astype(np.int64)
            if (table.ndim != 1 or not shortest <= len(table) <= SOFTMAX_TABLE_LENGTH or values.min() < 0
                    or values.max() > SOFTMAX_TABLE_MAX or values[0] < 1):
                self.fail(instr, f"{op} takes a table [L], {shortest} <= L <= {SOFTMAX_TABLE_LENGTH}, of "
                                 f"exponentials in 0..{SOFTMAX_TABLE_MAX} with table[0] > 0, got {list(table.shape)}")

    def check_pool_windows(self, instr: Instr, x: TensorSpec, attrs: dict) -> None:
        """maxpool2d gathers every window's taps ([..., out_h, k_h, out_w, k_w]) from a padded copy of
        its input: temporaries that grow with the kernel, the dilation and the padding, not with x."""
        taps, padded = 1, 1
        for size, k, s, p, d in zip(x.shape[-2:], attrs["kernel"], attrs["stride"], attrs["padding"],
                                    attrs["dilation"]):
            out = max(1, output_length(size, k, s, p, d, attrs["ceil_mode"]))
            taps *= out * k
            padded *= max(size, (out - 1) * s + (k - 1) * d + 1) + 2 * p
        lead = math.prod(x.shape[:-2])
        self.check_size(instr.line, "sfu maxpool2d's windows", TensorSpec(x.dtype, (lead, taps + padded)), 2)

    def check_lut(self, instr: Instr, x: TensorSpec, table: np.ndarray, attrs: dict) -> None:
        """A table [L] or [C, L] (C the input's size along dim) with an entry for every code the
        input can hold: 256 for u8, levels + 1 for an int16 index made by a `levels` requantization."""
        name = instr["inputs"][0]
        codes = U8_CODES if x.dtype == "u8" else self.levels.get(name, 0) + 1 if name in self.levels else None
        if codes is None:
            self.fail(instr, f"qlut indexes its table by %{name}, {x}, whose codes may be negative or past any "
                             f"table: an int16 index comes from a qrequant with levels")
        rank = len(x.shape)
        dim = attrs.get("dim", 1)
        rows_fit = table.ndim == 1 or (table.ndim == 2 and rank and -rank <= dim < rank
                                       and table.shape[0] == x.shape[dim % rank])
        if not rows_fit or not codes <= table.shape[-1] <= LUT_TABLE_LENGTH:
            self.fail(instr, f"qlut takes a table [L] or [C, L] with C the input's size along dim and "
                             f"{codes} <= L <= {LUT_TABLE_LENGTH} (an entry per code of {x}), got {list(table.shape)}")

    def run_abstractly(self, instr: Instr, operands: list[TensorSpec]) -> TensorSpec:
        """The op's own type: run it on zero-filled operands of the declared types (their pages
        are not touched until written) and read off its result."""
        xs = [np.zeros(t.shape, DTYPES[t.dtype]) for t in operands]
        weights = {role: self.weights[name] for role, name, _ in instr["weights"]}
        try:
            with np.errstate(all="ignore"):
                result = SFU_OPS[instr["op"]](xs, dict(instr["attrs"]), weights)
        except Exception as err:  # the op's own check, reworded with the instruction's place
            self.fail(instr, f"{instr['op']}: the operands {', '.join(map(str, operands)) or '(none)'} do not fit: "
                             f"{type(err).__name__}: {err}")
        dtype = next((name for name, t in DTYPES.items() if np.dtype(t) == result.dtype), None)
        if dtype is None:
            self.fail(instr, f"{instr['op']} makes {result.dtype} values, which no .aras type holds")
        return TensorSpec(dtype, result.shape)

    def check_capacity(self, bank: Instr, need_in: int, need_out: int, instr: Instr) -> None:
        banks = self.hw.gbuffer.banks_bytes
        have_in, have_out = (sum(banks[b] for b in bank[side]) for side in ("in", "out"))
        short = max(0, need_in - have_in) + max(0, need_out - have_out)
        if short > bank["spill"]:
            self.fail(instr, f"inputs {need_in:,} B and output {need_out:,} B do not fit the banks chosen at line "
                             f"{bank.line} (in {have_in:,} B, out {have_out:,} B) plus spill={bank['spill']:,} B")

    # ---- concurrency --------------------------------------------------------------------------
    def check_concurrency(self) -> None:
        """Run both streams abstractly, honouring waits, with vector clocks; check the row protocol.
        A `release` counts as writing nothing into its rows."""
        streams = {"write": self.p.write, "compute": self.p.compute}
        pc = {"write": 0, "compute": 0}
        clock = {"write": [0, 0], "compute": [0, 0]}
        axis = {"write": 0, "compute": 1}
        raised: dict[str, tuple[int, int]] = {}
        writes: dict[int, list[tuple[Event, tuple[str, int] | None]]] = {}
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
                    elif instr.opcode in ("wr", "release"):
                        what = (instr["layer"], instr["block"]) if instr.opcode == "wr" else None
                        for r in instr["rows"]:
                            writes.setdefault(r, []).append((event, what))
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
                # the write the mvm finds: the one every other write ordered before the mvm precedes. A
                # stream's events are ordered, so only each stream's last one can be it (a release
                # in compute and a wr in write may be unordered: a race).
                last_of = {}
                for w, what in seen:
                    if w.stream not in last_of or last_of[w.stream][0].index < w.index:
                        last_of[w.stream] = (w, what)
                latest = [(w, what) for w, what in last_of.values()
                          if not any(w.before(other) for other, _ in last_of.values())]
                if len(latest) > 1:
                    (a, _), (b, _) = latest[:2]
                    first_write = self.p.stream(a.stream)[a.index]
                    second = self.p.stream(b.stream)[b.index]
                    self.fail(instr, f"APU row {row}: the {first_write.opcode} at line {first_write.line} and the "
                                     f"{second.opcode} at line {second.line} are not ordered, so this mvm may find "
                                     f"either's contents")
                if not latest or latest[0][1] != wanted:
                    held = "nothing" if not latest or latest[0][1] is None else f"{latest[0][1][0]}[{latest[0][1][1]}]"
                    released = " (a release empties it)" if latest and latest[0][1] is None else ""
                    self.fail(instr, f"APU row {row} must hold {wanted[0]}[{wanted[1]}] when this mvm reads it, "
                                     f"but the writes ordered before it leave {held} there{released}")
                later = [w for w, _ in history if not w.before(event) and w is not latest[0][0]]
                racing = [w for w in later if not event.before(w)]
                if racing:
                    write = self.p.stream(racing[0].stream)[racing[0].index]
                    self.fail(write, f"APU row {row} may be written here while the mvm at line {instr.line} "
                                     f"computes on it: wait for that layer's release first")
