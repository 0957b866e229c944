"""The frontend's handler table: which torch module, function, method or ATen op lowers to
which IR layers. fx (torch functions, methods, nn modules) and torch.export (ATen ops) share
the same lowering helpers, so both paths produce the same layers.

Anything computed only from parameters and buffers is folded to a constant at compile time.
An op with run-time inputs that is not in this table stops with a FrontendError naming it.
"""
from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import lower_multihead_attention, lower_sdpa
from .errors import FrontendError, describe_node, target_name
from .lower import Lowerer, Val
from .trace import node_shape

aten = torch.ops.aten
_MISSING = object()

MODULES: dict[type, Callable] = {}
FUNCTIONS: dict[object, Callable] = {}
METHODS: dict[str, Callable] = {}


def handles(*targets, modules=(), methods=()):
    def register(fn):
        for t in targets:
            FUNCTIONS[t] = fn
        for m in modules:
            MODULES[m] = fn
        for m in methods:
            METHODS[m] = fn
        return fn
    return register


def arg(args, kwargs, i, name, default=_MISSING):
    if name in kwargs:
        return kwargs[name]
    if i < len(args):
        return args[i]
    if default is _MISSING:
        raise FrontendError(f"missing argument {name}")
    return default


def pair(v):
    return tuple(v) * (2 if len(tuple(v)) == 1 else 1) if isinstance(v, (list, tuple)) else (int(v), int(v))


def norm_dim(dim: int, ndim: int) -> int:
    return dim % ndim if ndim else 0


def has_val(x) -> bool:
    if isinstance(x, (Val, KeepMask, MaskedScores)):
        return True
    if isinstance(x, (list, tuple)):
        return any(has_val(y) for y in x)
    if isinstance(x, dict):
        return any(has_val(y) for y in x.values())
    return False


def const(lw: Lowerer, x, what: str) -> torch.Tensor:
    if isinstance(x, Val):
        lw.fail(f"{what} must be a parameter or constant, but it is computed at run time")
    return x


# ---- dispatch ---------------------------------------------------------------------------------
def lower_node(lw: Lowerer, node):
    args, kwargs = lw.resolve(node.args), lw.resolve(node.kwargs)
    if node.op == "call_function" and node.target is operator.getitem and isinstance(args[0], (tuple, list,
                                                                                                  torch.Size)):
        return args[0][args[1]]
    if not has_val((args, kwargs)):  # computed from constants only: folded now
        with torch.no_grad():
            if node.op == "call_module":
                return lw.cap.root.get_submodule(str(node.target))(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)
    handler, module = find_handler(lw, node)
    start = len(lw.layers)
    if isinstance(args[0] if args else None, KeepMask) and handler in MOVES_DATA:
        result = lower_on_mask(lw, handler, args, kwargs)
    else:
        result = handler(lw, module, args, kwargs) if module is not None else handler(lw, args, kwargs)
    lw.handled.append((handler, tuple(layer.op for layer in lw.layers[start:])))  # for the coverage table
    return result


def find_handler(lw: Lowerer, node):
    """(handler, the nn.Module for module calls or None); an unsupported target stops here."""
    if node.op == "call_module":
        module = lw.cap.root.get_submodule(str(node.target))
        for cls in type(module).__mro__:
            if cls in MODULES:
                return MODULES[cls], module
        _unsupported(lw, f"module {type(module).__module__}.{type(module).__qualname__} (the model's submodule "
                         f"{node.target})")
    if node.op == "call_method":
        if node.target not in METHODS:
            _unsupported(lw, f"tensor method .{node.target}()")
        return METHODS[node.target], None
    target = node.target
    handler = (FUNCTIONS.get(target) or FUNCTIONS.get(getattr(target, "overloadpacket", None))
               or NAMED_FUNCTIONS.get(target_name(target)))
    if handler is None:
        _unsupported(lw, f"function {target_name(target)}")
    return handler, None


def _unsupported(lw: Lowerer, what: str):
    raise FrontendError(f"{describe_node(lw.node)}: unsupported operation {what}. arasc lowers convolutions, "
                        f"linear layers, matmuls, pooling, elementwise arithmetic and activations, softmax, "
                        f"layer/batch norm, embedding, attention, integer ops on ids and masks, and the reshape, "
                        f"slice and split family; the full list is the coverage table in docs/frontend.md")


