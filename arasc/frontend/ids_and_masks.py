"""Integer ops on token ids and the attention masks computed from them.

Transformers compute position ids and masks from their integer inputs: RoBERTa's position ids
are `cumsum(input_ids != pad) * (input_ids != pad) + pad`, BERT and GPT-2 turn `attention_mask`
into a boolean keep-mask and then into an additive float mask (0 where kept, a very negative
number elsewhere). The integer ops run in the SFU on integer tensors (ops `compare`, `logical`,
`cumsum`, `cast`, `where`); when the ids are not a run-time input they fold at compile time
like any constant.

An additive mask is never materialised as a float tensor: its values (0 and -3.4e38) would
leave no uint8 code for the scores it is added to. The frontend keeps it as a `KeepMask` (the
boolean it was made from) and the softmax after `scores + mask` becomes a `masked_softmax`:
the same probabilities, since exp(x - 1e4) is 0 in float32 for any score below 1e4 in size.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from .handlers import arg, handles, norm_dim
from .lower import Val
from .trace import node_shape

aten = torch.ops.aten
# Additive-mask values at or below this drop their entry: exp(-1e4) underflows to 0 in float32.
DROP_BELOW = -1e4


@dataclass(frozen=True)
class KeepMask:
    """An additive attention mask held as the boolean it came from: True keeps the entry."""

    keep: Val | torch.Tensor

    def __repr__(self):
        return "an additive attention mask (supported only as the mask added to attention scores before softmax)"


@dataclass(frozen=True)
class MaskedScores:
    """Attention scores plus a KeepMask, waiting for their softmax."""

    scores: Val
    keep: Val | torch.Tensor

    def __repr__(self):
        return "masked attention scores (supported only as the input of a softmax)"


def keep_of_constant(mask: torch.Tensor) -> torch.Tensor | None:
    """The keep-mask of a constant additive mask holding only 0 and very negative values."""
    if not mask.is_floating_point():
        return None
    keep, drop = mask == 0, mask <= DROP_BELOW
    return keep if bool((keep | drop).all()) and bool(drop.any()) else None


def combine(lw, a, b):
    """Both keep-masks (constant or run-time) hold."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a & b
    return lw.emit("logical", [a, b], {"fn": "and"}, base=lw.node_base_name(lw.node) + ".keep")


def add_mask(lw, a, b):
    """`scores + mask` and `mask + mask` when a mask is involved; None otherwise."""
    if isinstance(a, (KeepMask, torch.Tensor)) and isinstance(b, (Val, MaskedScores)):
        a, b = b, a
    if isinstance(b, torch.Tensor) and isinstance(a, (Val, MaskedScores)):
        keep = keep_of_constant(b)
        if keep is None:
            return None
        b = KeepMask(keep)
    if isinstance(a, KeepMask) and isinstance(b, KeepMask):
        return KeepMask(combine(lw, a.keep, b.keep))
    if isinstance(b, KeepMask):
        if isinstance(a, MaskedScores):
            return MaskedScores(a.scores, combine(lw, a.keep, b.keep))
        if isinstance(a, Val) and a.type.dtype == "f32":
            return MaskedScores(a, b.keep)
    if isinstance(a, MaskedScores) or isinstance(b, MaskedScores):
        lw.fail("masked attention scores can only go into a softmax")
    return None


def masked_softmax(lw, scores: MaskedScores, dim: int, base=None):
    return lw.emit("masked_softmax", [scores.scores, lw.as_val(scores.keep)], {"dim": norm_dim(dim, scores.scores.ndim)},
                   base=base)


def _scalar(x):
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not isinstance(x, Val):
        return x.item()
    return x


def _is_int(x) -> bool:
    return isinstance(x, Val) and x.type.dtype != "f32"


# ---- comparisons ------------------------------------------------------------------------------
_MIRROR = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def emit_compare(lw, cmp, a, b):
    if not isinstance(a, Val):
        a, b, cmp = b, a, _MIRROR[cmp]
    if a.type.dtype == "f32":
        lw.fail(f"comparing float activations ({cmp}) is not supported; comparisons run on integer ids and masks")
    b = _scalar(b)
    if isinstance(b, float) and b.is_integer():
        b = int(b)
    if isinstance(b, (bool, int)):
        return lw.emit("compare", [a], {"cmp": cmp, "scalar": int(b)})
    if isinstance(b, float):
        lw.fail(f"comparing an integer tensor with the float {b} is not supported")
    return lw.emit("compare", [a, lw.as_val(b)], {"cmp": cmp})


