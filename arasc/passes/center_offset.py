"""Center+Offset weight encoding (RAELLA, Andrulis, Emer and Sze, ISCA 2023: "encoding weights
to produce near-zero analog values", abstract and its Center+Offset encoding).

A chip with differential cell pairs (`weight_encoding = "differential"` in the hardware file,
docs/adc.md) stores a weight code q as its signed offset q - 128: slice t of |q - 128| in the
positive or the negative cell of pair t, and the two bitlines of a pair are subtracted before
the ADC. A bitline then sums x_bit * signed slice over the driven rows, and the digital
periphery adds 128 x sum(x) back with the zero-point correction. Those sums are near zero when
each filter's offsets are balanced around 0, so that a low-resolution ADC rarely saturates.

This pass centers every filter (output channel) of every crossbar layer: it moves the channel's
codes by d = 128 - c, so that its center c lands on the cells' zero, and moves the channel's
weight zero point by the same d. (q - w_zp) does not change, so the integer semantics of the
layer do not either: the pass is exact. The center c is the channel's mean code (offsets that
sum to about zero over the filter), kept where every shifted code and the zero point stay
within 0..255; such a c always exists, since any codes and zero point lie within 0..255.

The layer gets `center_offset = true` (visible in the IR and the `.aras` program). The pass
runs after shift-weights, whose codes it would move again, so the driver does not shift weights
when it runs (arasc/compile.py). It needs differential cells: on unsigned cells the codes, not
their offsets, are summed, and centering them gains nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Model
from ..isa.hardware import Hardware
from ..isa.tiling import OFFSET_CENTER
from .shift_weights import _with_channel_params, channel_param
from .tile import is_crossbar_layer


class CenterOffsetError(ValueError):
    """Center+Offset asked of a chip without differential cells: the user's to fix (exit 2)."""


def channel_centers(codes: np.ndarray, zero_points: np.ndarray) -> np.ndarray:
    """int64 [N]: each channel's center c, from its codes int64 [N, K] and weight zero points [N]:
    the rounded mean code, clamped so that codes - c + 128 and zero point - c + 128 stay in 0..255."""
    top = 255 - OFFSET_CENTER
    low = np.maximum(codes.max(1), zero_points) - top       # c >= every code - 127
    high = np.minimum(codes.min(1), zero_points) + OFFSET_CENTER  # c <= every code + 128
    return np.clip(np.round(codes.mean(1)).astype(np.int64), low, high)


def _weight_name(layer) -> str:
    ref = layer.weight("weight")
    if ref is None:  # the verifier requires a crossbar layer's weight: an IR this pass cannot be given
        raise ValueError(f"center-offset: crossbar layer {layer.name} has no weight")
    return ref.name


def centered(model: Model) -> Model:
    """The model with every crossbar layer's channels centered on OFFSET_CENTER (see the module)."""
    weights = dict(model.weights)
    layers = []
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer):
            layers.append(layer)
            continue
        name = _weight_name(layer)
        zp = channel_param(model, layer, "w_zp")
        shape = np.asarray(model.weights[name]).shape
        codes = np.asarray(model.weights[name]).astype(np.int64).reshape(len(zp), -1)
        d = OFFSET_CENTER - channel_centers(codes, zp)
        weights[name] = (codes + d[:, None]).astype(np.uint8).reshape(shape)
        layer = _with_channel_params(layer, weights, {"w_zp": zp + d})
        layers.append(dataclasses.replace(layer, attrs=tuple({**dict(layer.attrs), "center_offset": True}.items())))
    graph = dataclasses.replace(model.graph, layers=tuple(layers))
    return model.replace(graph=graph, weights=weights)


@dataclass(frozen=True)
class CenterOffset:
    """Center every filter (`enabled`), or leave the model as it is (the default compile)."""

    enabled: bool = True

    name: ClassVar[str] = "center-offset"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("center-offset",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        if not self.enabled:
            return model
        if hw is not None and not hw.differential:
            raise CenterOffsetError(f"--center-offset on: hardware {hw.chip.name} has unsigned cells "
                             f"(weight_encoding = \"{hw.crossbar.weight_encoding}\"); Center+Offset needs "
                             f"differential cell pairs, e.g. --hw aras-differential (docs/adc.md)")
        return centered(model)
