"""The special function unit (SFU) and the data-movement ops of the interpreter-simulator.

Every op of a quantized graph that does not run on the crossbars, in numpy. This is a second,
independent implementation of the compiler's integer reference executor (the torch functions
of arasc/ir/qops.py and arasc/ir/ops.py) and matches it bit for bit (tests/test_runtime_sfu.py).
Integer steps are exact int64 arithmetic, so any exact formula gives the reference's result;
the float steps (quantize, dequantize, qlayernorm) repeat the reference's float64 operations in
the same order, each correctly rounded (IEEE + - * / sqrt), so they give the same bits.

Rounding, as in qops: requantization rounds half up, `(acc * m + 2^(shift-1)) >> shift` with a
flooring shift; averages round half up; float -> integer rounds half to even (np.rint).

Each entry is `fn(inputs, attrs, weights) -> array`, attributes as in the IR. Optional
attributes (`relu`, qlut's `dim`, `scalar`) may be absent, as in an IR dump.

    quantize:             f32 -> u8, clamp(rint(x / scale) + zp, 0, 255), the division in float64
    dequantize:           u8 -> f32, (q - zp) * scale in float64, rounded once to f32
    qmatmul:              out_zp + round_half_up(sum_k (a - a_zp)(b - b_zp) * multiplier / 2^shift), batched
    qadd:                 out_zp + round_half_up(sum_i (x_i - zps[i]) * multipliers[i] / 2^shift), broadcasting;
                          relu clamps at out_zp; int16 codes when wide (the residual path)
    qmul:                 out_zp + round_half_up((a - zps[0])(b - zps[1]) * multiplier / 2^shift), broadcasting
    qconcat:              each input requantized to out_zp + round_half_up((x_i - zps[i]) * multipliers[i] / 2^shift),
                          concatenated along dim
    qrequant:             out_zp + round_half_up((x - x_zp) * multiplier / 2^shift), per layer or per channel along dim
    qrelu:                max(x, zp)
    qlut:                 table[x] (table [256]) or table[c, x] (table [C, 256], c the index along dim, default 1)
    qavgpool2d:           zp + round_half_up(sum(x - zp) / d) over torch's windows, d torch's divisor
    qadaptive_avgpool2d:  round_half_up(mean(x)) over torch's adaptive windows
    qmean:                round_half_up(mean(x)) over dims
    qsoftmax:             e = table[min(max(x) - x, len - 1)], p = floor(e 2^31 / sum e), requantized by multiplier/shift
    qmasked_softmax:      qsoftmax over the entries whose bool mask (2nd input) is true, the others 0
    qlayernorm:           exact integer sums, then the reference's float64 steps, rint at out_scale/out_zp
    const:                the weight `value`
    reshape:              same elements, new shape
    permute:              dimensions reordered
    slice:                start:end:step along dim
    select:               element index along dim, which disappears
    embedding:            rows of table picked by integer ids
    concat:               concatenation along dim (inputs sharing scale and zero point)
    maxpool2d:            window max with dilation, padding never wins, torch's ceil_mode sizes
    relu:                 max(x, 0) on an integer tensor
    add, sub, mul:        on integer tensors (token-id arithmetic the quantizer keeps), wrapping like torch;
                          with one input the other operand is the integer attribute `scalar`
    avgpool2d:            on int64, torch's integer average: sum / divisor truncated toward zero
    compare, logical, logical_not, cumsum, cast, where, expand, take: on integer and bool tensors (ids, masks)
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from .windows import output_length

U8_MAX = 255
I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1


class DataError(ValueError):
    """A value the program's data cannot take (an embedding id past the table): the input's fault.
    `line` is set by the machine to the instruction's line."""
    line = 0
SOFTMAX_PROB_BITS = 31   # qsoftmax's probabilities are Q31 integers before requantization


# ---- integer helpers ----------------------------------------------------------------------------

def _wide(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.int64)


def _to_u8(q: np.ndarray, low: int = 0) -> np.ndarray:
    """Saturate integer-valued q (int64 or float64) to [low, 255] as uint8."""
    return np.clip(q, low, U8_MAX).astype(np.uint8)