def _comparison(cmp):
    def handler(lw, args, kwargs):
        return emit_compare(lw, cmp, arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "other"))
    handles(getattr(torch, cmp), getattr(operator, cmp), getattr(aten, cmp), methods=(cmp, f"__{cmp}__"))(handler)


for _cmp in _MIRROR:
    _comparison(_cmp)


# ---- boolean logic ----------------------------------------------------------------------------
def _bool_operand(lw, x):
    x = _scalar(x)
    if isinstance(x, bool):
        x = torch.tensor(x)
    if isinstance(x, Val) and x.type.dtype != "bool" or isinstance(x, torch.Tensor) and x.dtype != torch.bool:
        lw.fail("bitwise and/or/xor/not on integer tensors is not supported; only on boolean masks")
    return lw.as_val(x)


def _logical(fn, *targets, methods=()):
    def handler(lw, args, kwargs):
        a, b = args[0], args[1]
        if isinstance(a, KeepMask) or isinstance(b, KeepMask):
            lw.fail("logic on an additive attention mask is not supported")
        return lw.emit("logical", [_bool_operand(lw, a), _bool_operand(lw, b)], {"fn": fn})
    handles(*targets, methods=methods)(handler)


_logical("and", operator.and_, torch.logical_and, torch.bitwise_and, aten.logical_and, aten.bitwise_and, aten.__and__,
         methods=("logical_and", "bitwise_and", "__and__"))
_logical("or", operator.or_, torch.logical_or, torch.bitwise_or, aten.logical_or, aten.bitwise_or, aten.__or__,
         methods=("logical_or", "bitwise_or", "__or__"))
_logical("xor", operator.xor, torch.logical_xor, torch.bitwise_xor, aten.logical_xor, aten.bitwise_xor, aten.__xor__,
         methods=("logical_xor", "bitwise_xor", "__xor__"))


@handles(operator.invert, torch.logical_not, torch.bitwise_not, aten.logical_not, aten.bitwise_not,
         methods=("logical_not", "bitwise_not", "__invert__"))
def _not(lw, args, kwargs):
    return lw.emit("logical_not", [_bool_operand(lw, args[0])])


# ---- running sums and casts -------------------------------------------------------------------
@handles(torch.cumsum, aten.cumsum, methods=("cumsum",))
def _cumsum(lw, args, kwargs):
    x = args[0]
    if not _is_int(x):
        lw.fail("cumsum of float activations is not supported; it runs on integer ids and masks")
    out = lw.emit("cumsum", [x], {"dim": norm_dim(arg(args, kwargs, 1, "dim"), x.ndim)})
    return emit_cast(lw, out, node_shape(lw.node)[1])


def emit_cast(lw, x, dtype):
    from .lower import ir_type

    target = ir_type((), dtype).dtype
    if isinstance(x, KeepMask):
        return x  # a mask's dtype changes, its meaning does not
    if target == x.type.dtype:
        return x
    if x.type.dtype == "f32":
        lw.fail(f"casting a float activation to {dtype} is not supported")
    return lw.emit("cast", [x], {"dtype": target})


@handles(methods=("to", "float", "type_as", "int", "long", "bool", "type"))
def _to(lw, args, kwargs):
    meta = node_shape(lw.node)
    return emit_cast(lw, args[0], meta[1]) if meta is not None else args[0]


handles(aten._to_copy, aten.to, aten.type_as)(_to)


# ---- selection: where / masked_fill -----------------------------------------------------------
def _is_drop(x) -> bool:
    x = _scalar(x)
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x <= DROP_BELOW


def _is_zero(x) -> bool:
    x = _scalar(x)
    return isinstance(x, (int, float)) and x == 0


def _typed_const(x, dtype):
    return torch.as_tensor(_scalar(x), dtype=dtype)


@handles(torch.where, aten.where, methods=("where",))
def _where(lw, args, kwargs):
    cond, a, b = args[0], arg(args, kwargs, 1, "input"), arg(args, kwargs, 2, "other")
    meta = node_shape(lw.node)
    for scores, fill, keep_where in ((a, b, True), (b, a, False)):  # scores kept where cond (or where not)
        if isinstance(scores, Val) and scores.type.dtype == "f32" and _is_drop(fill):
            keep = cond if keep_where else (~cond if isinstance(cond, torch.Tensor) else
                                            lw.emit("logical_not", [_bool_operand(lw, cond)]))
            return MaskedScores(scores, keep)
    if meta is not None and meta[1].is_floating_point and isinstance(cond, Val):
        if _is_zero(a) and _is_drop(b):
            return KeepMask(cond)
        if _is_drop(a) and _is_zero(b):
            return KeepMask(lw.emit("logical_not", [cond]))
        lw.fail("torch.where producing a float tensor is supported only for an additive attention mask "
                "(0 where kept, a very negative value elsewhere)")
    if isinstance(cond, Val) and cond.type.dtype != "bool":
        lw.fail("torch.where needs a boolean condition")
    dtype = meta[1] if meta is not None else torch.int64
    branches = [x if isinstance(x, Val) else _typed_const(x, dtype) for x in (a, b)]
    if any(isinstance(x, Val) and x.type.dtype == "f32" for x in branches):
        lw.fail("torch.where between float activations is not supported")
    return lw.emit("where", [lw.as_val(cond), *(lw.as_val(x) for x in branches)])


