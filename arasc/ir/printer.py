"""Textual form of the layer IR. The grammar is in `parser.py`, documented in docs/ir.md.

Output is deterministic: attributes and weight roles are sorted, floats use Python's shortest
round-tripping repr, and nothing depends on dict order or object ids.
"""
from __future__ import annotations

import json

from ..isa.literals import format_attrs
from .graph import Graph, Layer


def format_layer(layer: Layer) -> str:
    text = f"%{layer.name} = {layer.op}(" + ", ".join(f"%{n}" for n in layer.inputs) + ")"
    if layer.attrs:
        text += " " + format_attrs(layer.attrs)
    if layer.weights:
        text += " [" + ", ".join(f"{role}=@{ref.name} : {ref.type}" for role, ref in layer.weights) + "]"
    text += f" : {layer.type}"
    if layer.loc is not None:
        text += f" loc({json.dumps(layer.loc.file)}:{layer.loc.line})"
    return text


def print_graph(graph: Graph) -> str:
    head = f"graph {graph.name}"
    if graph.meta:
        head += " " + format_attrs(graph.meta)
    lines = [head]
    lines += [f"  input %{v.name} : {v.type}" for v in graph.inputs]
    lines += ["  " + format_layer(layer) for layer in graph.layers]
    lines.append("  output " + ", ".join(f"%{n}" for n in graph.outputs))
    lines.append("end")
    return "\n".join(lines) + "\n"
