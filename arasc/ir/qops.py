"""The quantized op set: integer semantics of the INT8 pipeline (DESIGN.md section 3).

Activations are uint8 with a zero point, weights per-layer asymmetric uint8 with a zero point,
biases int32 at scale s_x * s_w (Jacob et al., "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", CVPR 2018). A real value r is q with
r = scale * (q - zp). Every op is exact integer arithmetic except `quantize`, `dequantize` and
`qlayernorm`, whose float steps are spelled out in their docs and in docs/quantization.md.

Rounding, once for all ops:
- requantization (integer -> integer) rounds half up: `(acc * m + 2^(shift-1)) >> shift`
  with an arithmetic (flooring) shift, m an int32 multiplier in [2^30, 2^31) and shift >= 1;
- float -> integer (`quantize`, `qlayernorm`) rounds half to even (torch.round).

Ops here are registered in the same `OPS` table as the float ops, so the float evaluator runs
them (it is the integer reference executor) and the verifier infers their types on meta
tensors. The crossbar layers (qconv2d, qlinear), most of an evaluation, take torch's int8 GEMM
on codes centred on 128 where it sums exactly on this CPU, with their zero-point correction and
requantization fused into one pass (`_int8_crossbar`). Otherwise integer products of uint8
values are formed in float64 where torch has no integer kernel (matmul on CPU): each product is
below 2^16 and the sum of K of them below K * 2^16, so every partial sum is an integer below
2^53 for any K < 2^37 and float64 represents it exactly whatever the summation order; the
result is exact. Convolutions take float32 on codes centred on 128 instead, in chunks whose
sums stay below 2^24 (`_conv_products`): exact too, and about ten times faster than torch's
float64 convolution, which has no oneDNN kernel.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..isa.program import CHANNEL_PARAMS
from .ops import op

U8_MAX = 255
I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1
MULTIPLIER_BITS = 31     # m in [2^30, 2^31): the int32 fixed-point multiplier of gemmlowp / TFLite
SOFTMAX_EXP_BITS = 16    # qsoftmax's exponentials: table[0] = 2^16 stands for exp(0) = 1
SOFTMAX_PROB_BITS = 31   # qsoftmax's probabilities are Q31 integers before requantization


F32_EXACT = 1 << 24      # float32 holds every integer up to 2^24 exactly
CENTRED_TERMS = 1 << 10  # products of codes less 128 (at most 2^14) a float32 sum holds exactly: 2^24 / 2^14
MAX_SHIFT = 52           # out_zp * 2^shift (< 2^60) plus acc * m (< 2^62 in practice) stays inside int64


def crossbar_multiplier_bits(k: int, largest_bias: int) -> int:
    """Bits of a crossbar layer's requantization multiplier that keep it inside int64: the
    verifier bounds the accumulator by 4 k 255^2 + |bias| (runtime/verify.py), and that times
    m < 2^bits stays below 2^62. 31 bits but where K runs to tens of thousands (VGG-16's
    classifier.0, K = 25,088, gets 29: with 31 it fit or not by the multiplier's mantissa)."""
    return min(MULTIPLIER_BITS, 62 - (4 * k * U8_MAX * U8_MAX + largest_bias).bit_length())


def fixed_point(real: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """(m, shift) with real ~= m * 2^-shift, m in [2^(bits-1), 2^bits), 1 <= shift <= 52; below
    2^-22, m is smaller (see shared_fixed_point). Fewer bits than 31 where the accumulator is
    wider than 32 bits (int16 operands)."""
    m, shift = shared_fixed_point((real,), bits)
    return m[0], shift


def fixed_points(reals: np.ndarray, bits: int = MULTIPLIER_BITS) -> tuple[np.ndarray, np.ndarray]:
    """`fixed_point` of every entry of `reals` (int64 multipliers and shifts), in numpy: a
    layer's per-channel multipliers number in the thousands (BERT-Large: 347 K in all), and one
    Python call each cost 0.6 s of its compile. An entry `fixed_point` rejects raises its error."""
    reals = np.asarray(reals, np.float64)
    mantissa, exponent = np.frexp(np.abs(reals))
    shift = bits - exponent.astype(np.int64)
    shift -= np.round(mantissa * 2.0**bits) == 2.0**bits     # rounding reached 2^bits: renormalise
    bad = ~(np.abs(reals) > 0) | (shift < 1)
    if bad.any():
        fixed_point(float(reals[bad][0]), bits)               # raises its error
    shift = np.minimum(shift, MAX_SHIFT)
    return np.round(reals * 2.0**shift).astype(np.int64), shift


def shared_fixed_point(reals, bits: int = MULTIPLIER_BITS) -> tuple[tuple[int, ...], int]:
    """Signed multipliers sharing one shift, chosen so the largest |real| gets m in [2^(bits-1), 2^bits).

    Sharing the shift lets a sum of several rescaled inputs (qadd) round once. A multiplier
    below 2^-22 (a degenerate layer, e.g. GoogLeNet at random init, whose inputs are ~1e-11)
    keeps the largest shift, MAX_SHIFT = 52, and a smaller m = round(real 2^52): the error of
    acc * m / 2^52 against acc * real is then below |acc| 2^-53 < 2^-21 of an output code for
    any |acc| < 2^32, so the result is the exactly rounded one except when acc * real falls
    within 2^-21 of a rounding tie; a multiplier below 2^-53 becomes m = 0, a layer whose
    accumulator cannot move its output by half a code."""
    largest = max(abs(r) for r in reals)
    if not largest > 0:
        raise ValueError(f"fixed-point multipliers {tuple(reals)}: need a nonzero one")
    mantissa, exponent = math.frexp(largest)          # largest = mantissa * 2^exponent, mantissa in [0.5, 1)
    shift = bits - exponent
    if round(mantissa * 2**bits) == 2**bits:
        shift -= 1                                    # rounding reached 2^bits: renormalise
    if shift < 1:
        raise ValueError(f"multiplier {largest!r} is outside the fixed-point range (below 2^{bits - 1})")
    shift = min(shift, MAX_SHIFT)
    return tuple(int(round(r * 2.0**shift)) for r in reals), shift


def rounding_shift(acc: torch.Tensor, multiplier, shift) -> torch.Tensor:
    """round_half_up(acc * multiplier / 2^shift) in int64. |acc| < 2^32 keeps acc * m below 2^63.
    multiplier and shift are ints, or int64 tensors broadcasting against acc (one per channel)."""
    if isinstance(shift, torch.Tensor):
        return torch.bitwise_right_shift(acc * multiplier + torch.bitwise_left_shift(torch.ones_like(shift), shift - 1),
                                         shift)
    return (acc * multiplier + (1 << (shift - 1))) >> shift


def _to_u8(q: torch.Tensor, low: int = 0) -> torch.Tensor:
    """Saturate integer-valued q (an integer or float64 tensor) to [low, 255] as uint8."""
    return q.clamp(low, U8_MAX).to(torch.uint8)


def _saturate(q: torch.Tensor, a: dict, low=None) -> torch.Tensor:
    """Saturate to the output's code range: uint8, or int16 for a `wide` value (the SFU's residual
    path, docs/quantization.md); `low` (an int or a per-channel tensor) raises the floor (fused ReLU).
    q, an int64 temporary of the caller's, is overwritten."""
    lo, hi, dtype = (I16_MIN, I16_MAX, torch.int16) if a.get("wide") else (0, U8_MAX, torch.uint8)
    if a.get("levels"):    # a table index of more than 8 bits: codes 0..levels in int16
        lo, hi, dtype = 0, a["levels"], torch.int16
    q = q.clamp_(lo, hi)
    if low is not None:
        q = torch.maximum(q, torch.as_tensor(low, dtype=q.dtype, device=q.device), out=q)
    return q.to(dtype)


def _relu_floor(a: dict):
    """A fused ReLU clamps at the output zero point, the code of real 0."""
    return a["out_zp"] if a.get("relu") else None


def channel_param(a: dict, w: dict, name: str, shape: tuple[int, ...]):
    """A requantization parameter of a crossbar layer: the attribute (one for the layer) or the
    int32 weight of that role (one per output channel), shaped to broadcast along the channels."""
    if name in w:
        return _wide(w[name]).reshape(shape)
    if a.get(name) is None:
        raise ValueError(f"{name} must be an attribute (per layer) or a weight (per channel)")
    return a[name]


def requantize(acc: torch.Tensor, a: dict, w: dict | None = None, channels: tuple[int, ...] = (-1,)) -> torch.Tensor:
    """int64 accumulator -> uint8 (int16 when `wide`) at the output scale:
    out_zp + round_half_up(acc * m / 2^shift); m, shift and out_zp per layer or per channel
    (`channels`: the broadcast shape of a per-channel parameter). `acc`, an int64 temporary of
    the caller's (each op's own), is worked on in place: an integer evaluation of a network
    otherwise allocates, and the OS zeroes, several full-size int64 copies per layer."""
    w = w or {}
    m, shift, out_zp = (channel_param(a, w, k, channels) for k in ("multiplier", "shift", "out_zp"))
    acc *= m
    acc += torch.bitwise_left_shift(torch.ones_like(shift), shift - 1) if isinstance(shift, torch.Tensor) \
        else 1 << (shift - 1)
    acc >>= shift
    acc += out_zp
    return _saturate(acc, a, out_zp if a.get("relu") else None)


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.int64)


def _exact(x: torch.Tensor) -> torch.Tensor:
    """Integers as float64, for products torch has no integer kernel for (exact, see module doc)."""
    return x.to(torch.float64)


# ---- boundaries: float <-> uint8 -------------------------------------------------------------

@op("quantize", "sfu", "f32 -> u8: clamp(round_half_even(x / scale) + zp, 0, 255), the division in float64",
    attrs=("scale", "zp"))
def _quantize(xs, a, w):
    return _to_u8(torch.round(xs[0].to(torch.float64) / a["scale"]) + a["zp"])


@op("dequantize", "sfu", "u8 -> f32: (q - zp) * scale, in float64 then rounded to f32", attrs=("scale", "zp"))
def _dequantize(xs, a, w):
    return ((_wide(xs[0]) - a["zp"]).to(torch.float64) * a["scale"]).to(torch.float32)


# ---- crossbar layers ---------------------------------------------------------------------------

MVM_ATTRS = ("x_zp",)
# CHANNEL_PARAMS: per layer as attributes, or per output channel as int32 weights of the same role.
MVM_DEFAULTS = {"relu": False, "wide": False, "center_offset": False, "input_slice_bits": 1, "dynamic_precision": False,
                "weight_bits": 8, "squeeze_out": False, "weight_slice_bits": None,
                **{name: None for name in CHANNEL_PARAMS}}


def _zero_point_terms(xw, x_sum, w_sum, k, a, w_zp, bias):
    """sum((q_x - z_x)(q_w - z_w)) + bias from the crossbar's unsigned sum(q_x q_w) (DESIGN.md 3).

    x_sum is sum(q_x) over each window, w_sum sum(q_w) per output channel, k the window size,
    w_zp an int or per-channel tensor and bias (int32, or None) shaped to broadcast like w_sum."""
    acc = xw - w_zp * x_sum - a["x_zp"] * w_sum + k * a["x_zp"] * w_zp
    return acc if bias is None else acc + _wide(bias)


def _conv_products(x, weight, conv, groups, x_sum, w_sum):
    """sum(q_x q_w) of every window and output channel (int64), exact: from codes centred on 128,
    whose products are at most 2^14 in magnitude, so a float32 convolution over at most
    CENTRED_TERMS = 1,024 terms sums exactly (every partial sum is an integer below 2^24, whatever
    the order), then sum(q_x q_w) = sum((q_x - 128)(q_w - 128)) + 128 sum(q_x) + 128 sum(q_w) -
    128^2 k. Longer windows are split over input channels; a grouped convolution whose groups are
    longer, or a kernel of more than 1,024 taps, takes float64 (exact below 2^53, 10x slower)."""
    channels, taps = weight.shape[1], weight.shape[2] * weight.shape[3]
    step = CENTRED_TERMS // taps
    if step == 0 or (groups > 1 and channels > step):   # rare: no split keeps float32 exact
        return conv(_exact(x), _exact(weight), groups).to(torch.int64)
    centred_x = x - 128
    centred_w = (_wide(weight) - 128).to(torch.float32)
    xw = None
    for c0 in range(0, channels, step):
        part = conv(centred_x[:, c0:c0 + step] if groups == 1 else centred_x, centred_w[:, c0:c0 + step], groups)
        xw = part.to(torch.int64) if xw is None else xw + part.to(torch.int64)
    return xw + 128 * x_sum + 128 * w_sum - (128 * 128 * channels * taps)


@op("qconv2d", "mvm", "uint8 conv2d: crossbar sum(q_x q_w), digital zero-point correction, + int32 bias, "
    "requantized by multiplier/shift; padding feeds x_zp (real 0); relu clamps at out_zp",
    attrs=("stride", "padding", "dilation", "groups") + MVM_ATTRS, defaults=MVM_DEFAULTS,
    weights=("weight",), optional_weights=("bias",) + CHANNEL_PARAMS)
def _qconv2d(xs, a, w):
    weight, groups = w["weight"], a["groups"]
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    if groups == 1 and _int8_products_apply(xs[0], weight, k):
        windows, out_hw = _conv_windows(xs[0].numpy(), weight.shape[2:], a)
        out = _int8_crossbar(windows, weight.numpy().reshape(weight.shape[0], k), a, w, xs[0].shape[0])
        return torch.from_numpy(out).reshape(xs[0].shape[0], weight.shape[0], *out_hw)
    xw, x_sum = _float_conv_products(xs[0], weight, a)
    channel = lambda t: t.reshape(1, -1, 1, 1)  # noqa: E731
    w_sum = channel(_wide(weight).sum((1, 2, 3)))
    bias = channel(w["bias"]) if "bias" in w else None
    w_zp = channel_param(a, w, "w_zp", (1, -1, 1, 1))
    return requantize(_zero_point_terms(xw, x_sum, w_sum, k, a, w_zp, bias), a, w, (1, -1, 1, 1))


def _int8_products_apply(x: torch.Tensor, weight: torch.Tensor, k: int) -> bool:
    """Whether a crossbar layer takes `_int8_crossbar`: uint8 codes (centred on 128 they fit
    int8, each product at most 2^14 in magnitude), sums below 2^31 (k < 2^17), and an int8 GEMM
    that sums exactly on this CPU (runtime/kernels.py checks it once)."""
    from ..runtime.int8 import int8_products_exact

    return (x.dtype == torch.uint8 == weight.dtype and not x.is_meta and not weight.is_meta and k < 1 << 17
            and int8_products_exact())


def _conv_windows(x: np.ndarray, kernel: tuple[int, int], a: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """The windows of an ungrouped convolution of uint8 codes x [B, C, H, W] as int8 codes less
    128, int8 [C kh kw, B OH OW]: rows in the weight's (c, i, j) order, one column per window;
    padding reads x_zp, the code of real 0. And (OH, OW)."""
    (pad_h, pad_w), (stride_h, stride_w), (dil_h, dil_w) = a["padding"], a["stride"], a["dilation"]
    kh, kw = kernel
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)), constant_values=a["x_zp"])
    span = (dil_h * (kh - 1) + 1, dil_w * (kw - 1) + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    windows = windows[:, :, ::stride_h, ::stride_w, ::dil_h, ::dil_w].transpose(1, 4, 5, 0, 2, 3)
    # flipping the top bit of a uint8 code gives the code less 128 in two's complement
    columns = np.bitwise_xor(windows, np.uint8(128), out=np.empty(windows.shape, np.uint8))
    return columns.reshape(x.shape[1] * kh * kw, -1).view(np.int8), windows.shape[-2:]


def _int8_crossbar(windows: np.ndarray, weight: np.ndarray, a: dict, w: dict, batch: int) -> np.ndarray:
    """A crossbar layer's output codes [batch, N, windows / batch] from its windows (int8 [K,
    windows], codes less 128) and its uint8 weights [N, K]: the products in int8 with int32 sums
    (exact, see `_int8_products_apply`), then the digital zero-point correction, bias and
    requantization in place on one int64 array, every term known offline folded into one
    constant per output channel. The same integers as the int64 statement of the fallback
    (`_zero_point_terms`, `requantize`), in a third of its full-size passes and copies."""
    from ..runtime.int8 import int8_product

    n, k = weight.shape
    column = lambda values: torch.from_numpy(  # noqa: E731  one int64 per output channel, as a column
        np.broadcast_to(np.asarray(values, np.int64).reshape(-1), (n,)).reshape(n, 1).copy())
    w_zp, multiplier, shift, out_zp = (column(channel_param(a, w, name, (-1,)))
                                       for name in ("w_zp", "multiplier", "shift", "out_zp"))
    # With x and w less 128 (x_zp and w_zp too), sum((q_x - x_zp)(q_w - w_zp)) = sum(x w) -
    # w_zp sum(x) - x_zp sum(w) + k x_zp w_zp: all but the first two terms are constants of
    # the output channel, as are the rounding term and out_zp << shift.
    x_zp, w_zp = a["x_zp"] - 128, w_zp - 128
    terms = k * x_zp * w_zp - x_zp * column(weight.sum(1, dtype=np.int64) - 128 * k)
    if "bias" in w:
        terms += column(w["bias"].numpy())
    constant = terms * multiplier + torch.bitwise_left_shift(torch.ones_like(shift), shift - 1) + (out_zp << shift)
    acc = torch.from_numpy(int8_product((weight ^ np.uint8(128)).view(np.int8), windows)).to(torch.int64)
    acc.addcmul_(w_zp, torch.from_numpy(windows.sum(0, dtype=np.int64)), value=-1)   # [N, windows]
    acc *= multiplier
    acc += constant
    acc >>= shift
    out = _saturate(acc, a, out_zp if a.get("relu") else None)
    return out.reshape(n, batch, -1).transpose(0, 1).contiguous().numpy()


def _float_conv_products(x: torch.Tensor, weight: torch.Tensor, a: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum(q_x q_w) int64 [B, N, OH, OW], sum(q_x) int64 [B, N, OH, OW]) with torch's float
    convolutions (any groups, and meta tensors for type inference)."""
    groups, codes = a["groups"], x.dtype == torch.uint8 == weight.dtype
    pad_h, pad_w = a["padding"]
    # codes as float32 (exact: integers below 2^24), padded with x_zp, the code of real 0
    x = F.pad(x.to(torch.float32), (pad_w, pad_w, pad_h, pad_h), value=a["x_zp"])
    conv = lambda inp, kernel, g: F.conv2d(inp, kernel, None, a["stride"], 0, a["dilation"], g)  # noqa: E731
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    # sum(q_x) per window and group: channel sums of each group, then a conv with a ones kernel
    # (in float32 where the sums, at most 255 k, stay exact: below 2^24).
    n, c, h, wd = x.shape
    sums = torch.float32 if U8_MAX * k < F32_EXACT else torch.float64
    group_sums = x.to(sums).reshape(n, groups, c // groups, h, wd).sum(2)
    ones = torch.ones((groups, 1) + tuple(weight.shape[2:]), dtype=sums, device=x.device)
    x_sum = conv(group_sums, ones, groups).to(torch.int64).repeat_interleave(weight.shape[0] // groups, dim=1)
    w_sum = _wide(weight).sum((1, 2, 3)).reshape(1, -1, 1, 1)
    xw = (_conv_products(x, weight, conv, groups, x_sum, w_sum) if codes
          else conv(_exact(x), _exact(weight), groups).to(torch.int64))
    return xw, x_sum


@op("qlinear", "mvm", "uint8 linear over the last dimension (weight u8 [N, K], bias i32 [N]): as qconv2d",
    attrs=MVM_ATTRS, defaults=MVM_DEFAULTS, weights=("weight",), optional_weights=("bias",) + CHANNEL_PARAMS)
def _qlinear(xs, a, w):
    x, weight = xs[0], w["weight"]
    n, k = weight.shape
    if _int8_products_apply(x, weight, k):
        flat = x.reshape(-1, k).numpy()
        out = _int8_crossbar((flat ^ np.uint8(128)).view(np.int8).T, weight.numpy(), a, w, len(flat))
        return torch.from_numpy(out).reshape(*x.shape[:-1], n)
    xw = torch.matmul(_exact(x), _exact(weight).T).to(torch.int64)
    x_sum = _wide(x).sum(-1, keepdim=True)
    w_sum = _wide(weight).sum(1)
    w_zp = channel_param(a, w, "w_zp", (-1,))
    return requantize(_zero_point_terms(xw, x_sum, w_sum, k, a, w_zp, w.get("bias")), a, w)


@op("qmatmul", "matmul", "product of two uint8 activations: sum((a - a_zp)(b - b_zp)) over the inner "
    "dimension, requantized by multiplier/shift; int16 output when wide", min_inputs=2, max_inputs=2,
    attrs=("a_zp", "b_zp", "out_zp", "multiplier", "shift"), defaults={"wide": False})
def _qmatmul(xs, a, w):
    left, right = xs
    ab = torch.matmul(_exact(left), _exact(right)).to(torch.int64)
    k = left.shape[-1]
    acc = (ab - a["b_zp"] * _wide(left).sum(-1, keepdim=True) - a["a_zp"] * _wide(right).sum(-2, keepdim=True)
           + k * a["a_zp"] * a["b_zp"])
    return requantize(acc, a)


# ---- elementwise arithmetic --------------------------------------------------------------------

def _rescaled_sum(xs, a):
    """sum_i (x_i - zps[i]) * multipliers[i], the numerator of qadd (int64, a fresh tensor): one
    copy per input, worked on in place."""
    total = None
    for x, zp, m in zip(xs, a["zps"], a["multipliers"], strict=True):
        term = _wide(x) - zp
        term *= m
        if total is None:
            total = term
        elif np.broadcast_shapes(total.shape, term.shape) == total.shape:
            total += term
        else:   # a broadcasting input larger than the sum so far
            total = total + term
    return total


@op("qadd", "sfu", "sum of uint8 inputs at their own scales: out_zp + round_half_up(sum_i (x_i - zps[i]) * "
    "multipliers[i] / 2^shift); multipliers are signed (sub), broadcasting; relu clamps at out_zp",
    max_inputs=None, attrs=("zps", "multipliers", "shift", "out_zp"), defaults={"relu": False, "wide": False})
def _qadd(xs, a, w):
    total = _rescaled_sum(xs, a)
    total += (1 << (a["shift"] - 1)) + (a["out_zp"] << a["shift"])   # out_zp added before the flooring shift: the same
    total >>= a["shift"]
    return _saturate(total, a, _relu_floor(a))


@op("qmul", "sfu", "product of two uint8 inputs: out_zp + round_half_up((a - zps[0])(b - zps[1]) * "
    "multiplier / 2^shift), broadcasting; int16 output when wide", min_inputs=2, max_inputs=2,
    attrs=("zps", "multiplier", "shift", "out_zp"), defaults={"wide": False})
def _qmul(xs, a, w):
    left, right = ((_wide(x) - zp) for x, zp in zip(xs, a["zps"], strict=True))
    return requantize(left * right, a)


@op("qconcat", "sfu", "concatenation along `dim`, each input requantized to the output scale: "
    "out_zp + round_half_up((x_i - zps[i]) * multipliers[i] / 2^shift)",
    max_inputs=None, attrs=("dim", "zps", "multipliers", "shift", "out_zp"))
def _qconcat(xs, a, w):
    parts = [_to_u8(a["out_zp"] + rounding_shift((_wide(x) - zp) * m, 1, a["shift"]))
             for x, zp, m in zip(xs, a["zps"], a["multipliers"], strict=True)]
    return torch.cat(parts, dim=a["dim"])


@op("qrequant", "sfu", "new codes for a value, per layer or per channel along `dim`: out_zp + "
    "round_half_up((x - x_zp) * multiplier / 2^shift), saturated to u8 (i16 when wide); narrows the int16 "
    "residual stream to a crossbar's 8-bit input", attrs=("x_zp",),
    defaults={"dim": -1, "wide": False, "levels": None, "multiplier": None, "shift": None, "out_zp": None},
    optional_weights=("multiplier", "shift", "out_zp"))
def _qrequant(xs, a, w):
    x = _wide(xs[0])
    dim = a["dim"] % x.dim()
    channels = tuple(-1 if d == dim else 1 for d in range(x.dim()))
    return requantize(x - a["x_zp"], a, w, channels)


@op("qrelu", "sfu", "uint8 ReLU at an unchanged scale: max(x, zp)", attrs=("zp",))
def _qrelu(xs, a, w):
    return xs[0].clamp_min(a["zp"])


@op("qlut", "sfu", "table lookup y = table[x] (table u8 [256], or [L] for an index of 0..L-1); per channel "
    "y = table[c, x] (table u8 [C, L], "
    "c the index along `dim`): any elementwise function of one uint8 input, exact by construction",
    defaults={"dim": 1}, weights=("table",))
def _qlut(xs, a, w):
    x, table = _wide(xs[0]), w["table"]
    if table.dim() == 1:
        return table[x]
    dim = a["dim"] % x.dim()
    if table.shape[0] != x.shape[dim]:
        raise ValueError(f"per-channel table has {table.shape[0]} rows, input has {x.shape[dim]} channels")
    channel = torch.arange(x.shape[dim], device=x.device).reshape([-1 if d == dim else 1 for d in range(x.dim())])
    return table.reshape(-1)[channel * table.shape[-1] + x]


# ---- pooling: integer sums, division rounded half up --------------------------------------------

def _divide_rounded(total: torch.Tensor, count) -> torch.Tensor:
    """round_half_up(total / count) for integer tensors, count > 0."""
    return torch.div(2 * total + count, 2 * count, rounding_mode="floor")


@op("qavgpool2d", "sfu", "uint8 average pooling at an unchanged scale: zp + round_half_up(sum(x - zp) / d), "
    "d torch's divisor; padding counts as zp (real 0)",
    attrs=("kernel", "stride", "padding", "ceil_mode", "count_include_pad", "zp"))
def _qavgpool2d(xs, a, w):
    pool = lambda t, **kw: F.avg_pool2d(t, a["kernel"], a["stride"], a["padding"], a["ceil_mode"], **kw)  # noqa: E731
    total = pool(_exact(_wide(xs[0]) - a["zp"]), divisor_override=1).to(torch.int64)
    # torch's divisor per window, which depends on padding and ceil_mode: (cells inside) / (mean of ones).
    ones = torch.ones(xs[0].shape, dtype=torch.float64, device=xs[0].device)
    inside = pool(ones, divisor_override=1)
    divisor = torch.round(inside / pool(ones, count_include_pad=a["count_include_pad"])).to(torch.int64)
    return _to_u8(a["zp"] + _divide_rounded(total, divisor))


def _adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@op("qadaptive_avgpool2d", "sfu", "uint8 adaptive average pooling at an unchanged scale: round_half_up of "
    "each window's integer mean (torch's windows)", attrs=("output_size",))
def _qadaptive_avgpool2d(xs, a, w):
    x = _wide(xs[0])
    h, wd = x.shape[-2:]
    out_h, out_w = (s if s is not None else d for s, d in zip(a["output_size"], (h, wd)))
    rows = []
    for h0, h1 in _adaptive_bounds(h, out_h):
        cells = [_divide_rounded(x[..., h0:h1, w0:w1].sum((-2, -1)), (h1 - h0) * (w1 - w0))
                 for w0, w1 in _adaptive_bounds(wd, out_w)]
        rows.append(torch.stack(cells, -1))
    return _to_u8(torch.stack(rows, -2))


@op("qmean", "sfu", "uint8 mean over dimensions at an unchanged scale: round_half_up(sum(x) / n)",
    attrs=("dims", "keepdim"))
def _qmean(xs, a, w):
    x = _wide(xs[0])
    count = math.prod(x.shape[d] for d in a["dims"])
    return _to_u8(_divide_rounded(x.sum(a["dims"], keepdim=a["keepdim"]), count))


# ---- SFU normalisations ------------------------------------------------------------------------

def softmax_table(x_scale: float, wide: bool = False) -> torch.Tensor:
    """qsoftmax's exponential table: round(2^16 exp(-d * x_scale)) for d = max(x) - x in 0..255,
    or, for int16 inputs, for d up to the first d whose entry rounds to 0 (at most 2^16 entries)."""
    length = U8_MAX + 1
    if wide:
        length = min(1 << 16, math.ceil((SOFTMAX_EXP_BITS + 1) * math.log(2) / x_scale) + 1)
    d = torch.arange(length, dtype=torch.float64)
    return torch.round(torch.exp(-d * x_scale) * 2**SOFTMAX_EXP_BITS).to(torch.int32)


@op("qsoftmax", "sfu", "integer softmax along `dim`: e = table[min(max(x) - x, len - 1)] (i32 [len], "
    "round(2^16 exp(-d s_x)); 256 entries for u8 input, up to 2^16 for int16, the last 0), "
    "p = floor(e 2^31 / sum e), out_zp + round_half_up(p * multiplier / 2^shift)",
    attrs=("dim", "out_zp", "multiplier", "shift"), defaults={"wide": False}, weights=("table",))
def _qsoftmax(xs, a, w):
    x, dim = _wide(xs[0]), a["dim"]
    e = _wide(w["table"])[(x.amax(dim, keepdim=True) - x).clamp_max(w["table"].shape[0] - 1)]
    p = torch.div(e << SOFTMAX_PROB_BITS, e.sum(dim, keepdim=True), rounding_mode="floor")
    return requantize(p, a)


@op("qmasked_softmax", "sfu", "qsoftmax over the entries where the bool `mask` (2nd input, broadcast) is true: "
    "e = mask ? table[max_kept(x) - x] : 0, p = floor(e 2^31 / sum e) (0 for a row with no entry kept), "
    "requantized by multiplier/shift; int16 output when wide", min_inputs=2, max_inputs=2,
    attrs=("dim", "out_zp", "multiplier", "shift"), defaults={"wide": False}, weights=("table",))
def _qmasked_softmax(xs, a, w):
    x, dim = _wide(xs[0]), a["dim"]
    mask = xs[1].expand(x.shape)
    largest = x.masked_fill(~mask, -1).amax(dim, keepdim=True).clamp_min(0)
    e = _wide(w["table"])[(largest - x).clamp(0, U8_MAX)].masked_fill(~mask, 0)
    total = e.sum(dim, keepdim=True)
    p = torch.div(e << SOFTMAX_PROB_BITS, total.clamp_min(1), rounding_mode="floor")
    return requantize(p, a)


def _ieee_sqrt(t: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float64 sqrt, as qlayernorm documents: torch's CPU kernel (MKL vdSqrt in
    this build) is one ulp off for about 1% of arguments; numpy's is the IEEE operation."""
    if t.is_meta:
        return t.sqrt()
    return torch.from_numpy(np.sqrt(t.numpy()))


@op("qlayernorm", "sfu", "layer norm of a uint8 input over the last `ndim` dimensions: exact integer sums, "
    "then float64 with correctly rounded + - * / sqrt only, rounded half to even at out_scale/out_zp",
    attrs=("ndim", "eps", "x_scale", "x_zp", "out_scale", "out_zp"), defaults={"wide": False},
    optional_weights=("weight", "bias"))
def _qlayernorm(xs, a, w):
    dims = tuple(range(-a["ndim"], 0))
    d = _wide(xs[0]) - a["x_zp"]
    n = math.prod(d.shape[i] for i in dims)
    s1, s2 = d.sum(dims, keepdim=True), (d * d).sum(dims, keepdim=True)
    # (x - mean) / sqrt(var + eps) with x = s_x d, multiplied through by n so that the centred
    # values n d - s1 and n^2 var / s_x^2 = n s2 - s1^2 are exact integers.
    centred, spread = _exact(n * d - s1), _exact(n * s2 - s1 * s1)
    y = centred * a["x_scale"] / _ieee_sqrt(spread * (a["x_scale"] * a["x_scale"]) + a["eps"] * n * n)
    if "weight" in w:
        y = y * w["weight"].to(torch.float64)
    if "bias" in w:
        y = y + w["bias"].to(torch.float64)
    # clamped in float64 before the integer cast: a y past int64 (an f32 weight near its largest)
    # saturates instead of wrapping (runtime/sfu.py does the same)
    return _saturate(torch.round(y / a["out_scale"]).clamp(-2.0**62, 2.0**62).to(torch.int64) + a["out_zp"], a)