def _rounding_shift(acc: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """round_half_up(acc * multiplier / 2^shift); numpy's >> on int64 floors, as torch's does."""
    return (acc * multiplier + (1 << (shift - 1))) >> shift


def _range(a: dict) -> tuple[int, int, type]:
    """The output's codes: uint8, int16 for a `wide` value (the residual path), or 0..levels in
    int16 for a table index wider than 8 bits."""
    if a.get("levels"):
        return 0, a["levels"], np.int16
    return (I16_MIN, I16_MAX, np.int16) if a.get("wide", False) else (0, U8_MAX, np.uint8)


def _saturate(q: np.ndarray, a: dict, low=None) -> np.ndarray:
    """Saturate integer-valued q to the output's codes; `low` raises the floor (a fused ReLU)."""
    lo, hi, dtype = _range(a)
    q = np.clip(q, lo, hi)
    return (q if low is None else np.maximum(q, low)).astype(dtype)


def _relu_floor(a: dict):
    """A fused ReLU clamps at the output zero point, the code of real 0."""
    return a["out_zp"] if a.get("relu", False) else None


def _channel_param(a: dict, w: dict, name: str, shape: tuple[int, ...]):
    """A requantization parameter: the attribute, or the per-channel int32 weight of that role."""
    return _wide(w[name]).reshape(shape) if name in w else a[name]


def _requantize(acc: np.ndarray, a: dict) -> np.ndarray:
    return _saturate(a["out_zp"] + _rounding_shift(acc, a["multiplier"], a["shift"]), a, _relu_floor(a))


def _divide_rounded(total: np.ndarray, count) -> np.ndarray:
    """round_half_up(total / count) for int64 total and count > 0."""
    return (2 * total + count) // (2 * count)


# ---- boundaries: float <-> uint8 ------------------------------------------------------------------

def quantize(xs, a, w):
    return _to_u8(np.rint(np.asarray(xs[0], np.float64) / a["scale"]) + a["zp"])


def dequantize(xs, a, w):
    return ((_wide(xs[0]) - a["zp"]).astype(np.float64) * a["scale"]).astype(np.float32)


# ---- arithmetic -----------------------------------------------------------------------------------

def qmatmul(xs, a, w):
    left, right = (_wide(x) - zp for x, zp in zip(xs, (a["a_zp"], a["b_zp"]), strict=True))
    # float64 BLAS is exact: each product is below 2^16, so sums of K < 2^37 of them stay below 2^53.
    acc = np.matmul(left.astype(np.float64), right.astype(np.float64)).astype(np.int64)
    return _requantize(acc, a)


def qadd(xs, a, w):
    lo, hi, dtype = _range(a)
    if len(xs) == 2 and xs[0].shape == xs[1].shape and xs[0].dtype == xs[1].dtype:
        # the residual add of two same-shape tensors, as one fused loop: the same formula (numba,
        # imported here: a compile imports this module for its tables and never adds)
        from .kernels import qadd_pair

        out = np.empty(xs[0].shape, dtype)
        floor = lo if _relu_floor(a) is None else max(lo, _relu_floor(a))
        qadd_pair(np.ascontiguousarray(xs[0]).reshape(-1), np.ascontiguousarray(xs[1]).reshape(-1),
                  np.array(a["zps"], np.int64), np.array(a["multipliers"], np.int64),
                  (1 << (a["shift"] - 1)) + (a["out_zp"] << a["shift"]), a["shift"], floor, hi, out.reshape(-1))
        return out
    terms = [(_wide(x) - zp) * m for x, zp, m in zip(xs, a["zps"], a["multipliers"], strict=True)]
    # The multipliers share one shift, so the sum rounds once.
    return _saturate(a["out_zp"] + _rounding_shift(sum(terms[1:], terms[0]), 1, a["shift"]), a, _relu_floor(a))


def qrequant(xs, a, w):
    x = _wide(xs[0])
    dim = a.get("dim", -1) % x.ndim
    shape = tuple(-1 if d == dim else 1 for d in range(x.ndim))
    m, shift, out_zp = (_channel_param(a, w, name, shape) for name in ("multiplier", "shift", "out_zp"))
    return _saturate(out_zp + _rounding_shift(x - a["x_zp"], m, shift), a)


def qmul(xs, a, w):
    left, right = (_wide(x) - zp for x, zp in zip(xs, a["zps"], strict=True))
    return _requantize(left * right, a)


def qconcat(xs, a, w):
    parts = [_to_u8(a["out_zp"] + _rounding_shift((_wide(x) - zp) * m, 1, a["shift"]))
             for x, zp, m in zip(xs, a["zps"], a["multipliers"], strict=True)]
    return np.concatenate(parts, axis=a["dim"])


def qrelu(xs, a, w):
    return np.maximum(xs[0], a["zp"])


def qlut(xs, a, w):
    x, table = _wide(xs[0]), w["table"]
    if table.ndim == 1:
        return table[x]
    dim = a.get("dim", 1) % x.ndim
    if table.shape[0] != x.shape[dim]:
        raise ValueError(f"per-channel table has {table.shape[0]} rows, input has {x.shape[dim]} channels")
    channel = np.arange(x.shape[dim]).reshape([-1 if d == dim else 1 for d in range(x.ndim)])
    return table[channel, x]


# ---- pooling ----------------------------------------------------------------------------------------

def _spatial(x: np.ndarray, a: dict, dilation=(1, 1)):
    """Per spatial axis: (size, kernel, stride, pad, dilation, output length)."""
    for size, k, s, p, d in zip(x.shape[-2:], a["kernel"], a["stride"], a["padding"], dilation, strict=True):
        yield size, k, s, p, d, output_length(size, k, s, p, d, a["ceil_mode"])


def _window_sums(x: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """Sums of x (int64) over the rectangles [r0, r1) x [c0, c1), from an integral image.

    rows = (r0, r1) and cols = (c0, c1) are arrays of bounds inside the input; the result is
    [..., len(r0), len(c0)]. Exact: int64 sums, and differences of wrapped sums are exact too."""
    integral = np.zeros(x.shape[:-2] + (x.shape[-2] + 1, x.shape[-1] + 1), np.int64)
    integral[..., 1:, 1:] = x.cumsum(-2).cumsum(-1)
    (r0, r1), (c0, c1) = (r[:, None] for r in rows), cols
    return integral[..., r1, c1] - integral[..., r0, c1] - integral[..., r1, c0] + integral[..., r0, c0]


def _avg_windows(size: int, kernel: int, stride: int, pad: int, out: int):
    """torch's avg_pool2d windows on one axis: bounds clipped to the input, and the length
    count_include_pad divides by (the padding counts, an overhang past it from ceil_mode does not)."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    return (np.maximum(start, 0), np.minimum(end, size)), end - start


def _avg_sums(x: np.ndarray, a: dict) -> tuple[np.ndarray, np.ndarray]:
    """(window sums of x, torch's divisor per window) for avg_pool2d's attributes."""
    (rows, padded_h), (cols, padded_w) = (_avg_windows(n, k, s, p, out) for n, k, s, p, _, out in _spatial(x, a))
    if a["count_include_pad"]:
        divisor = padded_h[:, None] * padded_w
    else:
        divisor = (rows[1] - rows[0])[:, None] * (cols[1] - cols[0])
    return _window_sums(x, rows, cols), divisor


def qavgpool2d(xs, a, w):
    # Sums of x - zp over the clipped windows: padding counts as zp, the code of real 0.
    total, divisor = _avg_sums(_wide(xs[0]) - a["zp"], a)
    return _to_u8(a["zp"] + _divide_rounded(total, divisor))


def avgpool2d(xs, a, w):
    if xs[0].dtype != np.int64:
        raise TypeError(f"avgpool2d runs on int64 tensors here (torch's integer kernel), got {xs[0].dtype}")
    total, divisor = _avg_sums(xs[0], a)
    # torch divides integers in C++: the quotient truncates toward zero.
    return np.sign(total) * (np.abs(total) // divisor)


def _adaptive_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def qadaptive_avgpool2d(xs, a, w):
    x = _wide(xs[0])
    sizes = [x.shape[d] if s is None else s for s, d in zip(a["output_size"], (-2, -1), strict=True)]
    rows, cols = (_adaptive_windows(x.shape[d], out) for d, out in zip((-2, -1), sizes))
    count = (rows[1] - rows[0])[:, None] * (cols[1] - cols[0])
    return _to_u8(_divide_rounded(_window_sums(x, rows, cols), count))


def qmean(xs, a, w):
    x, dims = _wide(xs[0]), tuple(a["dims"])
    count = math.prod(x.shape[d] for d in dims)
    return _to_u8(_divide_rounded(x.sum(dims, keepdims=a["keepdim"]), count))


def _taps(size: int, kernel: int, stride: int, pad: int, dilation: int, out: int) -> np.ndarray:
    """[out, kernel] input positions of each window's taps, some in the padding (outside [0, size))."""
    return np.arange(out)[:, None] * stride - pad + np.arange(kernel) * dilation


def maxpool2d(xs, a, w):
    x = xs[0]
    rows, cols = (_taps(n, k, s, p, d, out) for n, k, s, p, d, out in _spatial(x, a, a["dilation"]))
    (top, bottom), (left, right) = ((max(0, -t.min()), max(0, t.max() + 1 - n))
                                    for t, n in zip((rows, cols), x.shape[-2:]))
    # torch's padding is -inf, which never wins; the dtype's lowest value never wins either (a tie
    # with a real value gives that value), and a window all in padding gives it, as torch does.
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)],
                    constant_values=np.iinfo(x.dtype).min)
    windows = padded[..., (rows + top)[:, :, None, None], cols + left]   # [..., out_h, k_h, out_w, k_w]
    return windows.max(axis=(-3, -1))