# ---- crossbar layers --------------------------------------------------------------------------
def emit_conv(lw, x, weight, bias, stride, padding, dilation, groups, wname):
    weights = {"weight": lw.weight(weight.float(), f"{wname}.weight")}
    if bias is not None:
        weights["bias"] = lw.weight(bias.float(), f"{wname}.bias")
    return lw.emit("conv2d", [x], {"stride": pair(stride), "padding": pair(padding), "dilation": pair(dilation),
                                   "groups": int(groups)}, weights)


def conv_padding(lw, padding, kernel, dilation):
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(t % 2 for t in total):
            lw.fail("padding='same' with an even kernel needs asymmetric padding, which conv2d does not express")
        return tuple(t // 2 for t in total)
    return pair(padding)


@handles(modules=(nn.Conv2d,))
def _conv_module(lw, mod, args, kwargs):
    if mod.padding_mode != "zeros":
        lw.fail(f"Conv2d padding_mode={mod.padding_mode!r} is not supported (only 'zeros')")
    padding = conv_padding(lw, mod.padding, mod.kernel_size, mod.dilation)
    return emit_conv(lw, args[0], mod.weight, mod.bias, mod.stride, padding, mod.dilation, mod.groups, lw.node.target)


@handles(F.conv2d, aten.conv2d)
def _conv_function(lw, args, kwargs):
    weight = const(lw, arg(args, kwargs, 1, "weight"), "conv2d weight")
    if weight.dim() != 4:
        lw.fail("only 2-D convolutions are supported")
    dilation = pair(arg(args, kwargs, 5, "dilation", 1))
    padding = conv_padding(lw, arg(args, kwargs, 4, "padding", 0), weight.shape[2:], dilation)
    base = lw.param_name(lw.node.args[1], lw.node_base_name(lw.node) + ".weight").removesuffix(".weight")
    return emit_conv(lw, args[0], weight, const(lw, arg(args, kwargs, 2, "bias", None), "conv2d bias"),
                     arg(args, kwargs, 3, "stride", 1), padding, dilation, arg(args, kwargs, 6, "groups", 1), base)


def emit_linear(lw, x, weight, bias, base):
    weights = {"weight": lw.weight(weight.float(), f"{base}.weight")}
    if bias is not None:
        weights["bias"] = lw.weight(bias.float(), f"{base}.bias")
    return lw.emit("linear", [x], weights=weights)


@handles(modules=(nn.Linear,))
def _linear_module(lw, mod, args, kwargs):
    return emit_linear(lw, args[0], mod.weight, mod.bias, lw.node.target)


@handles(F.linear, aten.linear)
def _linear_function(lw, args, kwargs):
    weight = const(lw, arg(args, kwargs, 1, "weight"), "linear weight")
    base = lw.param_name(lw.node.args[1], lw.node_base_name(lw.node) + ".weight").removesuffix(".weight")
    return emit_linear(lw, args[0], weight, const(lw, arg(args, kwargs, 2, "bias", None), "linear bias"), base)


@handles(torch.addmm, aten.addmm)
def _addmm(lw, args, kwargs):
    bias, x, w_t = args[0], args[1], const(lw, args[2], "addmm weight")
    if kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1:
        lw.fail("addmm with beta or alpha other than 1 is not supported")
    return emit_linear(lw, x, w_t.t().contiguous(), const(lw, bias, "addmm bias"), lw.node_base_name(lw.node))


@handles(torch.matmul, operator.matmul, torch.bmm, aten.matmul, aten.bmm, aten.mm, methods=("matmul", "bmm", "mm"))
def _matmul(lw, args, kwargs):
    a, b = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "other", None)
    if b is None:
        b = arg(args, kwargs, 1, "mat2")
    if isinstance(a, Val) and isinstance(b, Val):
        return lw.emit("matmul", [a, b])
    if isinstance(a, Val) and b.dim() == 2:
        return emit_linear(lw, a, b.t().contiguous(), None, lw.node_base_name(lw.node))
    lw.fail("a matmul with a constant left operand (or a constant right operand of more than 2 dimensions) "
            "is not supported; write it as a linear layer")


# ---- batch norm -------------------------------------------------------------------------------
def emit_batchnorm(lw, x, mean, var, gamma, beta, eps, base):
    scale = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + eps)
    shift = (beta if beta is not None else torch.zeros_like(mean)) - mean * scale
    producer = lw.producer(x) if isinstance(x, Val) else None
    conv_node = lw.node.args[0]
    if producer is not None and producer.op == "conv2d" and len(conv_node.users) == 1 \
            and all(ref.name not in _other_uses(lw, producer) for _, ref in producer.weights):
        return _fold_into_conv(lw, x, producer, scale, shift)
    return lw.emit("batchnorm", [x], weights={"scale": lw.weight(scale.float(), f"{base}.scale"),
                                              "shift": lw.weight(shift.float(), f"{base}.shift")})


