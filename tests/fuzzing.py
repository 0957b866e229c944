"""The fuzzer shared by tests/test_fuzz.py (a few thousand cases in CI) and benchmarks/fuzz.py
(long runs): hostile variants of real compiled programs, their side files, hardware files and
inputs, run in-process through the runtime's own entry points and judged as the CLI would
report them, plus a share through the real CLI.

Two caches keep long runs fast without skipping a check: a text that differs from one already
parsed only in the 64 hex digits of its `.hw`/`.weights` digests (side-file and hardware cases)
reuses that parse with its own digests; the reference outputs are kept per (program text, weight
file, input). Both are pure functions of their keys.

Outcomes (issue 14's table):
- ok:           accepted and run, outputs equal to a reference evaluation of the program's
                dataflow by the IR's torch definitions of every op (arasc/ir/ops.py, qops.py):
                crossbar layers, SFU ops, input quantization and output dequantization; nothing
                of the machine and nothing of the interpreter's numpy SFU (runtime/sfu.py);
- wrong:        accepted and run, but the outputs differ from that reference;
- bad-located:  refused as bad input with file:line:col, a TOML [table] field, or a file named;
- bad-unlocated: refused as bad input without any of these;
- internal:     any other exception (the CLI's exit 1);
- traceback:    the CLI printed a Python traceback;
- hang, kill:   no answer within the time limit, or the process died.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import load as load_tensors

from arasc.cli import bad_input_errors
from arasc.isa import attributes as A
from arasc.isa.hardware import (
    check_interpretable,
    default_hardware,
    dumps_hardware,
    hardware_fingerprint,
    loads_hardware,
)
from arasc.isa.opcodes import LAYER_OPS, SFU_SPECS
from arasc.isa.parser import parse_program
from arasc.isa.program import DTYPES
from arasc.isa.weights import WeightFileError, weights_bytes
from arasc.runtime.run import RuntimeInputError, decode_program, read_inputs, run_loaded
from arasc.runtime.verify import Verifier

OUTCOMES = ("ok", "wrong", "bad-located", "bad-unlocated", "internal", "traceback", "hang", "kill")
PROGRAM, WEIGHTS, HW = "fuzz.aras", "fuzz.arasw", "fuzz.toml"
CASE_SECONDS = 60
LOCATED = re.compile(r"^(\S+:\d+:\d+: |.*\[\w+\]( \w+)?: |.*(fuzz\.aras|fuzz\.arasw|fuzz\.toml|--input \S+|--output "
                     r"\S+|-o \S+|--calib \S+)\b)")


@dataclass
class Base:
    """A compiled program: its text, its side file and its example input."""
    name: str
    text: str
    weights: bytes
    inputs: dict = field(default_factory=dict)


@dataclass
class Case:
    text: str
    weights: bytes
    hw_text: str | None = None
    inputs: dict | None = None       # name -> array given as --input (None: the example input)
    how: str = ""


def base_from_files(name: str, program_path: str) -> Base:
    with open(program_path) as f:
        text = f.read()
    with open(os.path.splitext(program_path)[0] + ".arasw", "rb") as f:
        data = f.read()
    text = re.sub(r"^\.weights \S+ ", f".weights {WEIGHTS} ", text, count=1, flags=re.M)
    return Base(name, text, data)


# ---- running a case in-process ------------------------------------------------------------------

def run_in_process(case: Case) -> tuple[str, str]:
    """(outcome, detail) of one case, as `arasc run` would end on it."""
    try:
        outputs, reference = _run(case)
    except bad_input_errors() as err:
        first = str(err).splitlines()[0] if str(err) else ""
        return ("bad-located" if LOCATED.match(first) else "bad-unlocated"), first
    except _Timeout:
        return "hang", case.how
    except Exception as err:  # the CLI's exit 1
        return "internal", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-4)}"
    for name, want in reference.items():
        got = outputs.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype or not np.array_equal(got, want):
            return "wrong", f"{case.how}: output {name} differs from the reference"
    return "ok", ""


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _run(case: Case):
    # A hang is CASE_SECONDS of this process's own CPU time (ITIMER_PROF), not of wall time: on a
    # shared, loaded machine a starved case is slow, not hung.
    previous = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, CASE_SECONDS)
    try:
        source = decode_program(case.text.encode("utf-8", errors="surrogateescape"), PROGRAM)
        program = _parse(source)
        hw = loads_hardware(case.hw_text, HW) if case.hw_text is not None else default_hardware()
        if hardware_fingerprint(hw) != program.hw[1]:
            raise RuntimeInputError(f"{PROGRAM}: compiled for other hardware")
        check_interpretable(hw, HW)
        if hashlib.sha256(case.weights).hexdigest() != program.weights[1]:
            raise WeightFileError(f"{PROGRAM}: checksum mismatch for {WEIGHTS}")
        try:
            weights = load_tensors(case.weights)
        except Exception as err:
            raise WeightFileError(f"{WEIGHTS}: not a readable safetensors weight file ({err})") from None
        Verifier(program, weights, hw, source, PROGRAM).run()
        if case.inputs is None:
            inputs = read_inputs(program, weights, None)
            result = run_loaded(program, weights, hw, inputs, PROGRAM, None)
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "x.npz")
                np.savez(path, **case.inputs)
                inputs = read_inputs(program, weights, path)
                result = run_loaded(program, weights, hw, inputs, PROGRAM, path)
        return result.outputs, _reference(source, case, program, weights, inputs)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


_DIGESTS = re.compile(r"^(\.(?:hw|weights) \S+ sha256=)[0-9a-f]{64}$", re.M)
_PLACEHOLDER = "0123456789abcdef" * 4
_parsed: dict[str, object] = {}
_references: dict[tuple, dict] = {}
_CACHE_ENTRIES = 4096


def _without_digests(source: str) -> str:
    return _DIGESTS.sub(lambda m: m.group(1) + _PLACEHOLDER, source)


def _parse(source: str):
    """parse_program(source), reusing an earlier parse of the same text up to its two digests
    (the grammar reads a digest as an opaque 64-hex token, so only the values differ)."""
    key = _without_digests(source)
    if len(_DIGESTS.findall(source)) != 2:
        return parse_program(source, PROGRAM)
    if key not in _parsed:
        if len(_parsed) >= _CACHE_ENTRIES:
            _parsed.clear()
        _parsed[key] = parse_program(source, PROGRAM)
    digests = dict(re.findall(r"^\.(hw|weights) \S+ sha256=([0-9a-f]{64})$", source, flags=re.M))
    cached = _parsed[key]
    return dataclasses.replace(cached, hw=(cached.hw[0], digests["hw"]), weights=(cached.weights[0], digests["weights"]))


def _inputs_key(inputs: dict | None) -> tuple:
    if inputs is None:
        return ()
    return tuple((name, str(a.dtype), a.shape, id(a) if a.dtype == object else hashlib.sha256(a.tobytes()).hexdigest())
                 for name, a in sorted(inputs.items()))


def _reference(source: str, case: Case, program, weights, inputs) -> dict[str, np.ndarray]:
    key = (_without_digests(source), program.weights[1], _inputs_key(case.inputs))
    if key not in _references:
        if len(_references) >= _CACHE_ENTRIES:
            _references.clear()
        _references[key] = reference_outputs(program, weights, inputs)
    return _references[key]


def _ir_op(name: str, xs: list, attrs: dict, weights: dict) -> np.ndarray:
    """One op by the IR's torch definition (arasc/ir/ops.py, qops.py), the compiler's meaning of it,
    written apart from the interpreter's numpy SFU (runtime/sfu.py)."""
    import torch

    from arasc.ir.ops import OPS

    opdef = OPS[name]
    tensor = lambda x: torch.from_numpy(np.array(x))  # noqa: E731  (a writable copy)
    out = opdef.fn([tensor(x) for x in xs], {**opdef.defaults, **attrs},
                   {role: tensor(w) for role, w in weights.items()})
    return np.asarray(out.numpy())


