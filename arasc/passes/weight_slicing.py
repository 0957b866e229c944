"""Adaptive weight slicing (RAELLA, Andrulis, Emer and Sze, ISCA 2023: "adaptively slicing weights
for each DNN layer", abstract; docs/adc.md).

A crossbar cell of c bits holds one c-bit slice of a weight; each driven row adds up to
2^c - 1 (a differential pair: +-(2^c - 1)) to its bitline's sum, which the chip's ADC must read.
Narrower slices keep those sums small enough for a low-resolution ADC, at a price: a weight of
b-bit slices takes 8 / b cells (pairs), so a layer needs c / b times the crossbars, write time,
write pulses' cells and ADC conversions. The chip's `cell_bits` fixes one slicing for every
layer; RAELLA chooses it per layer. A layer with `weight_slice_bits = b` programs its cells at
2^b levels only: the tiler, the schedulers, the machine's cells, the write pulses and the timing
model all take the layer's slicing from `isa.tiling.layer_hardware`.

`bits = N` slices every crossbar layer at N bits. `bits = "auto"` gives each layer the widest
slicing whose ADC error on the calibration inputs stays within `budget`, trying widths from the
cells' bits down; one-bit slices are the fallback. The error of a width is measured as the chip
computes: each K-chunk of the layer's input windows (from the integer reference, at most
`MEASURE_WINDOWS` of them) through the bitlines and the chip's `adc_bits` ADC, bit-serially
(`runtime.crossbar.BitSerial.clipping_product`), against the exact product; it is the squared
error summed over the layer's outputs relative to the squared zero-point-corrected products
(sum (x - x_zp)(w - w_zp)). Speculative input slicing is not part of the measure.

The pass adds `weight_slice_bits` only where a layer's slicing differs from the chip's cells, so a
compile that does not ask for it is unchanged; the IR dump and the `.aras` program show it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Layer, Model
from ..isa.hardware import Hardware
from ..isa.tiling import OFFSET_CENTER, slice_levels, weight_matrix
from .shift_weights import channel_param
from .tile import is_crossbar_layer
from .weight_widths import weight_name

MEASURE_INPUTS = 8         # calibration inputs the ADC error is measured on
MEASURE_WINDOWS = 4096     # input windows per layer, evenly spaced over those inputs' windows
INPUT_BITS = 8


class WeightSlicingError(ValueError):
    """A slicing the chip cannot hold, or "auto" without a finite ADC or calibration: the user's to fix (exit 2)."""


def layer_windows(layer: Layer, kernel: tuple[int, int], x: np.ndarray) -> list[np.ndarray]:
    """uint8 input codes of one layer (of a convolution: with this kernel) -> its input windows
    per group, float32 [windows, K]."""
    from ..runtime.windows import conv_windows  # numba's im2col, loaded only when slicing is chosen

    if layer.op == "qconv2d":
        attrs = {"groups": 1, **dict(layer.attrs)}
        return [np.ascontiguousarray(w) for w in conv_windows(x, attrs, kernel)[0]]
    return [x.reshape(-1, x.shape[-1]).astype(np.float32)]


def _evenly(rows: np.ndarray, most: int) -> np.ndarray:
    return rows if len(rows) <= most else rows[np.linspace(0, len(rows) - 1, most).astype(np.int64)]


def adc_error(windows: list[np.ndarray], codes: np.ndarray, attrs: dict, w_zp: np.ndarray, hw: Hardware) -> float:
    """The relative squared error the ADC of `hw` (sliced as the layer would be) adds to a layer's
    products: `windows` per group [windows, K] float32 input codes, `codes` the layer's uint8
    weight, `w_zp` its weight zero point per output channel. See the module docstring."""
    from ..runtime.crossbar import BitSerial

    serial = BitSerial(INPUT_BITS, hw.crossbar.cell_bits, hw.slices_per_weight, hw.crossbar.adc_bits,
                       signed=hw.differential)
    center = OFFSET_CENTER if hw.differential else 0   # what the cells hold: q - 128, or q
    rows = hw.crossbar.rows
    error = signal = 0.0
    for g, matrix in enumerate(weight_matrix(codes, attrs)):
        x = windows[g]
        n = matrix.shape[1]
        zp = w_zp[g * n:(g + 1) * n].astype(np.float64)
        exact = (x.astype(np.float64) - attrs["x_zp"]) @ (matrix.astype(np.float64) - zp)
        signal += float(np.square(exact).sum())
        cut = np.zeros(exact.shape)   # what the ADC took from each output, summed over the K-chunks
        for r0 in range(0, matrix.shape[0], rows):
            chunk = matrix[r0:r0 + rows]
            weights = chunk.astype(np.float32) - center
            part = x[:, r0:r0 + rows]
            read = serial.clipping_product(part, weights, slice_levels(chunk, hw).reshape(len(chunk), -1))
            cut += read.astype(np.float64) - part.astype(np.float64) @ weights
        error += float(np.square(cut).sum())
    return error / signal if signal > 0 else (0.0 if error == 0 else float("inf"))


