"""ONNX intake: an ONNX graph becomes a torch module that runs its nodes in order with torch
ops, and the frontend captures that module with torch.export like any other model (DESIGN.md
section 1), so ONNX models go through the same handler table and lowering.

Static values stay numpy: initializers of integer type (shapes, axes, indices), `Constant` and
`Shape` outputs, and any node whose inputs are all static is evaluated at import time (constant
folding), so `Reshape`, `Slice` or `Unsqueeze` see plain numbers. Float initializers of more
than one element become the module's parameters, which the capture turns into weights. Each
node runs as a submodule named after it, so layer names carry the ONNX node names.

An op type outside CONVERTERS stops the import with an error naming the ONNX node and its op
type. Symbolic dimensions (a batch `N`) are fixed to 1: arasc compiles static shapes.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FrontendError


class OnnxImportError(FrontendError):
    """The ONNX file cannot be imported: unreadable, or a node arasc does not support."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise OnnxImportError("reading ONNX models needs the onnx package: pip install 'arasc[onnx]'") from None
    return onnx


def t(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.array(x))  # a copy: onnx arrays are read-only


def static(x, what: str = "this input") -> list:
    if isinstance(x, torch.Tensor):
        raise OnnxImportError(f"{what} must be a constant (an initializer or Constant), not computed at run time")
    return np.asarray(x).reshape(-1).tolist()


def _pair(values, default):
    return tuple(values) if values else default


# ---- converters: (inputs, attributes) -> output or tuple of outputs --------------------------------
def _conv(xs, a):
    x, w = t(xs[0]), t(xs[1])
    b = t(xs[2]) if len(xs) > 2 and xs[2] is not None else None
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise OnnxImportError("Conv with auto_pad is not supported; export with explicit pads")
    if w.dim() != 4:
        raise OnnxImportError("only 2-D convolutions are supported")
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    if (top, left) != (bottom, right):
        x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
    return F.conv2d(x, w, b, _pair(a.get("strides"), (1, 1)), (top, left), _pair(a.get("dilations"), (1, 1)),
                    a.get("group", 1))


def _gemm(xs, a):
    x, w = t(xs[0]), t(xs[1])
    if a.get("transA", 0):
        x = x.t()
    weight = (w if a.get("transB", 0) else w.t()) * a.get("alpha", 1.0)
    out = F.linear(x, weight)
    if len(xs) > 2 and xs[2] is not None:
        out = out + t(xs[2]) * a.get("beta", 1.0)
    return out


def _pool(kind):
    def run(xs, a):
        kernel = tuple(a["kernel_shape"])
        stride = _pair(a.get("strides"), (1, 1))
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
        if (top, left) != (bottom, right):
            raise OnnxImportError(f"{kind} with asymmetric pads is not supported")
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "MaxPool":
            return F.max_pool2d(t(xs[0]), kernel, stride, (top, left), _pair(a.get("dilations"), (1, 1)), ceil)
        return F.avg_pool2d(t(xs[0]), kernel, stride, (top, left), ceil, bool(a.get("count_include_pad", 0)))
    return run


def _reshape(xs, a):
    x, shape = t(xs[0]), static(xs[1], "Reshape's shape")
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _axes(xs, a, position=1):
    if len(xs) > position and xs[position] is not None:
        return static(xs[position], "the axes")
    return list(a.get("axes", []))


def _unsqueeze(xs, a):
    x = t(xs[0])
    for axis in sorted(d % (x.dim() + len(_axes(xs, a))) for d in _axes(xs, a)):
        x = x.unsqueeze(axis)
    return x


def _squeeze(xs, a):
    x, axes = t(xs[0]), _axes(xs, a)
    axes = axes or [d for d, n in enumerate(x.shape) if n == 1]
    return x.reshape([n for d, n in enumerate(x.shape) if d not in {axis % x.dim() for axis in axes}])


def _slice(xs, a):
    x = t(xs[0])
    starts, ends = static(xs[1], "Slice's starts"), static(xs[2], "Slice's ends")
    axes = static(xs[3]) if len(xs) > 3 and xs[3] is not None else list(range(len(starts)))
    steps = static(xs[4]) if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step < 0:
            raise OnnxImportError("Slice with a negative step is not supported")
        size = x.shape[axis]
        index[axis] = slice(*slice(max(-size - 1, min(start, size)), max(-size - 1, min(end, size)), step)
                            .indices(size))
    return x[tuple(index)]


