"""Lower a captured fx graph (torch.fx or torch.export) into the layer IR.

Each fx node becomes zero or more IR layers through one handler table (handlers.py). Values in
flight are `Val`s (IR values), constant tensors (parameters, buffers and anything computed only
from them: folded at compile time), or plain Python values (sizes, dims). Every emitted layer's
type is inferred from the op's definition and, for the layer standing for an fx node, checked
against the shape the capture propagated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from ..ir import Graph, Layer, Loc, Model, TensorType, Value, WeightRef, infer_type
from ..ir.ops import IR_DTYPES
from ..runtime import progress
from .errors import FrontendError, describe_node, source_location
from .trace import Captured, node_shape


@dataclass(frozen=True)
class Val:
    """An IR value produced at run time."""

    name: str
    type: TensorType

    @property
    def shape(self):
        return self.type.shape

    @property
    def ndim(self):
        return len(self.type.shape)


def ir_type(shape, dtype) -> TensorType:
    if dtype not in IR_DTYPES:
        raise FrontendError(f"tensor dtype {dtype} is not supported; supported: {sorted(map(str, IR_DTYPES))}")
    return TensorType(IR_DTYPES[dtype], tuple(shape))


class Lowerer:
    def __init__(self, captured: Captured, name: str):
        self.cap = captured
        self.graph_name = name
        self.inputs: list[Value] = []
        self.layers: list[Layer] = []
        self.weights: dict[str, np.ndarray] = {}
        # id -> (tensor, name); holding the tensor keeps its id from being reused
        self._weight_names: dict[int, tuple[torch.Tensor, str]] = {}
        self._names: set[str] = set()
        self.env: dict[torch.fx.Node, object] = {}
        self.node: torch.fx.Node | None = None
        self.use_counts = {n: len(n.users) for n in captured.graph.nodes}
        self.handled: list[tuple[object, tuple[str, ...]]] = []  # (handler, IR ops it emitted) per node

    # ---- naming ---------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base).strip(".") or "v"
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}.{k}", k + 1
        self._names.add(name)
        return name

    def node_base_name(self, node: torch.fx.Node) -> str:
        """fx: module path for module calls, node name otherwise; export: the module path of
        the nn.Module the op came from, plus the op name when it is not that module's own op."""
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack")
        if self.cap.kind == "export" and stack:
            from .handlers import UNIT_MODULES  # the table imports this module for Val

            path, module_type = list(stack.values())[-1]
            if path and module_type in UNIT_MODULES:
                return path
            stem = re.sub(r"_\d+$", "", node.name)
            return f"{path}.{stem}" if path else node.name
        return node.name

    def weight(self, tensor: torch.Tensor, name: str) -> WeightRef:
        """Register a static tensor; the same parameter object keeps one name (tied weights)."""
        key = id(tensor)
        if key in self._weight_names:
            wname = self._weight_names[key][1]
        else:
            wname = self.fresh_weight(name)
            self._weight_names[key] = (tensor, wname)
            # A view of the module's tensor, not a copy: the IR's arrays are never written in place
            # (every pass makes new ones), and a copy would hold the model's float weights twice
            # for the whole compile (BERT-Large: 1.3 GB).
            self.weights[wname] = tensor.detach().contiguous().numpy()
        array = self.weights[wname]
        return WeightRef(wname, ir_type(array.shape, tensor.dtype))

    def fresh_weight(self, name: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
        out, k = name, 1
        while out in self.weights:
            out, k = f"{name}.{k}", k + 1
        return out

    def param_name(self, node_arg, fallback: str) -> str:
        """The user-facing name of a parameter: its fully qualified name when known."""
        if isinstance(node_arg, torch.fx.Node):
            if node_arg.op == "get_attr":
                return str(node_arg.target)
            if node_arg.name in self.cap.param_names:
                return self.cap.param_names[node_arg.name]
        return fallback

    # ---- emission -------------------------------------------------------------------------
    def emit(self, op: str, inputs, attrs=None, weights=None, base: str | None = None) -> Val:
        node = self.node
        inputs = [self.as_val(x) for x in inputs]
        loc = source_location(node) if node is not None else None
        name = self.fresh(base or self.node_base_name(node))
        layer = Layer(name, op, tuple(v.name for v in inputs), TensorType("f32", ()), attrs or {},
                      weights or {}, Loc(*loc) if loc else None)
        try:
            out_type = infer_type(layer, [v.type for v in inputs])
        except Exception as err:
            raise FrontendError(f"{describe_node(node)}: lowering to {op} failed: {err}") from None
        layer = Layer(layer.name, op, layer.inputs, out_type, layer.attrs, layer.weights, layer.loc)
        self.layers.append(layer)
        return Val(name, out_type)

    def as_val(self, x) -> Val:
        """A run-time value for x: constants become `const` layers."""
        if isinstance(x, Val):
            return x
        if isinstance(x, torch.Tensor):
            base = f"{self.node_base_name(self.node)}.const"
            ref = self.weight(x if x.dtype != torch.float64 else x.float(), base)
            return self.emit("const", [], weights={"value": ref}, base=base)
        raise FrontendError(f"{describe_node(self.node)}: expected a tensor, got {type(x).__name__} {x!r}")

    def replace_layer(self, val: Val, **changes) -> Val:
        """Rewrite the layer defining `val` in place (batch-norm folding)."""
        for i, layer in enumerate(self.layers):
            if layer.name == val.name:
                fields = dict(name=layer.name, op=layer.op, inputs=layer.inputs, type=layer.type,
                              attrs=layer.attrs, weights=layer.weights, loc=layer.loc)
                fields.update(changes)
                self.layers[i] = Layer(**fields)
                return val
        raise KeyError(val.name)

    def producer(self, val: Val) -> Layer | None:
        for layer in reversed(self.layers):
            if layer.name == val.name:
                return layer
        return None

    def fail(self, message: str):
        raise FrontendError(f"{describe_node(self.node)}: {message}")

    # ---- the walk -------------------------------------------------------------------------
    def run(self) -> Model:
        from .handlers import lower_node  # the table imports this module for Val

        outputs: list[Val] = []
        progress.total(len(self.cap.graph.nodes))
        for node in self.cap.graph.nodes:
            progress.step(node.name)
            self.node = node
            if node.op == "placeholder":
                self.env[node] = self.placeholder(node)
            elif node.op == "get_attr":
                self.env[node] = _fetch_attr(self.cap.root, str(node.target))
            elif node.op == "output":
                outputs = [self.as_val(v) for v in _flatten(self.resolve(node.args[0]))]
            else:
                result = lower_node(self, node)
                self.check_shape(node, result)
                self.env[node] = result
        graph = Graph(self.graph_name, tuple(self.inputs), tuple(self._live(outputs)),
                      tuple(v.name for v in outputs), {"source_params": int(self.cap.source_params)})
        used = {ref.name for layer in graph.layers for _, ref in layer.weights}
        return Model(graph, {k: v for k, v in self.weights.items() if k in used})

    def placeholder(self, node):
        if node.name in self.cap.constants:
            return self.cap.constants[node.name]
        meta = node_shape(node)
        if meta is None:
            raise FrontendError(f"{describe_node(node)}: model inputs must be tensors")
        value = Value(self.fresh(node.name), ir_type(*meta))
        self.inputs.append(value)
        return Val(value.name, value.type)

    def resolve(self, arg):
        return torch.fx.node.map_arg(arg, lambda n: self.env[n])

    def check_shape(self, node, result):
        meta = node_shape(node)
        if isinstance(result, Val) and meta is not None and tuple(meta[0]) != result.shape:
            raise FrontendError(f"{describe_node(node)}: internal lowering error: IR shape {list(result.shape)} "
                                f"differs from the traced shape {list(meta[0])}")

    def _live(self, outputs: list[Val]) -> list[Layer]:
        """Drop layers nothing uses (values only consumed by folded constants, unused branches)."""
        needed = {v.name for v in outputs}
        kept = []
        for layer in reversed(self.layers):
            if layer.name in needed:
                kept.append(layer)
                needed.update(layer.inputs)
        return kept[::-1]


def _fetch_attr(root: torch.nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, torch.Tensor) else obj


def _flatten(x):
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flatten(item)]
    return [x]
