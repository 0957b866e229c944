"""Activation windows of a crossbar layer (paper Fig. 3): the inputs one window applies to the
wordlines, in the order the weight matrix's rows were unrolled (cin, kh, kw)."""
from __future__ import annotations

import numpy as np


def output_length(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool = False) -> int:
    """Windows along one axis, as torch counts them for convolution and pooling
    (pooling_output_shape)."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1   # torch drops a last window that would start inside the right padding
    return out


def conv_windows(x: np.ndarray, attrs: dict, kernel: tuple[int, int], offset: int = 0,
                 dtype: type = np.float32) -> tuple[list[np.ndarray], tuple[int, int]]:
    """uint8 NCHW input -> one [windows, Cin/groups * kh * kw] matrix per group of `dtype` (the
    type the products consume: float32, or int8 with `offset` 128; a transposed view, as im2col
    makes it) of the codes less `offset`, and (OH, OW). Padding reads the input zero point x_zp:
    the code of real 0."""
    if dtype == np.int8 and offset != 1 << 7:
        raise ValueError("int8 windows hold codes less 128")
    from .kernels import im2col  # numba, imported where windows are made: a compile needs output_length only

    stride, padding, dilation, groups = attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]
    out_hw = tuple(output_length(x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) for a in (0, 1))
    per_group = x.shape[1] // groups
    mats = []
    if tuple(kernel) == (1, 1) and tuple(padding) == (0, 0):  # a pointwise convolution reads its input as it is
        sampled = x[:, :, ::stride[0], ::stride[1]].transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
        return [less_offset(sampled[g * per_group:(g + 1) * per_group], offset, dtype).T
                for g in range(groups)], out_hw
    for g in range(groups):
        mat = np.empty((per_group * kernel[0] * kernel[1], x.shape[0] * out_hw[0] * out_hw[1]), dtype)
        im2col(np.ascontiguousarray(x), g * per_group, tuple(kernel), tuple(stride), tuple(padding),
               tuple(dilation), attrs["x_zp"], offset, out_hw, mat)
        mats.append(mat.T)
    return mats, out_hw


def less_offset(codes: np.ndarray, offset: int, dtype: type) -> np.ndarray:
    """uint8 codes less `offset` as `dtype`, in one pass: for int8 (offset 128) flipping the top
    bit of a code gives code - 128 in two's complement."""
    if dtype == np.int8:
        if codes.dtype != np.uint8 or offset != 1 << 7:
            raise ValueError("int8 inputs are uint8 codes less 128")
        return (codes ^ np.uint8(1 << 7)).view(np.int8)
    return np.subtract(codes, offset, dtype=dtype)