def _split(xs, a):
    x = t(xs[0])
    axis = a.get("axis", 0) % x.dim()
    if len(xs) > 1 and xs[1] is not None:
        sizes = static(xs[1], "Split's sizes")
    elif "split" in a:
        sizes = list(a["split"])
    else:
        parts = a.get("num_outputs") or a["_outputs"]
        size = -(-x.shape[axis] // parts)
        sizes = [min(size, x.shape[axis] - i * size) for i in range(parts)]
    return tuple(torch.split(x, sizes, dim=axis))


def _gather(xs, a):
    data, indices = xs
    axis = a.get("axis", 0)
    if isinstance(indices, torch.Tensor):  # run-time ids into a table: an embedding lookup
        if axis != 0:
            raise OnnxImportError("Gather at run-time indices is supported along axis 0 (embeddings) only")
        return F.embedding(indices, t(data))
    data, index = t(data), np.asarray(indices)
    axis %= data.dim()
    if index.ndim == 0:
        return data.select(axis, int(index) % data.shape[axis])
    return torch.stack([data.select(axis, int(i) % data.shape[axis]) for i in index.reshape(-1)], axis).reshape(
        data.shape[:axis] + index.shape + data.shape[axis + 1:])


def _clip(xs, a):
    low = xs[1] if len(xs) > 1 and xs[1] is not None else a.get("min")
    high = xs[2] if len(xs) > 2 and xs[2] is not None else a.get("max")
    low = None if low is None else static(low, "Clip's min")[0] if not isinstance(low, float) else low
    high = None if high is None else static(high, "Clip's max")[0] if not isinstance(high, float) else high
    return torch.clamp(t(xs[0]), low, high)


def _hardsigmoid(xs, a):
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and math.isclose(beta, 0.5):
        return F.hardsigmoid(t(xs[0]))
    return torch.clamp(t(xs[0]) * alpha + beta, 0.0, 1.0)


def _reduce_mean(xs, a):
    x, axes = t(xs[0]), _axes(xs, a)
    return torch.mean(x, dim=axes or list(range(x.dim())), keepdim=bool(a.get("keepdims", 1)))


def _cast(xs, a):
    return t(xs[0]).to(_DTYPES[a["to"]])


def _constant(xs, a):
    from onnx import numpy_helper

    if "value" not in a:
        raise OnnxImportError("Constant is supported with a tensor `value` only")
    return numpy_helper.to_array(a["value"])


def _flatten(xs, a):
    x = t(xs[0])
    axis = a.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


CONVERTERS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": lambda xs, a: torch.matmul(t(xs[0]), t(xs[1])),
    "Add": lambda xs, a: t(xs[0]) + t(xs[1]), "Sub": lambda xs, a: t(xs[0]) - t(xs[1]),
    "Mul": lambda xs, a: t(xs[0]) * t(xs[1]), "Div": lambda xs, a: t(xs[0]) / t(xs[1]),
    "Pow": lambda xs, a: torch.pow(t(xs[0]), static(xs[1], "Pow's exponent")[0]),
    "Relu": lambda xs, a: F.relu(t(xs[0])), "Sigmoid": lambda xs, a: torch.sigmoid(t(xs[0])),
    "Tanh": lambda xs, a: torch.tanh(t(xs[0])), "HardSwish": lambda xs, a: F.hardswish(t(xs[0])),
    "HardSigmoid": _hardsigmoid, "Clip": _clip,
    "Gelu": lambda xs, a: F.gelu(t(xs[0]), approximate=_text(a.get("approximate", "none"))),
    "Softmax": lambda xs, a: torch.softmax(t(xs[0]), dim=a.get("axis", -1)),
    "MaxPool": _pool("MaxPool"), "AveragePool": _pool("AveragePool"),
    "GlobalAveragePool": lambda xs, a: F.adaptive_avg_pool2d(t(xs[0]), 1),
    "BatchNormalization": lambda xs, a: F.batch_norm(t(xs[0]), t(xs[3]), t(xs[4]), t(xs[1]), t(xs[2]), False, 0.0,
                                                     a.get("epsilon", 1e-5)),
    "LayerNormalization": lambda xs, a: F.layer_norm(
        t(xs[0]), t(xs[0]).shape[a.get("axis", -1) % t(xs[0]).dim():], t(xs[1]),
        t(xs[2]) if len(xs) > 2 and xs[2] is not None else None, a.get("epsilon", 1e-5)),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": lambda xs, a: t(xs[0]).permute(
        a.get("perm", list(range(t(xs[0]).dim()))[::-1])),
    "Concat": lambda xs, a: torch.cat([t(x) for x in xs], dim=a["axis"]), "Split": _split, "Slice": _slice,
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Identity": lambda xs, a: xs[0], "Dropout": lambda xs, a: xs[0],
    "Constant": _constant, "Shape": lambda xs, a: np.array(t(xs[0]).shape, dtype=np.int64),
    "Cast": _cast, "ReduceMean": _reduce_mean,
    "Equal": lambda xs, a: torch.eq(t(xs[0]), t(xs[1])), "Not": lambda xs, a: torch.logical_not(t(xs[0])),
    "Where": lambda xs, a: torch.where(t(xs[0]), t(xs[1]), t(xs[2])),
    "Expand": lambda xs, a: t(xs[0]).expand(torch.broadcast_shapes(t(xs[0]).shape, tuple(static(xs[1])))),
    "CumSum": lambda xs, a: torch.cumsum(t(xs[0]), dim=static(xs[1], "CumSum's axis")[0]),
}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _dtypes():
    from onnx import TensorProto

    return {TensorProto.FLOAT: torch.float32, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
            TensorProto.BOOL: torch.bool, TensorProto.UINT8: torch.uint8, TensorProto.INT8: torch.int8,
            TensorProto.DOUBLE: torch.float64}