def layer_inputs(model: Model, inputs: Sequence[tuple]) -> dict[str, list[np.ndarray]]:
    """Every crossbar layer's input codes on each of `inputs`, by the integer reference."""
    from ..ir import evaluate

    wanted = {layer.inputs[0] for layer in model.graph.layers if is_crossbar_layer(layer)}
    seen: dict[str, list[np.ndarray]] = {name: [] for name in wanted}

    def keep(name: str, value) -> None:
        if name in wanted:
            seen[name].append(np.asarray(value))

    for x in inputs:
        evaluate(model, x, on_value=keep)
    return seen


def choose_slicing(model: Model, hw: Hardware, calibration: Sequence[tuple], budget: float) -> dict[str, tuple]:
    """Per crossbar layer: (chosen slice bits, {width tried: its ADC error})."""
    inputs = layer_inputs(model, list(calibration)[:MEASURE_INPUTS])
    chosen = {}
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer):
            continue
        codes = np.asarray(model.weights[weight_name(layer)])
        attrs = {"groups": 1, **dict(layer.attrs)}
        kernel = (codes.shape[2], codes.shape[3]) if codes.ndim == 4 else (1, 1)
        per_input = [layer_windows(layer, kernel, x) for x in inputs[layer.inputs[0]]]
        windows = [_evenly(np.concatenate(group), MEASURE_WINDOWS) for group in zip(*per_input, strict=True)]
        w_zp = channel_param(model, layer, "w_zp")
        errors = {}
        bits = 1
        for width in range(hw.crossbar.cell_bits, 1, -1):
            if hw.slice_bits_problem(width):
                continue
            errors[width] = adc_error(windows, codes, attrs, w_zp, hw.sliced(width))
            if errors[width] <= budget:
                bits = width
                break
        chosen[layer.name] = (bits, errors)
    return chosen


def _with_slicing(layer: Layer, bits: int, hw: Hardware) -> Layer:
    attrs = dict(layer.attrs)
    attrs.pop("weight_slice_bits", None)
    if bits != hw.crossbar.cell_bits:
        attrs["weight_slice_bits"] = bits
    return dataclasses.replace(layer, attrs=tuple(attrs.items()))


@dataclass(frozen=True)
class WeightSlicing:
    """Slice every crossbar layer's weights at `bits` bits, at the widest slicing within `budget`
    per layer ("auto"), or as the chip's cells ("chip", the default: the pass changes nothing)."""

    bits: int | str = "chip"
    budget: float = 1e-4
    calibration: tuple = ()

    name: ClassVar[str] = "weight-slicing"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("weight-sliced",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        if self.bits == "chip":
            return model
        if hw is None:
            raise WeightSlicingError("--weight-slice-bits: slicing needs the chip's hardware file (--hw)")
        if self.bits == "auto":
            if not self.calibration:
                raise WeightSlicingError("--weight-slice-bits auto measures the ADC's error on calibration inputs; "
                                         "none were given")
            widths = {name: bits for name, (bits, _) in choose_slicing(model, hw, self.calibration,
                                                                       self.budget).items()}
        else:
            problem = hw.slice_bits_problem(int(self.bits))
            if problem:
                raise WeightSlicingError(f"--weight-slice-bits {self.bits}: {problem} (docs/adc.md)")
            widths = {layer.name: int(self.bits) for layer in model.graph.layers if is_crossbar_layer(layer)}
        layers = tuple(_with_slicing(layer, widths[layer.name], hw) if layer.name in widths else layer
                       for layer in model.graph.layers)
        return model.replace(graph=dataclasses.replace(model.graph, layers=layers))
