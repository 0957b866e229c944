"""Print an `.aras` program: deterministic text, one instruction a line."""
from __future__ import annotations

from .opcodes import OPCODES, fmt_attrs, fmt_weights
from .program import Program


def print_program(program: Program) -> str:
    lines = [f"; {program.name}.aras (arasc {program.version})",
             f".arasc {program.version}",
             f".program {program.name}",
             f".hw {program.hw[0]} sha256={program.hw[1]}",
             f".weights {program.weights[0]} sha256={program.weights[1]}"]
    for port in program.inputs:
        lines.append(f".input {port.name} {port.type}" + (f" {fmt_attrs(port.attrs)}" if port.attrs else ""))
    for port in program.outputs:
        lines.append(f".output {port.name} %{port.value} {port.type}" + (f" {fmt_attrs(port.attrs)}" if port.attrs else ""))
    for layer in program.layers:
        lines.append(f".layer {layer.name} {layer.op} {fmt_attrs(layer.attrs)} {fmt_weights(layer.weights)}")
    for stream in ("write", "compute"):
        lines.append("")
        lines.append(f".stream {stream}")
        lines += ["    " + OPCODES[i.opcode].format(i) for i in program.stream(stream)]
    return "\n".join(lines) + "\n"
