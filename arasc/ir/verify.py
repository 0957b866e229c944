"""IR verifier: every value defined once before use (hence acyclic), ops and attributes known,
weight references consistent, and every declared type equal to the type the op's own
definition infers (run on meta tensors, see ops.py; type_rules.py says the same without running
the common ops)."""
from __future__ import annotations

import functools

import torch

from .graph import NUMPY_DTYPES, Graph, Layer, Model, TensorType
from .ops import IR_DTYPES, OPS, TORCH_DTYPES
from .type_rules import RULES


class VerifyError(ValueError):
    pass


# The tile map the tiling pass adds to every crossbar (`mvm`) layer; docs/tiling.md.
TILE_ATTRS = ("k", "n", "blocks", "apu_rows", "segments")


def _where(layer: Layer) -> str:
    return f"layer %{layer.name} ({layer.op})" + (f" at {layer.loc}" if layer.loc else "")


def infer_type(layer: Layer, input_types: list[TensorType]) -> TensorType:
    """The output type `layer`'s op produces for these input types."""
    weight_types = tuple((role, ref.type) for role, ref in layer.weights)
    try:
        return _infer(layer.op, layer.attrs, tuple(input_types), weight_types)
    except TypeError as err:  # an attribute value that cannot be hashed: infer without the cache
        if "unhashable" not in str(err):
            raise
        return _infer.__wrapped__(layer.op, layer.attrs, tuple(input_types), weight_types)


@functools.lru_cache(maxsize=4096)
def _infer(op: str, attrs: tuple, input_types: tuple[TensorType, ...], weight_types: tuple) -> TensorType:
    """Cached: a network repeats a few layer shapes many times, and the verifier runs after every
    pass (the 152 layers of ResNet-50 after lowering have 66 distinct signatures)."""
    rule = RULES.get(op)
    if rule is not None:
        typed = rule(input_types, {**OPS[op].defaults, **dict(attrs)}, dict(weight_types))
        if typed is not None:
            return typed
    return meta_type(op, attrs, input_types, weight_types)


def meta_type(op: str, attrs: tuple, input_types: tuple[TensorType, ...], weight_types: tuple) -> TensorType:
    """The output type of the op's own definition run on meta tensors of these types."""
    opdef = OPS[op]
    meta = lambda t: torch.empty(t.shape, dtype=TORCH_DTYPES[t.dtype], device="meta")  # noqa: E731
    out = opdef.fn([meta(t) for t in input_types], {**opdef.defaults, **dict(attrs)},
                   {role: meta(t) for role, t in weight_types})
    return TensorType(IR_DTYPES[out.dtype], tuple(out.shape))


def verify_layer(layer: Layer, types: dict[str, TensorType]) -> None:
    where = _where(layer)
    opdef = OPS.get(layer.op)
    if opdef is None:
        raise VerifyError(f"{where}: unknown op; known ops: {', '.join(sorted(OPS))}")
    n = len(layer.inputs)
    if n < opdef.min_inputs or (opdef.max_inputs is not None and n > opdef.max_inputs):
        raise VerifyError(f"{where}: takes {opdef.min_inputs}..{opdef.max_inputs or 'n'} inputs, got {n}")
    for name in layer.inputs:
        if name not in types:
            raise VerifyError(f"{where}: reads %{name}, which is not defined before it")
    attrs = dict(layer.attrs)
    missing = [a for a in opdef.attrs if a not in attrs]
    optional = set(opdef.defaults) | (set(TILE_ATTRS) if opdef.kind == "mvm" else set())
    unknown = [a for a in attrs if a not in opdef.attrs and a not in optional]
    if missing or unknown:
        raise VerifyError(f"{where}: missing attributes {missing}, unknown attributes {unknown}; "
                          f"expected {list(opdef.attrs) + list(opdef.defaults)}")
    roles = {role for role, _ in layer.weights}
    allowed = set(opdef.weights) | set(opdef.optional_weights)
    if not set(opdef.weights) <= roles or not roles <= allowed:
        raise VerifyError(f"{where}: weight roles {sorted(roles)}; required {list(opdef.weights)}, "
                          f"optional {list(opdef.optional_weights)}")
    try:
        inferred = infer_type(layer, [types[i] for i in layer.inputs])
    except Exception as err:  # torch's own shape check, re-worded with the layer's name
        raise VerifyError(f"{where}: operands do not fit: {err}") from None
    if inferred != layer.type:
        raise VerifyError(f"{where}: declared type {layer.type}, but the op produces {inferred}")


def verify_graph(graph: Graph) -> None:
    types: dict[str, TensorType] = {}
    for value in graph.inputs:
        if value.name in types:
            raise VerifyError(f"input %{value.name} defined twice")
        types[value.name] = value.type
    weight_types: dict[str, TensorType] = {}
    for layer in graph.layers:
        if layer.name in types:
            raise VerifyError(f"{_where(layer)}: %{layer.name} is defined twice")
        verify_layer(layer, types)
        for _, ref in layer.weights:
            if weight_types.setdefault(ref.name, ref.type) != ref.type:
                raise VerifyError(f"{_where(layer)}: weight @{ref.name} is {ref.type} here "
                                  f"but {weight_types[ref.name]} elsewhere")
        types[layer.name] = layer.type
    for name in graph.outputs:
        if name not in types:
            raise VerifyError(f"output %{name} is not defined")


def verify_model(model: Model) -> None:
    verify_graph(model.graph)
    for name, ref in model.graph.weight_refs().items():
        if name not in model.weights:
            raise VerifyError(f"weight @{name} is referenced but not in the weight store")
        array = model.weights[name]
        if tuple(array.shape) != ref.type.shape or array.dtype != NUMPY_DTYPES[ref.type.dtype]:
            raise VerifyError(f"weight @{name}: store holds {array.dtype}{list(array.shape)}, IR says {ref.type}")