def _other_uses(lw, layer):
    return {ref.name for other in lw.layers if other is not layer for _, ref in other.weights}


def _fold_into_conv(lw, x, conv, scale, shift):
    """y = (W*x + b) * scale + shift  ==  (W*scale) * x + (b*scale + shift)."""
    w_ref, b_ref = conv.weight("weight"), conv.weight("bias")
    w = torch.from_numpy(lw.weights[w_ref.name]) * scale.reshape(-1, 1, 1, 1)
    b = (torch.from_numpy(lw.weights[b_ref.name]) if b_ref else torch.zeros_like(scale)) * scale + shift
    lw.weights[w_ref.name] = w.float().numpy()
    bias_name = b_ref.name if b_ref else w_ref.name.removesuffix(".weight") + ".bias"
    lw.weights[bias_name] = b.float().numpy()
    from ..ir import TensorType, WeightRef
    bias_ref = WeightRef(bias_name, TensorType("f32", tuple(b.shape)))
    return lw.replace_layer(x, weights={"weight": w_ref, "bias": bias_ref})


@handles(modules=(nn.BatchNorm2d, nn.BatchNorm1d))
def _bn_module(lw, mod, args, kwargs):
    if mod.running_mean is None:
        lw.fail("BatchNorm without running statistics (track_running_stats=False) cannot run in inference")
    return emit_batchnorm(lw, args[0], mod.running_mean, mod.running_var, mod.weight, mod.bias, mod.eps,
                          lw.node.target)


@handles(F.batch_norm, aten.batch_norm, aten._native_batch_norm_legit_no_training)
def _bn_function(lw, args, kwargs):
    packet = getattr(lw.node.target, "overloadpacket", None)
    if packet is aten._native_batch_norm_legit_no_training:
        x, gamma, beta, mean, var = args[:5]
        eps = arg(args, kwargs, 6, "eps")
    elif packet is aten.batch_norm:
        x, gamma, beta, mean, var = args[:5]
        eps = arg(args, kwargs, 7, "eps")
    else:
        x, mean, var = args[:3]
        gamma, beta = arg(args, kwargs, 3, "weight", None), arg(args, kwargs, 4, "bias", None)
        eps = arg(args, kwargs, 7, "eps", 1e-5)
    out = emit_batchnorm(lw, x, const(lw, mean, "running mean"), const(lw, var, "running var"), gamma, beta, eps,
                         lw.node_base_name(lw.node))
    return (out, None, None) if packet is aten._native_batch_norm_legit_no_training else out


# ---- special-function-unit layers -------------------------------------------------------------
def _unary(op, *targets, modules=(), methods=(), **attrs_from_kwargs):
    def handler(lw, *rest):
        args, kwargs = rest[-2], rest[-1]
        attrs = {}
        if op == "gelu":
            approx = getattr(rest[0], "approximate", None) if len(rest) == 3 else kwargs.get("approximate", "none")
            attrs["approximate"] = approx or "none"
        return lw.emit(op, [args[0]], attrs)
    handles(*targets, modules=modules, methods=methods)(handler)


_unary("relu", F.relu, torch.relu, aten.relu, aten.relu_, modules=(nn.ReLU,), methods=("relu", "relu_"))
_unary("gelu", F.gelu, aten.gelu, modules=(nn.GELU,))
_unary("tanh", torch.tanh, F.tanh, aten.tanh, modules=(nn.Tanh,), methods=("tanh",))
_unary("sigmoid", torch.sigmoid, F.sigmoid, aten.sigmoid, modules=(nn.Sigmoid,), methods=("sigmoid",))
_unary("silu", F.silu, aten.silu, modules=(nn.SiLU,))


# Hard activations (MobileNet-v2/v3): clamp, hardswish and hardsigmoid are one SFU pass each;
# quantized, each becomes a 256-entry table like the other elementwise functions.
_unary("hardswish", F.hardswish, aten.hardswish, aten.hardswish_, modules=(nn.Hardswish,))
_unary("hardsigmoid", F.hardsigmoid, aten.hardsigmoid, aten.hardsigmoid_, modules=(nn.Hardsigmoid,))
handles(aten.sigmoid_, methods=("sigmoid_",))(FUNCTIONS[F.sigmoid])
handles(aten.silu_)(FUNCTIONS[F.silu])


