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
from collections.abc import Callable
from dataclasses import dataclass, field

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


@op("clamp", "sfu", "min(max(x, min), max) on a float tensor (ReLU6, hardtanh, clamp); a bound may be -inf/inf",
    attrs=("min", "max"))
def _clamp(xs, a, w):
    return torch.clamp(xs[0], a["min"], a["max"])


@op("hardswish", "sfu", "x * relu6(x + 3) / 6 (MobileNet-v3)")
def _hardswish(xs, a, w):
    return F.hardswish(xs[0])


@op("hardsigmoid", "sfu", "relu6(x + 3) / 6 (MobileNet-v3's squeeze-excitation gate)")
def _hardsigmoid(xs, a, w):
    return F.hardsigmoid(xs[0])


@op("pow", "sfu", "x ** exponent, a constant exponent (GPT-2's tanh GELU spells out x^3)", attrs=("exponent",))
def _pow(xs, a, w):
    return torch.pow(xs[0], a["exponent"])


@op("softmax", "sfu", "softmax along `dim`", attrs=("dim",))
def _softmax(xs, a, w):
    return torch.softmax(xs[0], dim=a["dim"])


@op("masked_softmax", "sfu", "softmax along `dim` over the entries where the bool `mask` (2nd input, broadcast) "
    "is true; masked entries are 0, and so is a row with no entry kept", min_inputs=2, max_inputs=2, attrs=("dim",))
def _masked_softmax(xs, a, w):
    x, mask = xs[0], xs[1].expand(xs[0].shape)
    if mask.dtype != torch.bool:
        raise TypeError(f"masked_softmax's mask must be bool, got {mask.dtype}")
    probs = torch.softmax(x.masked_fill(~mask, float("-inf")), dim=a["dim"])
    return probs.masked_fill(~mask, 0.0).nan_to_num(0.0)


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


# ---- integer and boolean ops: token ids and the masks computed from them (SFU) ---------------
COMPARISONS = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}
LOGICAL = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}


@op("compare", "sfu", "elementwise comparison `cmp` (eq ne lt le gt ge) -> bool, against a second input or the "
    "attribute `scalar`", max_inputs=2, attrs=("cmp",), defaults={"scalar": None})
def _compare(xs, a, w):
    return COMPARISONS[a["cmp"]](xs[0], xs[1] if len(xs) == 2 else a["scalar"])


@op("logical", "sfu", "elementwise `fn` (and or xor) of two bool tensors", min_inputs=2, max_inputs=2, attrs=("fn",))
def _logical(xs, a, w):
    return LOGICAL[a["fn"]](xs[0], xs[1])


@op("logical_not", "sfu", "elementwise not of a bool tensor")
def _logical_not(xs, a, w):
    return torch.logical_not(xs[0])


@op("cumsum", "sfu", "running sum along `dim` of an integer or bool tensor (int64 result)", attrs=("dim",))
def _cumsum(xs, a, w):
    return torch.cumsum(xs[0], dim=a["dim"])


@op("cast", "sfu", "conversion of an integer or bool tensor to `dtype` (an IR dtype name)", attrs=("dtype",))
def _cast(xs, a, w):
    return xs[0].to(TORCH_DTYPES[a["dtype"]])


@op("where", "sfu", "cond ? a : b on integer or bool tensors, broadcasting; cond (bool) is the first input",
    min_inputs=3, max_inputs=3)
def _where(xs, a, w):
    return torch.where(xs[0].bool(), xs[1], xs[2])   # a verified program may give any integer condition (nonzero: true)


@op("take", "data", "elements of the input at the flat `positions` (an int64 weight; the output has its shape)",
    weights=("positions",))
def _take(xs, a, w):
    return xs[0].reshape(-1)[w["positions"]]


@op("expand", "data", "broadcast to `shape` (size-1 dimensions repeated)", attrs=("shape",))
def _expand(xs, a, w):
    return xs[0].expand(a["shape"])


def attention_scale(head_dim: int) -> float:
    """The 1/sqrt(d) factor of scaled dot-product attention (Vaswani et al. 2017)."""
    return 1.0 / math.sqrt(head_dim)