_DTYPES: dict = {}


class OnnxNode(torch.nn.Module):
    """One ONNX node, a submodule named after it, so that layer names and error messages name
    the ONNX node (torch.export records the submodule of every op)."""

    def __init__(self, op_type: str, attrs: dict):
        super().__init__()
        self.op_type, self.attrs = op_type, attrs

    def forward(self, *xs):
        return CONVERTERS[self.op_type](list(xs), self.attrs)


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph's nodes in order with torch ops (the converters above)."""

    def __init__(self, graph, path: str):
        super().__init__()
        from onnx import helper, numpy_helper

        self.path = path
        self.static: dict[str, np.ndarray] = {}
        self.weight_of: dict[str, str] = {}
        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            if array.dtype.kind == "f" and array.size > 1:  # weights; scalars (Clip bounds) stay static
                name = re.sub(r"\W", "_", init.name) or "weight"
                while hasattr(self, name):
                    name += "_"
                self.register_parameter(name, torch.nn.Parameter(torch.from_numpy(array.astype(np.float32).copy()),
                                                                 requires_grad=False))
                self.weight_of[init.name] = name
            else:
                self.static[init.name] = array
        known = set(self.static) | set(self.weight_of)
        self.input_names = [v.name for v in graph.input if v.name not in known]
        self.output_names = [v.name for v in graph.output]
        self.nodes = []
        self.onnx = torch.nn.ModuleDict()  # one submodule per node, named after it
        for node in graph.node:
            where = f"{path}: ONNX node {node.name or '(unnamed)'!r} (op type {node.op_type})"
            if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
                raise OnnxImportError(f"{where}: unsupported ONNX operator {node.domain + '::' if node.domain else ''}"
                                      f"{node.op_type}. arasc imports {', '.join(sorted(CONVERTERS))}")
            attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
            attrs["_outputs"] = len(node.output)
            key = re.sub(r"\W", "_", node.name) or f"node_{len(self.nodes)}"
            while key in self.onnx:
                key += "_"
            self.onnx[key] = OnnxNode(node.op_type, attrs)
            self.nodes.append((where, key, list(node.input), list(node.output)))

    def forward(self, *inputs):
        env: dict[str, object] = dict(self.static)
        env.update({name: getattr(self, attribute) for name, attribute in self.weight_of.items()})
        env.update(zip(self.input_names, inputs))
        for where, key, names, outputs in self.nodes:
            xs = [env[n] if n else None for n in names]
            node = self.onnx[key]
            try:
                if all(not isinstance(x, torch.Tensor) for x in xs if x is not None):
                    out = _fold(CONVERTERS[node.op_type], xs, node.attrs)   # static: evaluated now
                else:
                    out = node(*xs)
            except OnnxImportError as err:
                raise OnnxImportError(f"{where}: {err}") from None
            for name, value in zip(outputs, out if isinstance(out, tuple) else (out,)):
                env[name] = value
        results = tuple(t(env[name]) for name in self.output_names)
        return results[0] if len(results) == 1 else results


def _fold(converter, xs, attrs):
    out = converter(xs, attrs)
    if isinstance(out, tuple):
        return tuple(np.asarray(o) for o in out)
    return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def load_onnx(path: str):
    """(module, example inputs, name) for an .onnx file; random inputs of its declared shapes."""
    onnx = _onnx()
    _DTYPES.update(_dtypes())
    try:
        proto = onnx.load(path)
    except Exception as err:
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from None
    module = OnnxModule(proto.graph, path).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for value in proto.graph.input:
        if value.name not in module.input_names:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        dtype = _DTYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise OnnxImportError(f"{path}: input {value.name!r} has an unsupported element type "
                                  f"{tensor_type.elem_type}")
        inputs.append(torch.randn(shape, generator=gen) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype))
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", os.path.splitext(os.path.basename(path))[0])
    return module, tuple(inputs), name