@handles(torch.pow, operator.pow, aten.pow, methods=("pow",))
def _pow(lw, args, kwargs):
    x, exponent = args[0], arg(args, kwargs, 1, "exponent")
    if not isinstance(x, Val) or isinstance(exponent, (Val, torch.Tensor)):
        lw.fail("pow is supported with a run-time base and a constant number as exponent")
    if x.type.dtype != "f32":
        lw.fail("pow of an integer tensor is not supported")
    return lw.emit("pow", [x], {"exponent": float(exponent)})


def emit_clamp(lw, x, low, high):
    if isinstance(low, Val) or isinstance(high, Val):
        lw.fail("clamp with bounds computed at run time is not supported; use constant bounds")
    if x.type.dtype != "f32":
        lw.fail(f"clamp of a {x.type.dtype} tensor is not supported (float activations only)")
    low = float("-inf") if low is None else float(low)
    high = float("inf") if high is None else float(high)
    return lw.emit("clamp", [x], {"min": low, "max": high})


@handles(modules=(nn.Hardtanh,))  # nn.ReLU6 is a Hardtanh(0, 6)
def _hardtanh_module(lw, mod, args, kwargs):
    return emit_clamp(lw, args[0], mod.min_val, mod.max_val)


@handles(F.relu6, aten.relu6, aten.relu6_)
def _relu6(lw, args, kwargs):
    return emit_clamp(lw, args[0], 0.0, 6.0)


@handles(F.hardtanh, F.hardtanh_, aten.hardtanh, aten.hardtanh_)
def _hardtanh(lw, args, kwargs):
    return emit_clamp(lw, args[0], arg(args, kwargs, 1, "min_val", -1.0), arg(args, kwargs, 2, "max_val", 1.0))


@handles(torch.clamp, torch.clip, aten.clamp, aten.clip, aten.clamp_, methods=("clamp", "clip", "clamp_", "clip_"))
def _clamp(lw, args, kwargs):
    return emit_clamp(lw, args[0], arg(args, kwargs, 1, "min", None), arg(args, kwargs, 2, "max", None))


@handles(torch.clamp_min, aten.clamp_min, methods=("clamp_min",))
def _clamp_min(lw, args, kwargs):
    return emit_clamp(lw, args[0], arg(args, kwargs, 1, "min"), None)


@handles(torch.clamp_max, aten.clamp_max, methods=("clamp_max",))
def _clamp_max(lw, args, kwargs):
    return emit_clamp(lw, args[0], None, arg(args, kwargs, 1, "max"))


def emit_softmax(lw, x, dim):
    if isinstance(x, MaskedScores):
        return masked_softmax(lw, x, dim)
    return lw.emit("softmax", [x], {"dim": norm_dim(dim, x.ndim)})


@handles(modules=(nn.Softmax,))
def _softmax_module(lw, mod, args, kwargs):
    return emit_softmax(lw, args[0], mod.dim)


@handles(F.softmax, torch.softmax, aten.softmax, aten._softmax, methods=("softmax",))
def _softmax(lw, args, kwargs):
    x, dim = args[0], arg(args, kwargs, 1, "dim")
    dtype = kwargs.get("dtype")
    if dtype not in (None, torch.float32):
        lw.fail(f"softmax to dtype {dtype} is not supported")
    return emit_softmax(lw, x, dim)


def emit_layernorm(lw, x, shape, weight, bias, eps, base):
    weights = {}
    if weight is not None:
        weights["weight"] = lw.weight(weight.float(), f"{base}.weight")
    if bias is not None:
        weights["bias"] = lw.weight(bias.float(), f"{base}.bias")
    return lw.emit("layernorm", [x], {"ndim": len(tuple(shape)), "eps": float(eps)}, weights)


@handles(modules=(nn.LayerNorm,))
def _layernorm_module(lw, mod, args, kwargs):
    return emit_layernorm(lw, args[0], mod.normalized_shape, mod.weight, mod.bias, mod.eps, lw.node.target)


@handles(F.layer_norm, aten.layer_norm, aten.native_layer_norm)
def _layernorm(lw, args, kwargs):
    base = lw.param_name(lw.node.args[2] if len(lw.node.args) > 2 else None,
                         lw.node_base_name(lw.node) + ".weight").removesuffix(".weight")
    out = emit_layernorm(lw, args[0], arg(args, kwargs, 1, "normalized_shape"), arg(args, kwargs, 2, "weight", None),
                         arg(args, kwargs, 3, "bias", None), arg(args, kwargs, 4, "eps", 1e-5), base)
    return (out, None, None) if lw.node.target.__name__.startswith("native_layer_norm") else out


