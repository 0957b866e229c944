"""Backend: a quantized, tiled layer-IR model -> an `.aras` program and its weight tensors.

The compute stream follows the IR's layer order. Crossbar layers (kind `mvm`) become `.layer`
definitions plus `mvm` instructions on the APU rows their blocks were written to; every other
layer becomes an `sfu` instruction carrying its op, attributes and static tensors; the graph's
`quantize` inputs and `dequantize` outputs become `load` and `store`. Where blocks go and when
they are written is the scheduler's decision (`arasc/schedule/`); it hands the backend the write
stream and the row binding of every segment.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..ir import OPS, Layer, Model
from ..isa.hardware import Hardware, hardware_fingerprint
from ..isa.program import Instr, LayerDef, Port, Program, TensorSpec
from .segments import Segment

Banks = tuple[tuple[int, ...], tuple[int, ...], int]  # input banks, output banks, bytes spilled


class BackendError(ValueError):
    pass


def spec(t) -> TensorSpec:
    return TensorSpec(t.dtype, t.shape)


def layer_defs(model: Model) -> list[LayerDef]:
    defs = []
    for layer in model.graph.layers:
        if OPS[layer.op].kind == "mvm":
            weights = tuple((role, ref.name, spec(ref.type)) for role, ref in layer.weights)
            defs.append(LayerDef(layer.name, layer.op, layer.attrs, weights))
    return defs


def input_quantizer(model: Model, value: str) -> str | None:
    """The quantize layer the `load` of graph input `value` stands for, if any."""
    return next((q.name for q in model.graph.layers if q.op == "quantize" and q.inputs == (value,)), None)


def computed_layers(model: Model) -> list[Layer]:
    """The layers the compute stream runs as `mvm` or `sfu` (not the input quantizers, which are
    `load`s, nor the output dequantizers, which are `store`s)."""
    graph = model.graph
    loaded = {input_quantizer(model, v.name) for v in graph.inputs}
    stored = {layer.name for layer in graph.layers if layer.op == "dequantize" and layer.name in graph.outputs}
    return [layer for layer in graph.layers if layer.name not in loaded and layer.name not in stored]


def plan_banks(model: Model, hw: Hardware, method: str = "ilp") -> dict[str, Banks]:
    """The Gbuffer banks of every computed layer: "ilp" (paper V-A, least static power,
    bank_selection.py) or "greedy" (the smallest bank that fits, banks.py)."""
    from ..runtime import progress

    if method == "ilp":
        from .bank_selection import select_banks
    else:
        from .banks import choose_banks
    types = model.graph.types()
    plan = {}
    for layer in computed_layers(model):
        in_bytes = sum(spec(types[name]).nbytes for name in layer.inputs)
        out_bytes = spec(layer.type).nbytes
        if method == "ilp":
            plan[layer.name] = select_banks(in_bytes, out_bytes, hw.gbuffer.banks_bytes, hw.gbuffer_bank_static_w)
        else:
            plan[layer.name] = choose_banks(in_bytes, out_bytes, hw.gbuffer.banks_bytes)
        progress.step(layer.name)
    return plan


def emit_compute(model: Model, bindings: dict[str, list[tuple[Segment, tuple[int, ...]]]],
                 write_tokens: Callable[[Segment], str | None], banks: dict[str, Banks]) -> list[Instr]:
    """The compute stream: for each mvm segment, wait for its blocks, compute, release the rows,
    signal. `bindings[layer]` lists (segment, rows) in order; `write_tokens(segment)` names the
    token the write stream raises once the segment's blocks are written; `banks[layer]` are the
    layer's Gbuffer banks (`plan_banks`)."""
    graph = model.graph
    outputs = set(graph.outputs)
    stream: list[Instr] = []
    for value in graph.inputs:
        quantizer = input_quantizer(model, value.name)
        out = graph.layer(quantizer) if quantizer is not None else value
        stream.append(Instr("load", {"out": out.name, "port": value.name, "type": spec(out.type)}))
    for layer in computed_layers(model):
        banks_in, banks_out, spill = banks[layer.name]
        stream.append(Instr("bank", {"in": banks_in, "out": banks_out, "spill": spill}))
        if OPS[layer.op].kind == "mvm":
            for segment, rows in bindings[layer.name]:
                token = write_tokens(segment)
                if token is not None:
                    stream.append(Instr("wait", {"token": token}))
                stream.append(Instr("mvm", {"out": layer.name, "layer": layer.name, "input": layer.inputs[0],
                                            "blocks": (segment.first, segment.last), "rows": rows,
                                            "type": spec(layer.type)}))
                stream.append(Instr("release", {"rows": tuple(sorted(set(rows)))}))
                stream.append(Instr("signal", {"token": f"c.{segment.token}"}))
        else:
            stream.append(sfu(layer))
    for layer in graph.layers:
        if layer.op == "dequantize" and layer.name in outputs:
            stream.append(Instr("store", {"value": layer.inputs[0], "port": layer.name}))
    return stream


def sfu(layer: Layer) -> Instr:
    weights = tuple((role, ref.name, spec(ref.type)) for role, ref in layer.weights)
    return Instr("sfu", {"out": layer.name, "op": layer.op, "inputs": layer.inputs, "attrs": layer.attrs,
                         "weights": weights, "type": spec(layer.type)})


def ports(model: Model) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
    graph = model.graph
    first_use = {}
    for layer in graph.layers:
        for name in layer.inputs:
            first_use.setdefault(name, layer)
    inputs = []
    for value in graph.inputs:
        user = first_use.get(value.name)
        attrs = dict(user.attrs) if user is not None and user.op == "quantize" else {}
        if value.type.dtype == "f32" and not attrs:
            raise BackendError(f"model input %{value.name} is float but not quantized: run the quantize pass first")
        inputs.append(Port(value.name, "", spec(value.type), attrs))
    outputs = []
    for name in graph.outputs:
        layer = graph.layer(name)
        if layer.op != "dequantize":
            raise BackendError(f"model output %{name} is not dequantized: run the quantize pass first")
        outputs.append(Port(name, layer.inputs[0], spec(layer.type), dict(layer.attrs)))
    return tuple(inputs), tuple(outputs)


def program_tensors(model: Model) -> dict[str, np.ndarray]:
    """Every static tensor the program names, exactly as the IR holds it."""
    return {name: np.asarray(model.weights[name]) for name in sorted(model.graph.weight_refs())}


def assemble(model: Model, hw: Hardware, write: list[Instr], compute: list[Instr], weights_file: str,
             weights_sha: str) -> Program:
    inputs, outputs = ports(model)
    return Program(model.graph.name, (hw.chip.name, hardware_fingerprint(hw)), (weights_file, weights_sha),
                   inputs, outputs, tuple(layer_defs(model)), tuple(write), tuple(compute))
