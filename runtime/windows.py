"""Activation windows of a crossbar layer (paper Fig. 3): the inputs one window applies to the
wordlines, in the order the weight matrix's rows were unrolled (cin, kh, kw)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_windows(x: np.ndarray, attrs: dict, kernel: tuple[int, int]) -> tuple[list[np.ndarray], tuple[int, int]]:
    """uint8 NCHW input -> one [windows, Cin/groups * kh * kw] matrix per group, and (OH, OW).
    Padding reads the input zero point x_zp: the code of real 0."""
    (sh, sw), (ph, pw), (dh, dw), groups = attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]
    kh, kw = kernel
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=attrs["x_zp"])
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    view = sliding_window_view(padded, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, oh, ow = view.shape[:4]
    per_group = c // groups
    mats = []
    for g in range(groups):
        part = view[:, g * per_group:(g + 1) * per_group].transpose(0, 2, 3, 1, 4, 5)
        mats.append(part.reshape(n * oh * ow, per_group * kh * kw))
    return mats, (oh, ow)