def emit_embedding(lw, ids, table, base):
    return lw.emit("embedding", [ids], weights={"table": lw.weight(table.float(), f"{base}.weight")})


@handles(modules=(nn.Embedding,))
def _embedding_module(lw, mod, args, kwargs):
    if mod.max_norm is not None:
        lw.fail("Embedding with max_norm renormalises its table at run time; not supported")
    return emit_embedding(lw, args[0], mod.weight, lw.node.target)


@handles(F.embedding)
def _embedding_function(lw, args, kwargs):
    base = lw.param_name(lw.node.args[1], lw.node_base_name(lw.node) + ".weight").removesuffix(".weight")
    return emit_embedding(lw, args[0], const(lw, args[1], "embedding table"), base)


@handles(aten.embedding)
def _embedding_aten(lw, args, kwargs):
    base = lw.param_name(lw.node.args[0], lw.node_base_name(lw.node) + ".weight").removesuffix(".weight")
    return emit_embedding(lw, args[1], const(lw, args[0], "embedding table"), base)


# ---- pooling ----------------------------------------------------------------------------------
def emit_maxpool(lw, x, kernel, stride, padding, dilation, ceil_mode):
    stride = stride if stride not in (None, [], ()) else kernel
    return lw.emit("maxpool2d", [x], {"kernel": pair(kernel), "stride": pair(stride), "padding": pair(padding),
                                      "dilation": pair(dilation), "ceil_mode": bool(ceil_mode)})


@handles(modules=(nn.MaxPool2d,))
def _maxpool_module(lw, mod, args, kwargs):
    if mod.return_indices:
        lw.fail("MaxPool2d(return_indices=True) is not supported")
    return emit_maxpool(lw, args[0], mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)


@handles(F.max_pool2d, aten.max_pool2d, aten.max_pool2d_with_indices)
def _maxpool(lw, args, kwargs):
    out = emit_maxpool(lw, args[0], arg(args, kwargs, 1, "kernel_size"), arg(args, kwargs, 2, "stride", None),
                       arg(args, kwargs, 3, "padding", 0), arg(args, kwargs, 4, "dilation", 1),
                       arg(args, kwargs, 5, "ceil_mode", False))
    if getattr(lw.node.target, "overloadpacket", None) is aten.max_pool2d_with_indices:
        return (out, None)
    return out


def emit_avgpool(lw, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if divisor_override is not None:
        lw.fail("avg_pool2d with divisor_override is not supported")
    stride = stride if stride not in (None, [], ()) else kernel
    return lw.emit("avgpool2d", [x], {"kernel": pair(kernel), "stride": pair(stride), "padding": pair(padding),
                                      "ceil_mode": bool(ceil_mode), "count_include_pad": bool(count_include_pad)})


@handles(modules=(nn.AvgPool2d,))
def _avgpool_module(lw, mod, args, kwargs):
    return emit_avgpool(lw, args[0], mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.count_include_pad,
                        mod.divisor_override)


@handles(F.avg_pool2d, aten.avg_pool2d)
def _avgpool(lw, args, kwargs):
    return emit_avgpool(lw, args[0], arg(args, kwargs, 1, "kernel_size"), arg(args, kwargs, 2, "stride", None),
                        arg(args, kwargs, 3, "padding", 0), arg(args, kwargs, 4, "ceil_mode", False),
                        arg(args, kwargs, 5, "count_include_pad", True), arg(args, kwargs, 6, "divisor_override", None))


def emit_adaptive_avgpool(lw, x, size):
    size = pair(size)
    size = tuple(x.shape[-2 + i] if s is None else int(s) for i, s in enumerate(size))
    return lw.emit("adaptive_avgpool2d", [x], {"output_size": size})


@handles(modules=(nn.AdaptiveAvgPool2d,))
def _adaptive_module(lw, mod, args, kwargs):
    return emit_adaptive_avgpool(lw, args[0], mod.output_size)


@handles(F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d)
def _adaptive(lw, args, kwargs):
    return emit_adaptive_avgpool(lw, args[0], arg(args, kwargs, 1, "output_size"))


@handles(torch.mean, aten.mean, methods=("mean",))
def _mean(lw, args, kwargs):
    x = args[0]
    dims = arg(args, kwargs, 1, "dim", None)
    dims = tuple(range(x.ndim)) if dims is None else (dims,) if isinstance(dims, int) else tuple(dims)
    return lw.emit("mean", [x], {"dims": tuple(sorted(norm_dim(d, x.ndim) for d in dims)),
                                 "keepdim": bool(arg(args, kwargs, 2, "keepdim", False))})


# ---- elementwise ------------------------------------------------------------------------------
def emit_binary(lw, op, a, b):
    if isinstance(a, torch.Tensor) and a.numel() == 1 and isinstance(b, Val):
        a = a.detach().item()
    if isinstance(b, torch.Tensor) and b.numel() == 1 and isinstance(a, Val):
        b = b.detach().item()
    if isinstance(a, Val) and isinstance(b, (int, float)):
        return lw.emit(op, [a], {"scalar": b})
    if isinstance(b, Val) and isinstance(a, (int, float)):
        if op in ("add", "mul"):
            return lw.emit(op, [b], {"scalar": a})
        if op == "sub":
            negated = lw.emit("mul", [b], {"scalar": -1}, base=lw.node_base_name(lw.node) + ".neg")
            return lw.emit("add", [negated], {"scalar": a})
        lw.fail("dividing a constant by a run-time tensor is not supported")
    return lw.emit(op, [a, b])


def _binary(op, *targets, methods=()):
    def handler(lw, args, kwargs):
        a, b = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "other")
        alpha = kwargs.get("alpha", 1)
        if alpha != 1:
            if isinstance(b, Val):
                lw.fail(f"{op} with alpha={alpha} on a run-time tensor is not supported")
            b = b * alpha
        if kwargs.get("rounding_mode") is not None:
            lw.fail("division with a rounding mode is not supported")
        if op == "add":
            masked = add_mask(lw, a, b)
            if masked is not None:
                return masked
        return emit_binary(lw, op, a, b)
    handles(*targets, methods=methods)(handler)


