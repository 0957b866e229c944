"""The ARAS opcode table: the single source of truth for what instructions exist, which
stream runs them, their text form and their documentation (docs/isa.md has the long form:
semantics, latency, energy). The parser has one grammar rule per opcode, the backend emits
each, the runtime has one handler per opcode; tests check all four agree with this table."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