def reference_outputs(program, weights, inputs) -> dict[str, np.ndarray]:
    """The program's dataflow evaluated without the machine and without the interpreter: values by
    name in compute order, every op (crossbar layer, SFU op, the ports' quantize and dequantize) by
    the IR's torch definition on the program's attributes and weights."""
    values: dict[str, np.ndarray] = {}
    outputs = {}
    layers = {layer.name: layer for layer in program.layers}
    ports = {port.name: port for port in program.inputs + program.outputs}
    for instr in program.compute:
        op = instr.opcode
        if op == "load":
            port = ports[instr["port"]]
            x = inputs[port.name]
            values[instr["out"]] = _ir_op("quantize", [x], dict(port.attrs), {}) if port.attrs else x
        elif op == "mvm":
            layer = layers[instr["layer"]]
            if instr["blocks"][1] + 1 == layer.attr("apu_rows"):
                tensors = {role: weights[name] for role, name, _ in layer.weights}
                values[instr["out"]] = _ir_op(layer.op, [values[instr["input"]]], {"relu": False, **dict(layer.attrs)},
                                              tensors)
        elif op == "sfu":
            tensors = {role: weights[name] for role, name, _ in instr["weights"]}
            values[instr["out"]] = _ir_op(instr["op"], [values[n] for n in instr["inputs"]], dict(instr["attrs"]),
                                          tensors)
        elif op == "store":
            port = ports[instr["port"]]
            outputs[port.name] = _ir_op("dequantize", [values[instr["value"]]], dict(port.attrs), {})
    return outputs