_binary("add", operator.add, operator.iadd, torch.add, aten.add, aten.add_, methods=("add", "add_"))
_binary("sub", operator.sub, operator.isub, torch.sub, aten.sub, methods=("sub",))
_binary("mul", operator.mul, operator.imul, torch.mul, aten.mul, aten.mul_, methods=("mul", "mul_"))
_binary("div", operator.truediv, torch.div, aten.div, methods=("div",))


@handles(aten.rsub)
def _rsub(lw, args, kwargs):
    return emit_binary(lw, "sub", args[1], args[0])


@handles(torch.cat, torch.concat, aten.cat, aten.concat)
def _cat(lw, args, kwargs):
    # torch.cat skips empty 1-D tensors (an empty key/value cache before the first token)
    tensors = [lw.as_val(t) for t in arg(args, kwargs, 0, "tensors")
               if not (isinstance(t, torch.Tensor) and t.dim() == 1 and t.numel() == 0)]
    dim = norm_dim(arg(args, kwargs, 1, "dim", 0), tensors[0].ndim)
    return tensors[0] if len(tensors) == 1 else lw.emit("concat", tensors, {"dim": dim})


# ---- data movement ----------------------------------------------------------------------------
def identity(lw, *rest):
    return rest[-2][0]


handles(aten.clone, aten.alias, aten.detach, aten.contiguous, aten.lift_fresh_copy, torch.clone,
        modules=(nn.Identity,), methods=("contiguous", "clone", "detach"))(identity)


def eval_identity(lw, x, p, training):
    """Dropout and stochastic depth: identities at inference; in training mode they draw random
    masks, which a compiled inference program has no use for."""
    if training and p:
        lw.fail(f"{target_name(lw.node.target)} in training mode (p={p}) is random; call model.eval(), or pass "
                f"training=False")
    return x


@handles(modules=(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout))
def _dropout_module(lw, mod, args, kwargs):
    return eval_identity(lw, args[0], mod.p, mod.training)