# ---- normalisations -----------------------------------------------------------------------------

def qsoftmax(xs, a, w):
    x, dim = _wide(xs[0]), a["dim"]
    e = _wide(w["table"])[np.minimum(x.max(dim, keepdims=True) - x, len(w["table"]) - 1)]
    p = (e << SOFTMAX_PROB_BITS) // e.sum(dim, keepdims=True)
    return _requantize(p, a)


def qmasked_softmax(xs, a, w):
    x, dim = _wide(xs[0]), a["dim"]
    mask = np.broadcast_to(xs[1], x.shape)
    largest = np.maximum(np.where(mask, x, -1).max(dim, keepdims=True), 0)
    e = np.where(mask, _wide(w["table"])[np.clip(largest - x, 0, U8_MAX)], 0)
    p = (e << SOFTMAX_PROB_BITS) // np.maximum(e.sum(dim, keepdims=True), 1)
    return _requantize(p, a)


def qlayernorm(xs, a, w):
    dims = tuple(range(-a["ndim"], 0))
    d = _wide(xs[0]) - a["x_zp"]
    n = math.prod(d.shape[i] for i in dims)
    s1, s2 = d.sum(dims, keepdims=True), (d * d).sum(dims, keepdims=True)
    centred, spread = (n * d - s1).astype(np.float64), (n * s2 - s1 * s1).astype(np.float64)
    # The reference's float64 operations in its order; the scalar products are Python floats there too.
    # np.sqrt is IEEE's correctly rounded sqrt, as the reference's (torch.sqrt on CPU is at times an ulp off).
    y = centred * a["x_scale"] / np.sqrt(spread * (a["x_scale"] * a["x_scale"]) + a["eps"] * n * n)
    if "weight" in w:
        y = y * w["weight"].astype(np.float64)
    if "bias" in w:
        y = y + w["bias"].astype(np.float64)
    # Clipped in float64 before the integer cast, so that a y past int64 (an f32 weight near its
    # largest) saturates too; in range, the same as rint then add.
    lo, hi, _ = _range(a)
    return _saturate(np.clip(np.rint(y / a["out_scale"]) + a["out_zp"], lo, hi), a)