# ---- mutations ------------------------------------------------------------------------------------

INTERESTING_INTS = ["0", "1", "-1", "-2", "2", "7", "127", "128", "255", "256", "300", "1000", "65535", "65536",
                    str(2**31 - 1), str(2**31), str(2**62), str(2**63), str(10**12), "9" * 30, "9" * 5000]
INTERESTING_FLOATS = ["0", "0.0", "-0.5", "nan", "inf", "-inf", "1e-300", "1e300", "1e-45", "3.5"]
UNICODE = ["é", "\u2028", "\u00a0", "🙂", "\x00", "\ufeff", "[/]", "[bold]", ":smile:"]


def _lines(text: str) -> list[str]:
    return text.split("\n")


def mutate_text(text: str, rng: random.Random, names: list[str]) -> tuple[str, str]:
    """One hostile edit of program text: (new text, what was done)."""
    lines = _lines(text)
    body = [i for i, line in enumerate(lines) if line.strip()]
    if not body:
        return text + rng.choice(UNICODE + ["\n.stream compute\n"]), "append to an empty text"
    i = rng.choice(body)
    kind = rng.choice(["flip", "delete", "duplicate", "swap", "move", "token", "token", "token", "number", "number",
                       "number", "truncate", "unicode", "nest", "name", "name", "type", "attr", "attr", "attr", "role",
                       "stream", "insert-sfu", "insert-sfu", "insert-sfu", "insert-instr"])
    if kind == "flip":
        data = bytearray(text.encode("utf-8", errors="surrogateescape"))
        at = rng.randrange(len(data))
        data[at] = rng.randrange(256)
        return data.decode("utf-8", errors="surrogateescape"), f"flip byte {at}"
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap":
        j = rng.choice(body)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "move":
        line = lines.pop(i)
        lines.insert(rng.randrange(len(lines) + 1), line)
    elif kind == "truncate":
        return text[:rng.randrange(len(text))], "truncate"
    elif kind == "unicode":
        at = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + rng.choice(UNICODE) + lines[i][at:]
    elif kind == "nest":
        depth = rng.choice([3, 20, 1000])
        lines[i] = re.sub(r"=(\S)", lambda m: "=" + "[" * depth + m.group(1), lines[i], count=1) + "]" * depth
    elif kind == "token":
        tokens = re.findall(r"[^\s,(){}\[\]=:]+", lines[i])
        if tokens:
            old = rng.choice(tokens)
            new = rng.choice(tokens + names + INTERESTING_INTS[:12] + list(DTYPES) + ["mvm", "sfu", "wr", "store",
                                                                                      "release", "load"])
            lines[i] = lines[i].replace(old, new, 1)
    elif kind == "number":
        numbers = list(re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", lines[i]))
        if numbers:
            m = rng.choice(numbers)
            new = rng.choice(INTERESTING_INTS + INTERESTING_FLOATS + [str(int(float(m.group(0)) + rng.choice([-1, 1])))
                                                                       if abs(float(m.group(0))) < 1e15 else "0"])
            lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
    elif kind == "name":
        found = list(re.finditer(r"[%@$]?[A-Za-z_][\w.\-]*", lines[i]))
        if found:
            m = rng.choice(found)
            prefix = m.group(0)[0] if m.group(0)[0] in "%@$" else ""
            new = prefix + rng.choice(names) if rng.random() < 0.8 else m.group(0) + "x"
            lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
    elif kind == "type":
        found = list(re.finditer(r"(\w+)\[([\d,]*)\]", lines[i]))
        if found:
            m = rng.choice(found)
            dims = [d for d in m.group(2).split(",") if d]
            choice = rng.randrange(5)
            if choice == 0:
                new = f"{rng.choice(list(DTYPES))}[{m.group(2)}]"
            elif choice == 1 and dims:
                dims[rng.randrange(len(dims))] = rng.choice(["0", "1", "2", "3", "100000", "10000000000"])
                new = f"{m.group(1)}[{','.join(dims)}]"
            elif choice == 2:
                new = f"{m.group(1)}[{','.join(dims[:-1])}]"
            elif choice == 3:
                new = f"{m.group(1)}[{','.join(dims + ['1'])}]"
            else:
                new = f"{m.group(1)}[]"
            lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
    elif kind == "attr":
        return _mutate_attribute(lines, rng), "attr"
    elif kind == "role":
        lines[i] = re.sub(r"\b(bias|weight|table|value)=@", lambda m: rng.choice(["biac=@", "weight=@", "bias=@",
                                                                                   "table=@", "value=@", "scale=@"]),
                          lines[i], count=1)
    elif kind == "stream":
        lines.insert(rng.randrange(len(lines)), rng.choice([".stream write", ".stream compute"]))
    elif kind == "insert-sfu":
        lines.insert(rng.choice(body) + 1, "    " + random_sfu(rng, text))
    elif kind == "insert-instr":
        lines.insert(rng.choice(body) + 1, "    " + random_instruction(rng, text))
    return "\n".join(lines), f"{kind} at line {i + 1}"


def _values(text: str) -> list[tuple[str, str]]:
    """(value, type) pairs the program defines."""
    return re.findall(r"^\s*(?:load|sfu|mvm) %(\S+) .*: (\w+\[[\d,]*\])\s*$", text, flags=re.M)


def random_value(kind, rng: random.Random, inputs: int):
    """A value for an attribute of `kind`: mostly in range, sometimes just outside, sometimes wrong."""
    roll = rng.random()
    if isinstance(kind, A.Int):
        if roll < 0.6:
            return str(rng.randint(max(kind.lo, -4), min(kind.hi, 300)))
        return rng.choice([str(kind.lo - 1), str(kind.hi + 1), str(kind.lo), str(kind.hi), "true", "1.5"])
    if isinstance(kind, A.Real):
        return rng.choice(["0.5", "0.01", "1", "2.0", "0", "-1.0", "nan", "inf", "1e-30", "1e30"])
    if isinstance(kind, A.Bool):
        return rng.choice(["true", "false", "1"])
    if isinstance(kind, A.Ints):
        length = inputs if kind.length == A.PER_INPUT else kind.length
        if length is None:
            length = rng.randint(0, 4)
        length += rng.choice([0, 0, 0, 0, 1, -1]) if length else 0
        return "[" + ", ".join(random_value(kind.item, rng, inputs) for _ in range(max(length, 0))) + "]"
    return "0"


def random_sfu(rng: random.Random, text: str) -> str:
    """An sfu instruction from the grammar and the opcode table, on values the program defines."""
    spec = SFU_SPECS[rng.choice(sorted(SFU_SPECS))]
    values = _values(text) or [("x.q", "u8[1]")]
    fewest, most = spec.inputs
    count = rng.randint(fewest, min(most, fewest + 2))
    operands = [rng.choice(values) for _ in range(count)]
    attrs = {name: random_value(kind, rng, count) for name, kind in spec.attrs.items()}
    attrs.update({name: random_value(kind, rng, count) for name, kind in spec.optional.items() if rng.random() < 0.3})
    weights = re.findall(r"@(\S+) : (\w+\[[\d,]*\])", text)
    roles = [f"{role}=@{rng.choice(weights)[0]} : {rng.choice(weights)[1]}" for role in spec.roles] if weights else []
    first = operands[0][1] if operands else "u8[1]"
    out_type = rng.choice([first, re.sub(r"^\w+", rng.choice(list(DTYPES)), first), "u8[1]", "f32[8,10]"])
    text_attrs = " {" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + "}" if attrs else ""
    text_roles = " [" + ", ".join(roles) + "]" if roles else ""
    return (f"sfu %fz{rng.randrange(1000)} = {spec.name}(" + ", ".join(f"%{v}" for v, _ in operands) + ")"
            + text_attrs + text_roles + f" : {out_type}")


def random_instruction(rng: random.Random, text: str) -> str:
    values = [v for v, _ in _values(text)] or ["x.q"]
    layers = re.findall(r"^\.layer (\S+)", text, flags=re.M) or ["l"]
    ports = re.findall(r"^\.(?:input|output) (\S+)", text, flags=re.M) or ["p"]
    tokens = re.findall(r"signal \$(\S+)", text) or ["t"]
    row = lambda: str(rng.choice([0, 1, 2, 3, 575, 576]))  # noqa: E731
    return rng.choice([
        f"release rows({row()})",
        f"release rows({row()}..{row()})",
        f"store %{rng.choice(values)} -> {rng.choice(ports)}",
        f"wr {rng.choice(layers)}[{rng.randrange(3)}] -> rows({row()})",
        f"mvm %{rng.choice(values)} = {rng.choice(layers)}(%{rng.choice(values)}) blocks(0..0) rows({row()}) : u8[8,10]",
        f"load %{rng.choice(values)} <- {rng.choice(ports)} : u8[8,1,8,8]",
        f"signal ${rng.choice(tokens)}",
        f"wait ${rng.choice(tokens)}",
        f"bank {{in=[{rng.randrange(8)}], out=[{rng.randrange(8)}]}}",
    ])


def _mutate_attribute(lines: list[str], rng: random.Random) -> str:
    """Set one attribute of a layer, an sfu or a port to a value from its kind's edges."""
    candidates = [i for i, line in enumerate(lines) if re.search(r"\{[^}]*\}", line)]
    if not candidates:
        return "\n".join(lines)
    i = rng.choice(candidates)
    line = lines[i]
    op = re.search(r"^\s*\.layer \S+ (\w+)", line) or re.search(r"= (\w+)\(", line)
    spec = (LAYER_OPS.get(op.group(1)) or SFU_SPECS.get(op.group(1))) if op else None
    kinds = {**spec.attrs, **spec.optional} if spec else {"scale": A.SCALE, "zp": A.ZERO_POINT}
    name = rng.choice(sorted(kinds) + ["biac", "scale"])
    value = random_value(kinds.get(name, A.Int()), rng, line.count("%") - 1)
    body = re.search(r"\{([^}]*)\}", line)
    items = [item.strip() for item in re.split(r",\s*(?![^\[]*\])", body.group(1)) if item.strip()]
    items = [item for item in items if not item.startswith(name + "=")]
    if rng.random() < 0.9:
        items.append(f"{name}={value}")
    lines[i] = line[:body.start()] + "{" + ", ".join(items) + "}" + line[body.end():]
    return "\n".join(lines)


def mutate_weights(base: Base, rng: random.Random) -> tuple[bytes, str]:
    tensors = dict(load_tensors(base.weights))
    name = rng.choice(sorted(tensors))
    array = tensors[name]
    choice = rng.randrange(7)
    if choice == 0:
        del tensors[name]
    elif choice == 1:
        tensors[name] = array.astype(rng.choice([np.int64, np.int32, np.uint8, np.float32, np.int8]))
    elif choice == 2:
        tensors[name] = array.reshape(-1)[: max(array.size - 1, 0)]
    elif choice == 3 and array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        tensors[name] = np.full_like(array, rng.choice([info.min, info.max, 0, 1]))
    elif choice == 4 and array.dtype.kind == "f":
        flat = array.copy().reshape(-1)
        if flat.size:
            flat[rng.randrange(flat.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e30])
        tensors[name] = flat.reshape(array.shape)
    elif choice == 5:
        tensors[name + "x"] = array
    else:
        tensors[name] = np.zeros((0,) + array.shape[1:], array.dtype) if array.ndim else array
    return weights_bytes(tensors), f"weights: {name} change {choice}"


def mutate_hardware(rng: random.Random) -> tuple[str, str]:
    lines = dumps_hardware(default_hardware()).splitlines()
    fields = [i for i, line in enumerate(lines) if " = " in line]
    i = rng.choice(fields)
    key = lines[i].split(" = ")[0]
    value = rng.choice(["0", "1", "2", "3", "-1", "100000000", "65536", "1e300", "inf", "nan", "[]", "[0]",
                        "[1, 2, 3]", '"x"', "true", "1.5", "4", "8", "16", "576", "1024", "4096"])
    lines[i] = f"{key} = {value}"
    return "\n".join(lines) + "\n", f"hardware {key} = {value}"


def mutate_inputs(base: Base, program_text: str, rng: random.Random) -> tuple[dict, str]:
    x = {name: array.copy() for name, array in base.inputs.items()}
    name = rng.choice(sorted(x))
    array = x[name]
    choice = rng.randrange(6)
    if choice == 0 and array.dtype.kind == "f":
        array.reshape(-1)[rng.randrange(array.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e38])
    elif choice == 1:
        array = array.reshape(-1)[1:]
    elif choice == 2:
        array = array.astype(rng.choice([np.int64, np.float64, np.uint8, np.bool_, np.float16]))
    elif choice == 3:
        array = np.zeros((0,), array.dtype)
    elif choice == 4 and array.dtype.kind in "iu":
        array = array + rng.choice([-1, 10**6, 2**40])
    else:
        del x[name]
        x[name + "x"] = array
        return x, "input renamed"
    x[name] = array
    return x, f"input {name} change {choice}"


def make_case(base: Base, rng: random.Random) -> Case:
    """A hostile variant of `base`: text edits mostly, else its side file, hardware or input."""
    roll = rng.random()
    names = re.findall(r"[%@$]?([A-Za-z_][\w.\-]*)", base.text[:4000])[:200]
    if roll < 0.70:
        text, how = base.text, []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            text, what = mutate_text(text, rng, names)
            how.append(what)
        return Case(text, base.weights, how="; ".join(how))
    if roll < 0.85:
        data, how = mutate_weights(base, rng)
        text = re.sub(r"^(\.weights \S+ sha256=)\w+", lambda m: m.group(1) + hashlib.sha256(data).hexdigest(),
                      base.text, count=1, flags=re.M)
        return Case(text, data, how=how)
    if roll < 0.93:
        hw_text, how = mutate_hardware(rng)
        try:
            digest = hardware_fingerprint(loads_hardware(hw_text))
        except Exception:
            digest = "0" * 64
        text = re.sub(r"^(\.hw \S+ sha256=)\w+", lambda m: m.group(1) + digest, base.text, count=1, flags=re.M)
        return Case(text, base.weights, hw_text, how=how)
    inputs, how = mutate_inputs(base, base.text, rng)
    return Case(base.text, base.weights, inputs=inputs, how=how)


def example_inputs(base: Base) -> dict:
    tensors = load_tensors(base.weights)
    return {name[len("input:"):]: array for name, array in tensors.items() if name.startswith("input:")}


# ---- the real CLI ---------------------------------------------------------------------------------

def run_cli(case: Case, folder: str, extra: list[str] | None = None, program_name: str = PROGRAM) -> tuple[str, str]:
    """(outcome, detail) of `arasc run` on the case's files written into `folder`."""
    program = os.path.join(folder, program_name)
    with open(program, "wb") as f:
        f.write(case.text.encode("utf-8", errors="surrogateescape"))
    with open(os.path.join(folder, WEIGHTS), "wb") as f:
        f.write(case.weights)
    argv = [sys.executable, "-m", "arasc.cli", "run", program, "--inferences", "1"] + (extra or [])
    if case.hw_text is not None:
        with open(os.path.join(folder, HW), "w") as f:
            f.write(case.hw_text)
        argv += ["--hw", os.path.join(folder, HW)]
    if case.inputs is not None:
        np.savez(os.path.join(folder, "x.npz"), **case.inputs)
        argv += ["--input", os.path.join(folder, "x.npz")]
    def cpu_limit():  # a hang is CPU time spent (SIGXCPU), not wall time on a loaded machine
        resource.setrlimit(resource.RLIMIT_CPU, (CASE_SECONDS * 2, CASE_SECONDS * 2 + 5))

    try:
        done = subprocess.run(argv, capture_output=True, timeout=CASE_SECONDS * 20, cwd=folder,
                              env={**os.environ, "ARASC_DEBUG": ""}, preexec_fn=cpu_limit)
    except subprocess.TimeoutExpired:
        return "hang", f"no exit after {CASE_SECONDS * 20} s of wall time: {case.how}"
    if done.returncode == -signal.SIGXCPU:
        return "hang", f"{CASE_SECONDS * 2} s of CPU time: {case.how}"
    stderr = done.stderr.decode("utf-8", errors="replace")
    if "Traceback (most recent call last)" in stderr:
        return "traceback", stderr[-2000:]
    if done.returncode < 0:
        return "kill", f"signal {-done.returncode}: {case.how}"
    if done.returncode == 1:
        return "internal", stderr[-2000:]
    if done.returncode == 2:
        first = stderr.split("error: ", 1)[-1].splitlines()[0] if stderr else ""
        return ("bad-located" if LOCATED.match(first) else "bad-unlocated"), first
    if done.returncode == 0:
        return "ok", ""
    return "internal", f"exit {done.returncode}: {stderr[-500:]}"