@handles(aten.masked_fill, methods=("masked_fill",))
def _masked_fill(lw, args, kwargs):
    x, mask, value = args[0], args[1], args[2]
    if isinstance(x, Val) and x.type.dtype == "f32":
        if not _is_drop(value):
            lw.fail("masked_fill of float activations is supported only with a very negative value (attention "
                    "masks: the softmax after it drops the filled entries)")
        keep = lw.emit("logical_not", [_bool_operand(lw, mask)]) if isinstance(mask, Val) else ~mask
        return MaskedScores(x, keep)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(x.any()) and _is_drop(value):
        keep = lw.emit("logical_not", [_bool_operand(lw, mask)]) if isinstance(mask, Val) else ~mask
        return KeepMask(keep)
    dtype = node_shape(lw.node)[1]
    return lw.emit("where", [_bool_operand(lw, mask), lw.as_val(_typed_const(value, dtype)), lw.as_val(x)])


def emit_take(lw, x, index):
    """Advanced indexing of an integer or bool tensor with constant index tensors (masks picked
    per batch and position): the flat positions it reads are a compile-time constant."""
    if x.type.dtype == "f32":
        lw.fail("advanced indexing of float activations is not supported")
    positions = torch.arange(x.type.numel, dtype=torch.int64).reshape(x.shape)[tuple(index)]
    return lw.emit("take", [x], weights={"positions": lw.weight(positions, lw.node_base_name(lw.node) + ".positions")})


@handles(aten.index)
def _index(lw, args, kwargs):
    x, indices = args[0], args[1]
    if any(isinstance(i, Val) for i in indices):
        lw.fail("indexing with index tensors computed at run time is not supported")
    return emit_take(lw, x, tuple(slice(None) if i is None else i for i in indices))


@handles(torch.gather, aten.gather, methods=("gather",))
def _gather(lw, args, kwargs):
    """gather from a constant table at run-time integer positions (RoBERTa's buffered token-type
    ids): out[..., j, ...] = table[..., index[..., j, ...], ...] along `dim`, i.e. an `embedding`
    of flat positions index * stride(dim) + (the other coordinates' fixed offset)."""
    x, dim, index = args[0], arg(args, kwargs, 1, "dim"), arg(args, kwargs, 2, "index")
    if isinstance(x, Val) or not isinstance(index, Val):
        lw.fail("gather is supported from a constant tensor at run-time positions only")
    x = x.contiguous()
    dim = norm_dim(dim, x.dim())
    strides = x.stride()
    offset = sum(torch.arange(n).reshape([-1 if d == k else 1 for d in range(index.ndim)]) * strides[k]
                 for k, n in enumerate(index.shape) if k != dim)
    flat = index if strides[dim] == 1 else lw.emit("mul", [index], {"scalar": int(strides[dim])})
    flat = lw.emit("add", [flat, lw.as_val(torch.as_tensor(offset, dtype=torch.int64))])
    table = lw.weight(x.reshape(-1, 1), lw.node_base_name(lw.node) + ".table")
    rows = lw.emit("embedding", [flat], weights={"table": table})
    return lw.emit("reshape", [rows], {"shape": tuple(index.shape)})


def lower_on_mask(lw, handler, args, kwargs):
    """Run a data-movement handler on the boolean inside a KeepMask (masks are sliced, viewed and
    expanded like the tensors they stand for) and wrap the result again."""
    mask = args[0]
    inner = (mask.keep if isinstance(mask.keep, Val) else lw.as_val(mask.keep),) + tuple(args[1:])
    return KeepMask(handler(lw, inner, kwargs))


@handles(torch.Tensor.expand, aten.expand, methods=("expand", "expand_as"))
def _expand(lw, args, kwargs):
    x = args[0]
    shape = tuple(node_shape(lw.node)[0])
    return x if shape == x.shape else lw.emit("expand", [x], {"shape": shape})
