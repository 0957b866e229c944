"""The layer IR's operation set: one table, one entry per op.

Each op states its inputs, attributes and weight roles, and gives its meaning as a small torch
function. The same function serves three purposes: the float evaluator runs it on real tensors,
the verifier runs it on `meta` tensors to infer shapes and dtypes, and the docs (docs/ir.md)
describe it. `kind` says where the op executes on ARAS (paper section III-A): `mvm` on the
crossbars (static weights), `matmul` between two activations, `sfu` in the special function
unit, `data` as pure data movement (no arithmetic).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

TORCH_DTYPES = {
    "f32": torch.float32,
    "i64": torch.int64,
    "i32": torch.int32,
    "u8": torch.uint8,
    "i8": torch.int8,
    "i16": torch.int16,
    "bool": torch.bool,
}
IR_DTYPES = {v: k for k, v in TORCH_DTYPES.items()}


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str
    doc: str
    fn: Callable
    min_inputs: int = 1
    max_inputs: int | None = 1
    attrs: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    weights: tuple[str, ...] = ()
    optional_weights: tuple[str, ...] = ()


OPS: dict[str, OpDef] = {}


def op(name, kind, doc, *, min_inputs=1, max_inputs=1, attrs=(), defaults=None, weights=(), optional_weights=()):
    def register(fn):
        OPS[name] = OpDef(name, kind, doc, fn, min_inputs, max_inputs, tuple(attrs), dict(defaults or {}),
                          tuple(weights), tuple(optional_weights))
        return fn
    return register


@op("const", "data", "a static tensor from the weight store", min_inputs=0, max_inputs=0, weights=("value",))
def _const(xs, a, w):
    return w["value"]


@op("conv2d", "mvm", "2-D convolution, NCHW; weight [Cout, Cin/groups, kh, kw]",
    attrs=("stride", "padding", "dilation", "groups"), weights=("weight",), optional_weights=("bias",))
def _conv2d(xs, a, w):
    return F.conv2d(xs[0], w["weight"], w.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])


@op("linear", "mvm", "x @ weight.T + bias over the last dimension; weight [N, K]",
    weights=("weight",), optional_weights=("bias",))
def _linear(xs, a, w):
    return F.linear(xs[0], w["weight"], w.get("bias"))


@op("matmul", "matmul", "product of two activations, batched over leading dimensions", min_inputs=2, max_inputs=2)
def _matmul(xs, a, w):
    return torch.matmul(xs[0], xs[1])


@op("maxpool2d", "sfu", "2-D max pooling", attrs=("kernel", "stride", "padding", "dilation", "ceil_mode"))
def _maxpool2d(xs, a, w):
    return F.max_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])


@op("avgpool2d", "sfu", "2-D average pooling",
    attrs=("kernel", "stride", "padding", "ceil_mode", "count_include_pad"))
def _avgpool2d(xs, a, w):
    return F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], a["ceil_mode"], a["count_include_pad"])


@op("adaptive_avgpool2d", "sfu", "average pooling to a fixed output size", attrs=("output_size",))
def _adaptive_avgpool2d(xs, a, w):
    return F.adaptive_avg_pool2d(xs[0], a["output_size"])


@op("mean", "sfu", "mean over dimensions", attrs=("dims", "keepdim"))
def _mean(xs, a, w):
    return torch.mean(xs[0], dim=a["dims"], keepdim=a["keepdim"])


def _binary(name, fn, doc):
    @op(name, "sfu", doc + "; with one input, the other operand is the attribute `scalar`",
        max_inputs=2, defaults={"scalar": None})
    def _run(xs, a, w):
        other = xs[1] if len(xs) == 2 else a["scalar"]
        if other is None:
            raise ValueError(f"{name} with one input needs attribute scalar")
        return fn(xs[0], other)


_binary("add", torch.add, "elementwise sum with broadcasting")
_binary("sub", torch.sub, "elementwise difference with broadcasting")
_binary("mul", torch.mul, "elementwise product with broadcasting")
_binary("div", torch.div, "elementwise quotient with broadcasting")


@op("concat", "data", "concatenation along `dim`", max_inputs=None, attrs=("dim",))
def _concat(xs, a, w):
    return torch.cat(list(xs), dim=a["dim"])


@op("relu", "sfu", "max(x, 0)")
def _relu(xs, a, w):
    return F.relu(xs[0])


@op("gelu", "sfu", "Gaussian error linear unit; approximate = none | tanh", defaults={"approximate": "none"})
def _gelu(xs, a, w):
    return F.gelu(xs[0], approximate=a["approximate"])


@op("tanh", "sfu", "hyperbolic tangent")
def _tanh(xs, a, w):
    return torch.tanh(xs[0])


@op("sigmoid", "sfu", "logistic function")
def _sigmoid(xs, a, w):
    return torch.sigmoid(xs[0])


@op("silu", "sfu", "x * sigmoid(x)")
def _silu(xs, a, w):
    return F.silu(xs[0])


@op("softmax", "sfu", "softmax along `dim`", attrs=("dim",))
def _softmax(xs, a, w):
    return torch.softmax(xs[0], dim=a["dim"])


@op("layernorm", "sfu", "layer normalisation over the last `ndim` dimensions",
    attrs=("ndim", "eps"), optional_weights=("weight", "bias"))
def _layernorm(xs, a, w):
    return F.layer_norm(xs[0], xs[0].shape[-a["ndim"]:], w.get("weight"), w.get("bias"), a["eps"])


@op("batchnorm", "sfu", "inference batch norm that could not fold into a conv: x * scale + shift per channel (dim 1)",
    weights=("scale", "shift"))
def _batchnorm(xs, a, w):
    view = (1, -1) + (1,) * (xs[0].dim() - 2)
    return xs[0] * w["scale"].reshape(view) + w["shift"].reshape(view)


@op("embedding", "data", "rows of `table` selected by integer ids", weights=("table",))
def _embedding(xs, a, w):
    return F.embedding(xs[0], w["table"])


@op("reshape", "data", "same elements, new shape", attrs=("shape",))
def _reshape(xs, a, w):
    return xs[0].reshape(a["shape"])


@op("permute", "data", "reorders dimensions", attrs=("dims",))
def _permute(xs, a, w):
    return xs[0].permute(a["dims"])


@op("slice", "data", "elements start:end:step along `dim`", attrs=("dim", "start", "end", "step"))
def _slice(xs, a, w):
    index = [slice(None)] * xs[0].dim()
    index[a["dim"]] = slice(a["start"], a["end"], a["step"])
    return xs[0][tuple(index)]


@op("select", "data", "element `index` along `dim`, removing that dimension", attrs=("dim", "index"))
def _select(xs, a, w):
    return xs[0].select(a["dim"], a["index"])


def attention_scale(head_dim: int) -> float:
    """The 1/sqrt(d) factor of scaled dot-product attention (Vaswani et al. 2017)."""
    return 1.0 / math.sqrt(head_dim)
