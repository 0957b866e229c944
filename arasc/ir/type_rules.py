"""Type rules: the output type of a layer from its operands' types, without running the op.

The lowering and the verifier infer the type of every layer (verify.py). The general way is to
run the op's own definition on meta tensors, and that stays the fallback. But torch runs most
elementwise ops on meta tensors through its Python references, and the first such call imports
torch._dynamo: 1.0-1.3 s of every `arasc compile`, as long as a ResNet-50 compile's passes
(issue 15); convolutions and pooling check their shapes with torch._check, which imports sympy
and torch's symbolic shapes (0.4 s). These rules cover the ops of CNNs and transformers.

A rule returns None for operands it does not vouch for (an unusual dtype, a shape that does not
fit): the caller then runs the op on meta tensors, whose error message names the problem. So a
rule only ever says what the op itself would say. tests/test_type_rules.py checks every rule
against the meta inference, on the zoo's layers and on random signatures.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .graph import TensorType

Shape = tuple[int, ...]
Rule = Callable[[Sequence[TensorType], dict, dict[str, TensorType]], TensorType | None]
CHANNEL_PARAMS = ("w_zp", "multiplier", "shift", "out_zp")
INTEGER = ("u8", "i8", "i16", "i32", "i64")


def broadcast(*shapes: Shape) -> Shape | None:
    """numpy's broadcast of the shapes, None where they do not broadcast."""
    ndim = max(len(s) for s in shapes)
    out = []
    for sizes in zip(*((1,) * (ndim - len(s)) + tuple(s) for s in shapes), strict=True):
        other = {d for d in sizes if d != 1}
        if len(other) > 1:
            return None
        out.append(other.pop() if other else 1)
    return tuple(out)


def codes(a: dict) -> str:
    """The dtype of requantized codes (qops._saturate): int16 when wide or a table index of more
    than 8 bits, else uint8."""
    return "i16" if a.get("wide") or a.get("levels") else "u8"


def _pairs(a: dict, names) -> list[tuple[int, int]] | None:
    """The attributes `names`, each a pair of ints (None where one is not)."""
    values = [a.get(n) for n in names]
    if not all(isinstance(v, tuple) and len(v) == 2 and all(type(i) is int for i in v) for v in values):
        return None
    return [(v[0], v[1]) for v in values if v is not None]


def _window_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of a convolution or pooling window sliding over `size` (torch's formula;
    with ceil_mode a last window must start inside the input or its left padding)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _conv_shape(x: Shape, weight: Shape, a: dict) -> Shape | None:
    pairs = _pairs(a, ("stride", "padding", "dilation"))
    groups = a.get("groups")
    if pairs is None or type(groups) is not int or groups < 1 or len(x) != 4 or len(weight) != 4:
        return None
    (stride, padding, dilation), (n, c, h, wd), (out, per_group, kh, kw) = pairs, x, weight
    if min(stride + dilation) < 1 or min(padding) < 0 or c != per_group * groups or out % groups or out == 0:
        return None
    sizes = [_window_size(size, k, s, p, d, False) for size, k, s, p, d in
             zip((h, wd), (kh, kw), stride, padding, dilation, strict=True)]
    return (n, out, *sizes) if min(sizes) >= 1 and min(kh, kw) >= 1 else None