@handles(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
def _dropout(lw, args, kwargs):
    return eval_identity(lw, args[0], arg(args, kwargs, 1, "p", 0.5), arg(args, kwargs, 2, "training", True))


@handles(aten.dropout, aten.feature_dropout, aten.alpha_dropout, aten.feature_alpha_dropout)
def _dropout_aten(lw, args, kwargs):
    return eval_identity(lw, args[0], args[1], args[2])


# torchvision is optional: its stochastic depth (EfficientNet, ConvNeXt) is matched by name. (Its
# StochasticDepth module is no leaf for torch.fx, which traces into it down to this function.)
NAMED_FUNCTIONS = {"torchvision.ops.stochastic_depth.stochastic_depth": lambda lw, args, kwargs: eval_identity(
    lw, args[0], arg(args, kwargs, 1, "p"), arg(args, kwargs, 3, "training", True))}


@handles(aten._assert_tensor_metadata, aten._assert_async, aten._assert_scalar, aten.sym_constrain_range_for_size)
def _assertion(lw, args, kwargs):
    """torch.export's dtype/shape assertions: the traced shapes were checked when the graph was
    captured and are checked again on every layer, so the assertion has nothing left to do."""
    return None


def emit_reshape(lw, x: Val, shape):
    shape = tuple(int(d) for d in shape)
    return x if shape == x.shape else lw.emit("reshape", [x], {"shape": shape})


def reshape_to_traced(lw, *rest):
    """view/reshape/flatten/squeeze/unsqueeze: the traced output shape says it all."""
    x = rest[-2][0]
    meta = node_shape(lw.node)
    if meta is None:
        lw.fail("no propagated shape for a reshape")
    return emit_reshape(lw, x, meta[0])


handles(torch.reshape, torch.flatten, torch.unflatten, torch.squeeze, torch.unsqueeze, aten.view, aten._unsafe_view,
        aten.reshape, aten.flatten, aten.unflatten, aten.squeeze, aten.unsqueeze, modules=(nn.Flatten, nn.Unflatten),
        methods=("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"))(
    reshape_to_traced)


def emit_permute(lw, x: Val, dims):
    dims = tuple(norm_dim(d, x.ndim) for d in dims)
    return x if dims == tuple(range(x.ndim)) else lw.emit("permute", [x], {"dims": dims})


@handles(torch.permute, aten.permute, methods=("permute",))
def _permute(lw, args, kwargs):
    x = args[0]
    dims = arg(args, kwargs, 1, "dims")
    dims = tuple(dims) if isinstance(dims, (list, tuple)) else tuple(args[1:])
    return emit_permute(lw, x, dims)


@handles(torch.transpose, aten.transpose, methods=("transpose",))
def _transpose(lw, args, kwargs):
    x = args[0]
    d0, d1 = norm_dim(args[1], x.ndim), norm_dim(args[2], x.ndim)
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return emit_permute(lw, x, dims)


@handles(aten.t, methods=("t",))
def _t(lw, args, kwargs):
    return emit_permute(lw, args[0], (1, 0)) if args[0].ndim == 2 else args[0]


def emit_slice(lw, x: Val, dim, start, end, step):
    size = x.shape[dim]
    start, end, _ = slice(start, end, step).indices(size)
    end = max(end, start)
    if (start, end, step) == (0, size, 1):
        return x
    return lw.emit("slice", [x], {"dim": dim, "start": start, "end": end, "step": int(step)})


@handles(aten.slice)
def _slice(lw, args, kwargs):
    x = args[0]
    return emit_slice(lw, x, norm_dim(arg(args, kwargs, 1, "dim", 0), x.ndim), arg(args, kwargs, 2, "start", None),
                      arg(args, kwargs, 3, "end", None), arg(args, kwargs, 4, "step", 1))


def emit_pieces(lw, x: Val, dim: int, sizes) -> tuple:
    """chunk / split: consecutive slices along `dim`; pieces nothing reads are dropped later."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(emit_slice(lw, x, dim, start, start + size, 1))
        start += size
    if start != x.shape[dim]:
        lw.fail(f"split sizes {list(sizes)} do not add up to the dimension's {x.shape[dim]}")
    return tuple(pieces)


def _even_sizes(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)] or [0]


@handles(torch.chunk, aten.chunk, methods=("chunk",))
def _chunk(lw, args, kwargs):
    x = args[0]
    dim = norm_dim(arg(args, kwargs, 2, "dim", 0), x.ndim)
    chunks = int(arg(args, kwargs, 1, "chunks"))
    return emit_pieces(lw, x, dim, _even_sizes(x.shape[dim], -(-x.shape[dim] // chunks)))


@handles(torch.split, aten.split, aten.split_with_sizes, methods=("split",))
def _split(lw, args, kwargs):
    x = args[0]
    sizes = arg(args, kwargs, 1, "split_size_or_sections", None)
    if sizes is None:
        sizes = kwargs.get("split_size", kwargs.get("split_sizes"))
    dim = norm_dim(arg(args, kwargs, 2, "dim", 0), x.ndim)
    sizes = _even_sizes(x.shape[dim], int(sizes)) if isinstance(sizes, int) else [int(s) for s in sizes]
    return emit_pieces(lw, x, dim, sizes)


@handles(torch.unbind, aten.unbind, methods=("unbind",))
def _unbind(lw, args, kwargs):
    x = args[0]
    dim = norm_dim(arg(args, kwargs, 1, "dim", 0), x.ndim)
    return tuple(lw.emit("select", [x], {"dim": dim, "index": i}) for i in range(x.shape[dim]))


@handles(torch.channel_shuffle, F.channel_shuffle, F.native_channel_shuffle, aten.channel_shuffle,
         aten.native_channel_shuffle, modules=(nn.ChannelShuffle,))
def _channel_shuffle(lw, *rest):
    """ShuffleNet's shuffle: [N, g*c, ...] -> [N, g, c, ...] -> swap g and c -> [N, c*g, ...]."""
    args, kwargs = rest[-2], rest[-1]
    x = args[0]
    groups = rest[0].groups if len(rest) == 3 else int(arg(args, kwargs, 1, "groups"))
    n, channels, *spatial = x.shape
    split = emit_reshape(lw, x, (n, groups, channels // groups, *spatial))
    swapped = emit_permute(lw, split, (0, 2, 1) + tuple(range(3, split.ndim)))
    return emit_reshape(lw, swapped, x.shape)


@handles(aten.select, torch.select, methods=("select",))
def _select(lw, args, kwargs):
    x = args[0]
    dim = norm_dim(arg(args, kwargs, 1, "dim"), x.ndim)
    return lw.emit("select", [x], {"dim": dim, "index": int(arg(args, kwargs, 2, "index")) % x.shape[dim]})


@handles(operator.getitem)
def _getitem(lw, args, kwargs):
    x, index = args
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, Val) for i in index):
        lw.fail("indexing with index tensors computed at run time is not supported")
    if any(isinstance(i, (torch.Tensor, list)) for i in index):
        return emit_take(lw, x, index)
    if Ellipsis in index:
        at = index.index(Ellipsis)
        fill = x.ndim - (len(index) - 1 - sum(i is None for i in index))
        index = index[:at] + (slice(None),) * fill + index[at + 1:]
    dim = 0
    for item in index:
        if item is None:
            shape = x.shape[:dim] + (1,) + x.shape[dim:]
            x = emit_reshape(lw, x, shape)
            dim += 1
        elif isinstance(item, int):
            x = lw.emit("select", [x], {"dim": dim, "index": item % x.shape[dim]})
        else:
            x = emit_slice(lw, x, dim, item.start, item.stop, item.step or 1)
            dim += 1
    return x


@handles(methods=("size",))
def _size(lw, args, kwargs):
    x, dim = args[0], arg(args, kwargs, 1, "dim", None)
    return torch.Size(x.shape) if dim is None else x.shape[dim]


@handles(getattr)
def _getattr(lw, args, kwargs):
    x, name = args
    if name == "shape":
        return torch.Size(x.shape)
    if name == "ndim":
        return x.ndim
    lw.fail(f"reading .{name} of a run-time tensor is not supported")


@handles(torch.zeros_like, torch.ones_like, aten.zeros_like, aten.ones_like, aten.new_zeros, aten.new_ones,
         methods=("new_zeros", "new_ones"))
def _filled_like(lw, args, kwargs):
    """Tensors that depend only on a run-time tensor's (static) shape are compile-time constants."""
    meta = node_shape(lw.node)
    name = getattr(lw.node.target, "__name__", str(lw.node.target))
    return (torch.ones if "ones" in name else torch.zeros)(meta[0], dtype=meta[1])


@handles(methods=("dim",))
def _dim(lw, args, kwargs):
    return args[0].ndim


# ---- attention --------------------------------------------------------------------------------
handles(F.scaled_dot_product_attention, aten.scaled_dot_product_attention)(lower_sdpa)
handles(modules=(nn.MultiheadAttention,))(lower_multihead_attention)

# Integer ids and attention masks (their handlers register themselves in this table).
from .ids_and_masks import KeepMask, MaskedScores, _expand, add_mask, emit_take, lower_on_mask, masked_softmax  # noqa: E402

# Handlers that only move data: they apply unchanged to the boolean inside an attention mask.
MOVES_DATA = {reshape_to_traced, _slice, _select, _getitem, _permute, _transpose, identity, _expand}

# Modules that lower to one layer: in torch.export graphs, their op is named after the module path.
UNIT_MODULES = {f"{cls.__module__}.{cls.__qualname__}" for cls in MODULES} - {
    f"{nn.MultiheadAttention.__module__}.{nn.MultiheadAttention.__qualname__}"}
