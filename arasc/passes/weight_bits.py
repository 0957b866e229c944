"""Bit-sparsity orchestration (SME: Sparse-Multiplication-Engine, arXiv 2103.01705, abstract: "we
orchestrate the bit-sparse pattern to increase the density of bit-sparsity based on existing
quantization methods"), in its simplest form: fewer weight bits, so that whole top slices are zero.

The quantizer's per-channel codes fill 0..255 (each channel's smallest weight is code 0, its
largest 255), so in every column of every block the top 2-bit slice is non-zero somewhere: on a
bit-sliced chip no slice tile is all zero and squeeze-out (passes/squeeze_out.py) finds nothing to
leave out. This pass requantizes every crossbar layer's weights to `bits` bits: codes
0..2^bits - 1, so slices `bits / cell_bits` and up are zero for every weight and squeeze out,
a quarter of the crossbars per two bits dropped.

Per output channel, with f = 2^(8 - bits): the zero point z becomes z' = round(z / f), a code q
becomes clip(round((q - z) / f) + z', 0, 2^bits - 1), so each code keeps its real value to within
half a new step, the weight scale becomes f times larger, and the layer's requantization follows
exactly: the multiplier M = m / 2^shift becomes f M (shift - log2 f, or m shifted left where the
shift would fall below 1), and the int32 bias, in units of the input scale times the weight
scale, becomes round(bias / f). The accuracy cost is that of `bits`-bit weights; measure it
with `arasc compare --weight-bits N` (docs/results.md, "Fewer crossbars to write").

With `bits = "auto"` each crossbar layer gets its own width (8, 6 or 4), chosen against a
measured accuracy budget where lowering saves APU rows (passes/weight_widths.py).

The layer gets `weight_bits = N` (visible in the IR and the `.aras` program). The pass runs after
shift-weights, which the driver then leaves out: a common weight center (paper V-C, 88..168) would
put the codes back into the top slices.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import Model
from ..isa.hardware import Hardware
from .shift_weights import _with_channel_params, channel_param
from .tile import is_crossbar_layer

FULL_BITS = 8          # the quantizer's weight codes (DESIGN.md section 3)
MULTIPLIER_LIMIT = 1 << 31


class WeightBitsError(ValueError):
    """A requested width the chip cannot use, or a requantization that cannot be kept exact."""


def _rounded_div(values: np.ndarray, factor: int) -> np.ndarray:
    """round(values / factor), halves away from zero, in integers."""
    return np.sign(values) * ((np.abs(values) + factor // 2) // factor)


def narrowed_layer(model: Model, layer, weights: dict, bits: int):
    """`layer` with its codes, zero points, bias and requantization at `bits` bits; new tensors go into `weights`."""
    factor = 1 << (FULL_BITS - bits)
    top = (1 << bits) - 1
    name = layer.weight("weight").name
    codes = np.asarray(model.weights[name])
    zp = channel_param(model, layer, "w_zp")
    new_zp = np.clip(_rounded_div(zp, factor), 0, top)
    offsets = codes.reshape(len(zp), -1).astype(np.int64) - zp[:, None]
    weights[name] = np.clip(_rounded_div(offsets, factor) + new_zp[:, None], 0, top).astype(np.uint8).reshape(codes.shape)
    multiplier, shift = channel_param(model, layer, "multiplier"), channel_param(model, layer, "shift")
    shift = shift - (FULL_BITS - bits)
    lifted = np.maximum(1 - shift, 0)            # where the shift would fall below 1, scale the multiplier
    multiplier, shift = multiplier << lifted, shift + lifted
    if multiplier.max() >= MULTIPLIER_LIMIT:
        raise WeightBitsError(f"weight-bits: layer {layer.name}'s requantization multiplier does not fit int32 "
                              f"at {bits}-bit weights")
    bias = layer.weight("bias")
    if bias is not None:
        weights[bias.name] = _rounded_div(np.asarray(model.weights[bias.name]).astype(np.int64), factor).astype(np.int32)
    layer = _with_channel_params(layer, weights, {"w_zp": new_zp, "multiplier": multiplier, "shift": shift})
    return dataclasses.replace(layer, attrs=tuple({**dict(layer.attrs), "weight_bits": bits}.items()))


@dataclass(frozen=True)
class WeightBits:
    """Requantize every crossbar layer's weights to `bits` bits (8: leave the model as it is, the
    default), or with `bits = "auto"` each layer to its own width, chosen on the calibration inputs
    so that the outputs' measured loss stays within `budget` (passes/weight_widths.py)."""

    bits: int | str = FULL_BITS
    budget: float = 0.001
    calibration: tuple = ()
    squeeze: bool = False          # squeeze-out runs after this pass: "auto" counts the rows it saves

    name: ClassVar[str] = "weight-bits"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("weight-bits",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        if self.bits == "auto":
            return self._auto(model, hw)
        bits = int(self.bits)
        if bits == FULL_BITS:
            return model
        if not 1 <= bits < FULL_BITS:
            raise WeightBitsError(f"--weight-bits {bits}: choose 1..{FULL_BITS}")
        weights = dict(model.weights)
        layers = tuple(narrowed_layer(model, layer, weights, bits) if is_crossbar_layer(layer) else layer
                       for layer in model.graph.layers)
        return model.replace(graph=dataclasses.replace(model.graph, layers=layers), weights=weights)

    def _auto(self, model: Model, hw: Hardware | None) -> Model:
        from .weight_widths import choose_widths, narrowed

        if hw is None or not hw.bit_sliced or not self.squeeze:
            raise WeightBitsError("--weight-bits auto lowers only the layers whose squeezed-out slice tiles fill fewer "
                                  "APU rows: it needs a bit-sliced chip and --squeeze-out on (e.g. --hw aras-sme "
                                  "--squeeze-out on; docs/tiling.md)")
        if not self.calibration:
            raise WeightBitsError("--weight-bits auto measures each layer's sensitivity on calibration inputs: none given")
        if not 0 <= self.budget < 1:
            raise WeightBitsError(f"--weight-bits-budget {self.budget}: a loss of output cosine from 0 to 1")
        choice = choose_widths(model, hw, self.calibration, self.budget)
        chosen = narrowed(model, choice.widths)
        meta = {**dict(chosen.graph.meta), "weight_bits_loss": round(choice.loss, 6)}
        return chosen.replace(graph=dataclasses.replace(chosen.graph, meta=tuple(meta.items())))