def _pool_shape(x: Shape, a: dict, dilation=(1, 1)) -> Shape | None:
    pairs = _pairs(a, ("kernel", "stride", "padding"))
    if pairs is None or len(x) not in (3, 4) or type(a.get("ceil_mode")) is not bool or 0 in x:
        return None
    kernel, stride, padding = pairs
    if min(kernel + stride + dilation) < 1 or any(not 0 <= p <= k // 2 for p, k in zip(padding, kernel, strict=True)):
        return None
    sizes = [_window_size(size, k, s, p, d, a["ceil_mode"]) for size, k, s, p, d in
             zip(x[-2:], kernel, stride, padding, dilation, strict=True)]
    return x[:-2] + tuple(sizes) if min(sizes) >= 1 else None


def _matmul_shape(left: Shape, right: Shape) -> Shape | None:
    """torch.matmul of operands of rank 2 or more: batch dimensions broadcast."""
    if len(left) < 2 or len(right) < 2 or left[-1] != right[-2]:
        return None
    batch = broadcast(left[:-2], right[:-2])
    return None if batch is None else batch + (left[-2], right[-1])


def _reduced(shape: Shape, dims, keepdim: bool) -> Shape | None:
    if not isinstance(dims, tuple) or not shape:
        return None
    axes = {d % len(shape) for d in dims if -len(shape) <= d < len(shape)}
    if len(axes) != len(dims):
        return None
    return tuple(1 if i in axes else n for i, n in enumerate(shape) if keepdim or i not in axes)


def _adaptive(shape: Shape, output_size) -> Shape | None:
    if len(shape) not in (3, 4) or not (isinstance(output_size, tuple) and len(output_size) == 2):
        return None
    if any(s is not None and (not isinstance(s, int) or s < 1) for s in output_size):
        return None
    return shape[:-2] + tuple(d if s is None else s for s, d in zip(output_size, shape[-2:], strict=True))


def _concatenated(shapes: Sequence[Shape], dim) -> Shape | None:
    rank = len(shapes[0])
    if rank == 0 or not isinstance(dim, int) or not -rank <= dim < rank or any(len(s) != rank for s in shapes):
        return None
    dim %= rank
    if any(s[:dim] + s[dim + 1:] != shapes[0][:dim] + shapes[0][dim + 1:] for s in shapes):
        return None
    return shapes[0][:dim] + (sum(s[dim] for s in shapes),) + shapes[0][dim + 1:]


def _per_channel_fits(a: dict, w: dict[str, TensorType], channels: int, names=CHANNEL_PARAMS) -> bool:
    """Each requantization parameter is an attribute or an int32 weight [channels]."""
    return all((w[n].shape == (channels,) and w[n].dtype == "i32") if n in w else a.get(n) is not None for n in names)


def _typed(shape: Shape | None, dtype: str) -> TensorType | None:
    return None if shape is None else TensorType(dtype, shape)


# ---- float ops ---------------------------------------------------------------------------------

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _float_same(xs, a, w):
    return xs[0] if xs[0].dtype == "f32" else None


def _gelu(xs, a, w):
    return _float_same(xs, a, w) if a.get("approximate") in ("none", "tanh") else None


def _clamp(xs, a, w):
    bounds = [a.get("min"), a.get("max")]
    fits = any(b is not None for b in bounds) and all(b is None or _number(b) for b in bounds)
    return _float_same(xs, a, w) if fits else None


def _pow(xs, a, w):
    return _float_same(xs, a, w) if _number(a.get("exponent")) else None


def _softmax(xs, a, w):
    dim, rank = a.get("dim"), len(xs[0].shape)
    return _float_same(xs, a, w) if isinstance(dim, int) and -max(rank, 1) <= dim < max(rank, 1) else None


def _float_binary(xs, a, w):
    if any(x.dtype != "f32" for x in xs):
        return None
    if len(xs) == 2:
        return _typed(broadcast(xs[0].shape, xs[1].shape), "f32")
    return xs[0] if _number(a.get("scalar")) else None


def _layernorm(xs, a, w):
    (x,), ndim = xs, a.get("ndim")
    if x.dtype != "f32" or not isinstance(ndim, int) or not 0 < ndim <= len(x.shape):
        return None
    fits = all(t.dtype == "f32" and t.shape == x.shape[-ndim:] for t in w.values())
    return x if fits else None


def _batchnorm(xs, a, w):
    x = xs[0]
    fits = x.dtype == "f32" and len(x.shape) >= 2 and all(w[r] == TensorType("f32", (x.shape[1],))
                                                         for r in ("scale", "shift"))
    return x if fits else None


def _linear(xs, a, w):
    x, weight, bias = xs[0], w["weight"], w.get("bias")
    if x.dtype != "f32" or weight.dtype != "f32" or len(weight.shape) != 2 or not x.shape:
        return None
    n, k = weight.shape
    if x.shape[-1] != k or (bias is not None and bias != TensorType("f32", (n,))):
        return None
    return TensorType("f32", x.shape[:-1] + (n,))


def _conv2d(xs, a, w):
    x, weight, bias = xs[0], w["weight"], w.get("bias")
    if x.dtype != "f32" or weight.dtype != "f32" or (bias is not None and bias != TensorType("f32", weight.shape[:1])):
        return None
    return _typed(_conv_shape(x.shape, weight.shape, a), "f32")


def _maxpool2d(xs, a, w):
    dilation = _pairs(a, ("dilation",))
    if xs[0].dtype not in ("f32", "u8", "i16") or dilation is None:   # the quantized model pools codes
        return None
    return _typed(_pool_shape(xs[0].shape, a, dilation[0]), xs[0].dtype)


def _avgpool2d(xs, a, w):
    fits = xs[0].dtype == "f32" and type(a.get("count_include_pad")) is bool
    return _typed(_pool_shape(xs[0].shape, a), "f32") if fits else None


def _matmul(xs, a, w):
    return _typed(_matmul_shape(xs[0].shape, xs[1].shape), "f32") if xs[0].dtype == xs[1].dtype == "f32" else None


def _embedding(xs, a, w):
    ids, table = xs[0], w["table"]
    fits = ids.dtype in ("i64", "i32") and len(table.shape) == 2
    return TensorType(table.dtype, ids.shape + table.shape[1:]) if fits else None


def _concat(xs, a, w):
    if len({x.dtype for x in xs}) != 1:
        return None
    return _typed(_concatenated([x.shape for x in xs], a.get("dim")), xs[0].dtype)


def _mean(xs, a, w):
    return _typed(_reduced(xs[0].shape, a.get("dims"), bool(a.get("keepdim"))), "f32") if xs[0].dtype == "f32" else None


def _adaptive_avgpool2d(xs, a, w):
    return _typed(_adaptive(xs[0].shape, a.get("output_size")), "f32") if xs[0].dtype == "f32" else None


def _masked_softmax(xs, a, w):
    x, mask = xs
    fits = mask.dtype == "bool" and broadcast(x.shape, mask.shape) == x.shape
    return _softmax([x], a, w) if fits else None


def _compare(xs, a, w):
    if a.get("cmp") not in ("eq", "ne", "lt", "le", "gt", "ge"):
        return None
    if len(xs) == 2:
        return _typed(broadcast(xs[0].shape, xs[1].shape), "bool") if xs[0].dtype == xs[1].dtype else None
    return TensorType("bool", xs[0].shape) if _number(a.get("scalar")) else None


def _logical(xs, a, w):
    if a.get("fn") not in ("and", "or", "xor"):
        return None
    return _typed(broadcast(xs[0].shape, xs[1].shape), "bool") if xs[0].dtype == xs[1].dtype == "bool" else None


def _logical_not(xs, a, w):
    return TensorType("bool", xs[0].shape) if xs[0].dtype == "bool" else None


def _cumsum(xs, a, w):
    x, dim = xs[0], a.get("dim")
    fits = x.dtype in INTEGER + ("bool",) and isinstance(dim, int) and -len(x.shape) <= dim < len(x.shape)
    return TensorType("i64", x.shape) if fits else None


def _cast(xs, a, w):
    return TensorType(a["dtype"], xs[0].shape) if a.get("dtype") in INTEGER + ("f32", "bool") else None


def _where(xs, a, w):
    condition, left, right = xs
    if left.dtype != right.dtype or left.dtype == "f32":
        return None
    return _typed(broadcast(condition.shape, left.shape, right.shape), left.dtype)


# ---- quantized ops -----------------------------------------------------------------------------

def _quantize(xs, a, w):
    return TensorType("u8", xs[0].shape) if xs[0].dtype == "f32" else None


def _dequantize(xs, a, w):
    return TensorType("f32", xs[0].shape) if xs[0].dtype in INTEGER else None


def _qconv2d(xs, a, w):
    x, weight, bias = xs[0], w["weight"], w.get("bias")
    if x.dtype != "u8" or weight.dtype != "u8" or len(weight.shape) != 4:
        return None
    n = weight.shape[0]
    if (bias is not None and bias != TensorType("i32", (n,))) or not _per_channel_fits(a, w, n):
        return None
    return _typed(_conv_shape(x.shape, weight.shape, a), codes(a))


def _qlinear(xs, a, w):
    x, weight, bias = xs[0], w["weight"], w.get("bias")
    if x.dtype != "u8" or weight.dtype != "u8" or len(weight.shape) != 2 or not x.shape:
        return None
    n, k = weight.shape
    if x.shape[-1] != k or (bias is not None and bias != TensorType("i32", (n,))) or not _per_channel_fits(a, w, n):
        return None
    return TensorType(codes(a), x.shape[:-1] + (n,))


def _qmatmul(xs, a, w):
    if any(x.dtype not in INTEGER for x in xs):
        return None
    return _typed(_matmul_shape(xs[0].shape, xs[1].shape), codes(a))


def _qadd(xs, a, w):
    if any(x.dtype not in INTEGER for x in xs) or not len(a["zps"]) == len(a["multipliers"]) == len(xs):
        return None
    return _typed(broadcast(*(x.shape for x in xs)), codes(a))


def _qmul(xs, a, w):
    if any(x.dtype not in INTEGER for x in xs) or len(a["zps"]) != 2 or a.get("multiplier") is None:
        return None
    return _typed(broadcast(xs[0].shape, xs[1].shape), codes(a))


def _qconcat(xs, a, w):
    if any(x.dtype not in INTEGER for x in xs) or not len(a["zps"]) == len(a["multipliers"]) == len(xs):
        return None
    return _typed(_concatenated([x.shape for x in xs], a.get("dim")), "u8")


def _qrequant(xs, a, w):
    x, dim = xs[0], a.get("dim")
    if x.dtype not in INTEGER or not x.shape or not isinstance(dim, int) or not -len(x.shape) <= dim < len(x.shape):
        return None
    if not _per_channel_fits(a, w, x.shape[dim], ("multiplier", "shift", "out_zp")):
        return None
    return TensorType(codes(a), x.shape)


def _qrelu(xs, a, w):
    return xs[0] if xs[0].dtype in INTEGER else None


def _qavgpool2d(xs, a, w):
    if xs[0].dtype not in INTEGER:
        return None
    return _typed(_pool_shape(xs[0].shape, a), "u8")


def _qadaptive_avgpool2d(xs, a, w):
    return _typed(_adaptive(xs[0].shape, a.get("output_size")), "u8") if xs[0].dtype in INTEGER else None


def _qmean(xs, a, w):
    x = xs[0]
    if x.dtype not in INTEGER:
        return None
    shape = _reduced(x.shape, a.get("dims"), bool(a.get("keepdim")))
    return None if shape is None or math.prod(x.shape[d] for d in a["dims"]) == 0 else TensorType("u8", shape)


def _qsoftmax(xs, a, w):
    x, table, dim = xs[0], w["table"], a.get("dim")
    if x.dtype not in INTEGER or table.dtype != "i32" or len(table.shape) != 1 or not x.shape:
        return None
    if not isinstance(dim, int) or not -len(x.shape) <= dim < len(x.shape):
        return None
    return TensorType(codes(a), x.shape)


def _qmasked_softmax(xs, a, w):
    x, mask = xs
    if mask.dtype != "bool" or broadcast(x.shape, mask.shape) != x.shape:
        return None
    return _qsoftmax(xs[:1], a, w)


def _qlayernorm(xs, a, w):
    x, ndim = xs[0], a.get("ndim")
    if x.dtype not in INTEGER or not isinstance(ndim, int) or not 0 < ndim <= len(x.shape):
        return None
    if not all(t.dtype == "f32" and t.shape == x.shape[-ndim:] for t in w.values()):
        return None
    return TensorType(codes(a), x.shape)


RULES: dict[str, Rule] = {
    **{op: _float_same for op in ("relu", "tanh", "sigmoid", "silu", "hardswish", "hardsigmoid")},
    "gelu": _gelu, "clamp": _clamp, "pow": _pow, "softmax": _softmax,
    **{op: _float_binary for op in ("add", "sub", "mul", "div")},
    "conv2d": _conv2d, "maxpool2d": _maxpool2d, "avgpool2d": _avgpool2d, "matmul": _matmul, "embedding": _embedding,
    "layernorm": _layernorm, "batchnorm": _batchnorm, "linear": _linear, "concat": _concat, "mean": _mean,
    "adaptive_avgpool2d": _adaptive_avgpool2d, "masked_softmax": _masked_softmax, "compare": _compare,
    "logical": _logical, "logical_not": _logical_not, "cumsum": _cumsum, "cast": _cast, "where": _where,
    "quantize": _quantize, "dequantize": _dequantize, "qconv2d": _qconv2d, "qlinear": _qlinear,
    "qmatmul": _qmatmul, "qadd": _qadd, "qmul": _qmul, "qconcat": _qconcat, "qrequant": _qrequant,
    "qrelu": _qrelu, "qavgpool2d": _qavgpool2d, "qadaptive_avgpool2d": _qadaptive_avgpool2d, "qmean": _qmean,
    "qsoftmax": _qsoftmax, "qmasked_softmax": _qmasked_softmax, "qlayernorm": _qlayernorm,
}