# ---- data movement and integer ops --------------------------------------------------------------

def const(xs, a, w):
    return w["value"]


def reshape(xs, a, w):
    return xs[0].reshape(a["shape"])


def permute(xs, a, w):
    return xs[0].transpose(a["dims"])


def slice_(xs, a, w):
    index = [slice(None)] * xs[0].ndim
    index[a["dim"]] = slice(a["start"], a["end"], a["step"])
    return xs[0][tuple(index)]


def select(xs, a, w):
    return np.take(xs[0], a["index"], axis=a["dim"])


def embedding(xs, a, w):
    ids, table = xs[0], w["table"]
    # numpy would wrap negative ids; torch rejects them, and ids past the end, as we do.
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise DataError(f"embedding ids {ids.min()}..{ids.max()} outside the table's {len(table)} rows")
    return table[ids]


def concat(xs, a, w):
    return np.concatenate(xs, axis=a["dim"])


def relu(xs, a, w):
    return np.maximum(xs[0], 0)


def _integer_operand(name: str, x: np.ndarray, scalar) -> np.ndarray | int:
    """The scalar operand as torch applies it to an integer tensor: cast to the tensor's dtype
    (wrapping) so the result keeps that dtype; a bool tensor promotes (to int64, or stays bool)."""
    if scalar is None:
        raise ValueError(f"{name} with one input needs attribute scalar")
    if not isinstance(scalar, int) or x.dtype.kind not in "biu":
        raise TypeError(f"{name} runs on integer tensors with integer scalars here, got {x.dtype} and {scalar!r}")
    return scalar if x.dtype == np.bool_ else np.array(scalar).astype(x.dtype)


