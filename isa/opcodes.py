"""The ARAS opcode table: the single source of truth for what instructions exist, which
stream runs them, their text form and their documentation (docs/isa.md has the long form:
semantics, latency, energy). The parser has one grammar rule per opcode, the backend emits
each, the runtime has one handler per opcode; tests check all four agree with this table."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import attributes as A
from .literals import format_attrs as fmt_attrs
from .program import Instr


@dataclass(frozen=True)
class Opcode:
    name: str
    streams: tuple[str, ...]
    summary: str
    format: Callable[[Instr], str]


def fmt_weights(weights) -> str:
    return "[" + ", ".join(f"{role}=@{name} : {spec}" for role, name, spec in weights) + "]"


def fmt_rows(rows) -> str:
    """rows(0..3, 7): consecutive runs compressed, order kept (it pairs rows with blocks)."""
    spans, start = [], None
    for i, r in enumerate(rows):
        if start is None:
            start = r
        if i + 1 == len(rows) or rows[i + 1] != r + 1:
            spans.append(f"{start}" if start == r else f"{start}..{r}")
            start = None
    return "rows(" + ", ".join(spans) + ")"


def _wr(i):
    return f"wr {i['layer']}[{i['block']}] -> {fmt_rows(i['rows'])}"


def _mvm(i):
    a, b = i["blocks"]
    return f"mvm %{i['out']} = {i['layer']}(%{i['input']}) blocks({a}..{b}) {fmt_rows(i['rows'])} : {i['type']}"


def _sfu(i):
    text = f"sfu %{i['out']} = {i['op']}(" + ", ".join(f"%{v}" for v in i["inputs"]) + ")"
    if i["attrs"]:
        text += " " + fmt_attrs(i["attrs"])
    if i["weights"]:
        text += " " + fmt_weights(i["weights"])
    return text + f" : {i['type']}"


OPCODES: dict[str, Opcode] = {op.name: op for op in [
    Opcode("wr", ("write",), "write one 128x128 weight block of a layer into APU rows (4 crossbars each)", _wr),
    Opcode("signal", ("write", "compute"), "raise a named token", lambda i: f"signal ${i['token']}"),
    Opcode("wait", ("write", "compute"), "stall this stream until a token is raised", lambda i: f"wait ${i['token']}"),
    Opcode("load", ("compute",), "bring a model input from main memory into the Gbuffer, quantized",
           lambda i: f"load %{i['out']} <- {i['port']} : {i['type']}"),
    Opcode("store", ("compute",), "send a Gbuffer value to main memory as a model output, dequantized",
           lambda i: f"store %{i['value']} -> {i['port']}"),
    Opcode("bank", ("compute",), "power the Gbuffer banks holding the next layer's inputs and outputs",
           lambda i: f"bank {fmt_attrs((('in', i['in']), ('out', i['out'])) + ((('spill', i['spill']),) if i['spill'] else ()))}"),
    Opcode("mvm", ("compute",), "compute blocks of a crossbar layer over all its windows; the last "
           "segment requantizes", _mvm),
    Opcode("sfu", ("compute",), "a special-function-unit step (pooling, LUT, softmax, add, ...)", _sfu),
    Opcode("release", ("compute",), "free APU rows whose layer has computed", lambda i: f"release {fmt_rows(i['rows'])}"),
]}


# ---- the specification of every attribute, weight role and operand ----------------------------
# One line per attribute, role or op: the verifier (runtime/verify.py) checks programs against
# these tables and docs/isa.md lists them. Adding an attribute, a role or a dtype is one entry.

U8, I8, I16, I32, I64, F32 = ("u8",), ("i8",), ("i16",), ("i32",), ("i64",), ("f32",)
CODES = ("u8", "i16")                       # quantized values: uint8, or int16 where `wide` (the residual stream)
INTEGER = ("u8", "i8", "i16", "i32", "i64", "bool")
ANY = ("u8", "i8", "i16", "i32", "i64", "f32", "bool")
DTYPE_NAMES = ("f32", "i64", "i32", "u8", "i8", "bool")   # cast's targets (runtime/sfu.py NUMPY_TYPES)


@dataclass(frozen=True)
class OpSpec:
    """What a layer op or SFU op accepts: its attributes (required and optional) with their
    kinds, its weight roles with their dtypes, how many inputs and of which dtypes.
    `either`: requantization parameters given as an attribute (one for the layer) or as an int32
    weight of the same role (one per output channel), exactly one of the two."""
    name: str
    attrs: dict = field(default_factory=dict)            # name -> kind (isa/attributes.py)
    optional: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)            # role -> allowed dtypes
    optional_roles: dict = field(default_factory=dict)
    inputs: tuple[int, int] = (1, 1)                     # (fewest, most)
    input_dtypes: tuple[str, ...] = U8
    either: tuple[str, ...] = ()


_REQUANTIZE = {"out_zp": A.ZERO_POINT, "multiplier": A.MULTIPLIER, "shift": A.SHIFT}
# The per-channel form of a requantization parameter: one int32 per output channel (isa/program.py
# CHANNEL_PARAMS); the verifier checks each value against the attribute's kind.
_CHANNEL_KINDS = {"w_zp": A.ZERO_POINT, **_REQUANTIZE}
_CHANNEL_ROLES = {name: I32 for name in _CHANNEL_KINDS}
_WIDE = {"wide": A.Bool()}
_POOL = {"kernel": A.PAIR_POSITIVE, "stride": A.PAIR_POSITIVE, "padding": A.PAIR_PADDING, "ceil_mode": A.Bool()}
_TILE_MAP = {"k": A.Int(1, 1 << 40), "n": A.Int(1, 1 << 40), "blocks": A.Ints(A.Int(1, 1 << 40), length=2),
             "apu_rows": A.Int(1, 1 << 40), "segments": A.Int(1, 1 << 40)}  # docs/tiling.md
_CROSSBAR = {"x_zp": A.ZERO_POINT, **_TILE_MAP}
# center_offset: the layer's filters are centered for differential cells (arasc/passes/center_offset.py);
# input_slice_bits: input bits a crossbar step drives, speculating (arasc/passes/input_slicing.py);
# dynamic_precision: all-zero top input bit-planes skipped (arasc/passes/dynamic_precision.py); docs/adc.md
# weight_bits: the layer's codes fit that many bits (arasc/passes/weight_bits.py); squeeze_out: on a
# bit-sliced chip, slice tiles zero for every weight are neither written nor computed (passes/squeeze_out.py);
# weight_slice_bits: the layer's weight slices hold that many bits, its cells as many levels (passes/weight_slicing.py)
_CROSSBAR_OPTIONAL = {"relu": A.Bool(), **_WIDE, **_CHANNEL_KINDS, "center_offset": A.Bool(),
                      "input_slice_bits": A.Int(1, 8), "dynamic_precision": A.Bool(), "weight_bits": A.Int(1, 8),
                      "squeeze_out": A.Bool(), "weight_slice_bits": A.Int(1, 4)}

LAYER_OPS: dict[str, OpSpec] = {s.name: s for s in [
    OpSpec("qconv2d", {"stride": A.PAIR_POSITIVE, "padding": A.PAIR_PADDING, "dilation": A.PAIR_POSITIVE,
                       "groups": A.Int(1, 1 << 20), **_CROSSBAR},
           dict(_CROSSBAR_OPTIONAL), {"weight": U8}, {"bias": I32, **_CHANNEL_ROLES}, either=tuple(_CHANNEL_KINDS)),
    OpSpec("qlinear", dict(_CROSSBAR), dict(_CROSSBAR_OPTIONAL), {"weight": U8}, {"bias": I32, **_CHANNEL_ROLES},
           either=tuple(_CHANNEL_KINDS)),
]}

SFU_SPECS: dict[str, OpSpec] = {s.name: s for s in [
    OpSpec("quantize", {"scale": A.SCALE, "zp": A.ZERO_POINT}, input_dtypes=F32),
    OpSpec("dequantize", {"scale": A.SCALE, "zp": A.ZERO_POINT}, input_dtypes=CODES),
    OpSpec("qmatmul", {"a_zp": A.ZERO_POINT, "b_zp": A.ZERO_POINT, **_REQUANTIZE}, {"relu": A.Bool(), **_WIDE},
           inputs=(2, 2), input_dtypes=CODES),
    OpSpec("qadd", {"zps": A.Ints(A.ZERO_POINT, A.PER_INPUT), "multipliers": A.Ints(A.SIGNED_MULTIPLIER, A.PER_INPUT),
                    "shift": A.SHIFT, "out_zp": A.ZERO_POINT}, {"relu": A.Bool(), **_WIDE}, inputs=(1, 64),
           input_dtypes=CODES),
    OpSpec("qmul", {"zps": A.Ints(A.ZERO_POINT, 2), **_REQUANTIZE}, {"relu": A.Bool(), **_WIDE}, inputs=(2, 2),
           input_dtypes=CODES),
    OpSpec("qconcat", {"dim": A.DIM, "zps": A.Ints(A.ZERO_POINT, A.PER_INPUT),
                       "multipliers": A.Ints(A.MULTIPLIER, A.PER_INPUT), "shift": A.SHIFT, "out_zp": A.ZERO_POINT},
           inputs=(1, 1024), input_dtypes=CODES),
    OpSpec("qrequant", {"x_zp": A.WIDE_ZERO_POINT}, {"dim": A.DIM, **_WIDE, "levels": A.LEVELS, **_REQUANTIZE,
                                                "out_zp": A.WIDE_ZERO_POINT},
           optional_roles={name: I32 for name in _REQUANTIZE}, input_dtypes=CODES, either=tuple(_REQUANTIZE)),
    OpSpec("qrelu", {"zp": A.ZERO_POINT}, input_dtypes=CODES),
    OpSpec("qlut", optional={"dim": A.DIM}, roles={"table": CODES}, input_dtypes=CODES),
    OpSpec("qavgpool2d", {**_POOL, "count_include_pad": A.Bool(), "zp": A.ZERO_POINT}),
    OpSpec("qadaptive_avgpool2d", {"output_size": A.Ints(A.Int(1, 1 << 16), length=2)}),
    OpSpec("qmean", {"dims": A.Ints(A.DIM, min_length=1), "keepdim": A.Bool()}),
    OpSpec("qsoftmax", {"dim": A.DIM, **_REQUANTIZE}, dict(_WIDE), roles={"table": I32}, input_dtypes=CODES),
    OpSpec("qmasked_softmax", {"dim": A.DIM, **_REQUANTIZE}, dict(_WIDE), roles={"table": I32}, inputs=(2, 2),
           input_dtypes=CODES + ("bool",)),
    OpSpec("qlayernorm", {"ndim": A.Int(1, 8), "eps": A.EPSILON, "x_scale": A.SCALE,
                          "x_zp": A.ZERO_POINT, "out_scale": A.SCALE, "out_zp": A.ZERO_POINT}, dict(_WIDE),
           optional_roles={"weight": F32, "bias": F32}, input_dtypes=CODES),
    OpSpec("const", roles={"value": ANY}, inputs=(0, 0)),
    OpSpec("reshape", {"shape": A.Ints(A.Int(-1, 1 << 40))}, input_dtypes=ANY),
    OpSpec("permute", {"dims": A.Ints(A.DIM)}, input_dtypes=ANY),
    OpSpec("slice", {"dim": A.DIM, "start": A.Int(), "end": A.Int(), "step": A.Int(1, A.INT64_MAX)},
           input_dtypes=ANY),
    OpSpec("select", {"dim": A.DIM, "index": A.Int()}, input_dtypes=ANY),
    OpSpec("embedding", roles={"table": ANY}, input_dtypes=("i32", "i64")),
    OpSpec("concat", {"dim": A.DIM}, inputs=(1, 1024), input_dtypes=ANY),
    OpSpec("maxpool2d", {**_POOL, "dilation": A.PAIR_POSITIVE}, input_dtypes=("u8", "i8", "i16", "i32", "i64")),
    OpSpec("relu", input_dtypes=INTEGER),
    OpSpec("add", optional={"scalar": A.Int()}, inputs=(1, 2), input_dtypes=INTEGER),
    OpSpec("sub", optional={"scalar": A.Int()}, inputs=(1, 2), input_dtypes=INTEGER),
    OpSpec("mul", optional={"scalar": A.Int()}, inputs=(1, 2), input_dtypes=INTEGER),
    OpSpec("avgpool2d", {**_POOL, "count_include_pad": A.Bool()}, input_dtypes=I64),
    OpSpec("compare", {"cmp": A.Choice(("eq", "ne", "lt", "le", "gt", "ge"))}, {"scalar": A.Int()}, inputs=(1, 2),
           input_dtypes=INTEGER),
    OpSpec("logical", {"fn": A.Choice(("and", "or", "xor"))}, inputs=(2, 2), input_dtypes=("bool",)),
    OpSpec("logical_not", input_dtypes=INTEGER),
    OpSpec("cumsum", {"dim": A.DIM}, input_dtypes=INTEGER),
    OpSpec("cast", {"dtype": A.Choice(DTYPE_NAMES)}, input_dtypes=INTEGER),
    OpSpec("where", inputs=(3, 3), input_dtypes=ANY),
    OpSpec("expand", {"shape": A.Ints(A.Int(-1, 1 << 40))}, input_dtypes=ANY),
    OpSpec("take", roles={"positions": ("i32", "i64")}, input_dtypes=ANY),
]}

# `.input NAME TYPE {scale=, zp=}`: a float input quantized by `load` (both or neither attribute);
# `.output NAME %VALUE TYPE {scale=, zp=}`: a uint8 value dequantized by `store`.
INPUT_ATTRS = {"scale": A.SCALE, "zp": A.ZERO_POINT}
OUTPUT_ATTRS = {"scale": A.SCALE, "zp": A.ZERO_POINT}
# `bank {in=[...], out=[...], spill=BYTES}`: Gbuffer bank indices and bytes that may spill.
BANK_ATTRS = {"in": A.Ints(A.Int(0, 1 << 16), max_length=1 << 16),
              "out": A.Ints(A.Int(0, 1 << 16), max_length=1 << 16), "spill": A.Int(0, 1 << 62)}


def spec_table_markdown() -> str:
    """The attribute, role and operand table of docs/isa.md, made from the tables above (a test
    checks the document holds it as it is)."""
    def kinds(spec: OpSpec) -> str:
        required = [f"`{name}` {kind}" for name, kind in spec.attrs.items()]
        optional = [f"`{name}` (optional) {kind}" for name, kind in spec.optional.items()]
        return "; ".join(required + optional) or "none"

    def roles(spec: OpSpec) -> str:
        listed = [f"`{r}` {'/'.join(d)}" for r, d in spec.roles.items()]
        listed += [f"`{r}` (optional) {'/'.join(d)}" for r, d in spec.optional_roles.items()]
        return ", ".join(listed) or "none"

    rows = ["| op | inputs | attributes | weight roles |", "|---|---|---|---|"]
    for kind, table in (("layer", LAYER_OPS), ("sfu", SFU_SPECS)):
        for spec in table.values():
            fewest, most = spec.inputs
            count = str(fewest) if fewest == most else f"{fewest}..{most}"
            inputs = "-" if kind == "layer" else f"{count} x {'/'.join(spec.input_dtypes)}" if most else "0"
            rows.append(f"| {kind} `{spec.name}` | {inputs} | {kinds(spec)} | {roles(spec)} |")
    for name, attrs in (("`.input`", INPUT_ATTRS), ("`.output`", OUTPUT_ATTRS), ("`bank`", BANK_ATTRS)):
        rows.append(f"| {name} | - | {'; '.join(f'`{k}` {v}' for k, v in attrs.items())} | none |")
    return "\n".join(rows)