def _zero_dim_cast(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torch lets a tensor with dimensions set the integer dtype over a 0-d one (wrapping it); numpy
    promotes both. Same outcome for every other pair, bools included."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and (x.ndim == 0) != (y.ndim == 0):
        dtype = y.dtype if x.ndim == 0 else x.dtype
        return x.astype(dtype), y.astype(dtype)
    return x, y


def _integer_binary(name: str, ufunc) -> Callable:
    def run(xs, a, w):
        if len(xs) == 2:
            return ufunc(*_zero_dim_cast(*xs))
        return ufunc(xs[0], _integer_operand(name, xs[0], a.get("scalar")))
    return run


COMPARISONS = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
               "ge": np.greater_equal}
LOGICAL = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}
NUMPY_TYPES = {"f32": np.float32, "i64": np.int64, "i32": np.int32, "u8": np.uint8, "i8": np.int8, "bool": np.bool_}


def compare(xs, a, w):
    return COMPARISONS[a["cmp"]](xs[0], xs[1] if len(xs) == 2 else a["scalar"])


def logical(xs, a, w):
    return LOGICAL[a["fn"]](xs[0], xs[1])


def logical_not(xs, a, w):
    return np.logical_not(xs[0])


def cumsum(xs, a, w):
    return np.cumsum(xs[0], axis=a["dim"], dtype=np.int64)


def cast(xs, a, w):
    return xs[0].astype(NUMPY_TYPES[a["dtype"]])


def where(xs, a, w):
    return np.where(*xs)


def take(xs, a, w):
    return xs[0].reshape(-1)[w["positions"]]


def expand(xs, a, w):
    return np.broadcast_to(xs[0], a["shape"]).copy()


def _array(fn: Callable) -> Callable:
    """numpy turns 0-d results into scalars; the interpreter's values are always arrays."""
    @functools.wraps(fn)
    def run(xs, a, w):
        return np.asarray(fn(xs, a, w))
    return run


SFU_OPS: dict[str, Callable] = {name: _array(fn) for name, fn in {
    "quantize": quantize, "dequantize": dequantize,
    "qmatmul": qmatmul, "qadd": qadd, "qrequant": qrequant, "qmul": qmul, "qconcat": qconcat, "qrelu": qrelu, "qlut": qlut,
    "qavgpool2d": qavgpool2d, "qadaptive_avgpool2d": qadaptive_avgpool2d, "qmean": qmean,
    "qsoftmax": qsoftmax, "qlayernorm": qlayernorm,
    "const": const, "reshape": reshape, "permute": permute, "slice": slice_, "select": select,
    "embedding": embedding, "concat": concat, "maxpool2d": maxpool2d, "relu": relu,
    "add": _integer_binary("add", np.add), "sub": _integer_binary("sub", np.subtract),
    "mul": _integer_binary("mul", np.multiply), "avgpool2d": avgpool2d,
    "qmasked_softmax": qmasked_softmax, "compare": compare, "logical": logical, "logical_not": logical_not,
    "cumsum": cumsum, "cast": cast, "where": where, "expand": expand, "take": take,
}.items()}
