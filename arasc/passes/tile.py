"""The tiling pass: record how each crossbar layer is cut into 128 x 128 blocks, one per APU row
(paper II-C and Fig. 3, IV-A, IV-C), plus the figures that follow from it. docs/tiling.md.

Every layer whose op runs on the crossbars (`OPS[op].kind == "mvm"`: conv2d, linear, and their
quantized forms) gains the attributes of `TILE_ATTRS`:

    k, n       rows and columns of its weight matrix (of each group, for a grouped conv)
    blocks     [kb, nb], the block grid of that matrix
    apu_rows   blocks of the whole layer: groups * kb * nb
    segments   how many times the layer is written and computed to fit the chip (IV-A)

A layer with `weight_slice_bits` (passes/weight_slicing.py) is cut at its own slicing: narrower
slices take more cells per weight, so its blocks hold fewer columns.

The cell-level map is a deterministic function of these and the hardware (arasc.isa.tiling), so it
is not stored. Only weight shapes are read, never weight values, so the pass and the figures
work on float and quantized IR alike, and on models whose weights were never materialised.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir import OPS, Layer, Model
from ..ir.verify import TILE_ATTRS
from ..isa.hardware import Hardware, default_hardware
from ..isa.tiling import (
    block_grid,
    crossbars_used,
    layer_hardware,
    matrix_shape,
    segment_count,
    sliced_layout,
    slot_crossbars,
)


@dataclass(frozen=True)
class LayerTiling:
    """The tile map of one crossbar layer and the work it implies."""

    groups: int
    k: int
    n: int
    blocks: tuple[int, int]
    apu_rows: int
    segments: int
    crossbars: int   # crossbars holding at least one weight
    weights: int
    windows: int     # activation windows: output positions for a conv, tokens for a linear

    def attrs(self) -> dict:
        """The layer attributes the pass adds: the fields TILE_ATTRS names (the verifier's list)."""
        return {name: getattr(self, name) for name in TILE_ATTRS}


def is_crossbar_layer(layer: Layer) -> bool:
    return OPS[layer.op].kind == "mvm"


def layer_tiling(layer: Layer, hw: Hardware, weight=None) -> LayerTiling:
    """The tile map of a crossbar layer, from its weight shape, `groups` and output type. A
    squeezed-out layer (bit-sliced chip, passes/squeeze_out.py) has the APU rows its non-zero slice
    tiles fill: counted from its codes `weight` when given (the tile pass), else its `apu_rows`."""
    hw = layer_hardware(hw, layer)
    shape = layer.weight("weight").type.shape
    groups = layer.attr("groups", 1)
    k, n = matrix_shape(shape, groups)
    kb, nb = block_grid(k, n, hw)
    apu_rows = groups * kb * nb
    crossbars = groups * crossbars_used(k, n, hw)
    if layer.attr("squeeze_out", False):
        if weight is None:
            apu_rows = layer.attr("apu_rows")
        else:
            layout = sliced_layout(np.asarray(weight), dict(layer.attrs), hw, squeeze=True)
            apu_rows, crossbars = len(layout), sum(slot_crossbars(block, k, n, hw) for block in layout)
    # Conv [Cout, ...] and linear [N, K] weights both lead with the output channels, and each
    # window (one crossbar read of all 8 activation bits) yields one output per channel.
    windows = layer.type.numel // shape[0]
    return LayerTiling(groups, k, n, (kb, nb), apu_rows, segment_count(apu_rows, hw), crossbars, groups * k * n,
                       windows)


@dataclass(frozen=True)
class Tile:
    """Add the tile map (`TILE_ATTRS`) to every crossbar layer; other layers are untouched.
    Running it again, e.g. for another chip, replaces the map."""

    name: ClassVar[str] = "tile"
    requires: ClassVar[tuple[str, ...]] = ("traced",)
    ensures: ClassVar[tuple[str, ...]] = ("tiled",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        hw = hw or default_hardware()
        layers = tuple(
            dataclasses.replace(layer, attrs={**dict(layer.attrs), **layer_tiling(layer, hw, _codes(model, layer)).attrs()})
            if is_crossbar_layer(layer) else layer
            for layer in model.graph.layers)
        return model.replace(graph=dataclasses.replace(model.graph, layers=layers))


def _codes(model: Model, layer: Layer):
    """A squeezed-out layer's codes, which decide its blocks; None for any other layer."""
    return model.weights[layer.weight("weight").name] if layer.attr("squeeze_out", False) else None


def tilings(model: Model, hw: Hardware | None = None) -> dict[str, LayerTiling]:
    """The tile map of every crossbar layer, in execution order."""
    hw = hw or default_hardware()
    return {layer.name: layer_tiling(layer, hw, _codes(model, layer)) for layer in model.graph.layers
            if is_crossbar_layer(layer)}


def block_counts(model: Model, hw: Hardware | None = None) -> dict[str, int]:
    """128 x 128 blocks (APU rows) of every crossbar layer; their sum is the model's total."""
    return {name: t.apu_rows for name, t in tilings(model, hw).items()}


@dataclass(frozen=True)
class TilingSummary:
    """Whole-model figures of the tile map, comparable with DESIGN.md's derived-figures table."""

    name: str
    layers: int             # crossbar layers
    weights: int
    apu_rows: int           # 128 x 128 blocks, summed over layers
    crossbars: int          # crossbars holding weights
    segments: int           # summed over layers; equals `layers` when every layer fits the chip
    chip_apu_rows: int
    write_s: float          # every block written once, all APU rows of the chip writing at once
    transfer_s: float       # every weight byte read once from main memory at its bandwidth
    compute_s: float        # every window of every segment, one at a time, no replication

    @property
    def write_bound_s(self) -> float:
        """The write-only bound with the bandwidth limit: the slower of writing and transfer."""
        return max(self.write_s, self.transfer_s)

    def rows(self):
        yield "crossbar layers", f"{self.layers:,}"
        yield "crossbar weights", f"{self.weights:,}"
        yield "blocks (APU rows)", f"{self.apu_rows:,} ({self.apu_rows / self.chip_apu_rows:.1f} chips)"
        yield "crossbars written", f"{self.crossbars:,}"
        yield "segments", f"{self.segments:,}"
        yield "write-only bound (all APU rows writing)", _ms(self.write_s)
        yield "main-memory transfer of the weights", _ms(self.transfer_s)
        yield "write-only bound with the bandwidth limit", _ms(self.write_bound_s)
        yield "compute, no replication", _ms(self.compute_s)


def summarize_tiling(model: Model, hw: Hardware | None = None) -> TilingSummary:
    hw = hw or default_hardware()
    maps = tilings(model, hw).values()
    apu_rows = sum(t.apu_rows for t in maps)
    weights = sum(t.weights for t in maps)
    write_cycles = apu_rows / hw.apu_rows * hw.crossbar.write_cycles_per_crossbar
    compute_cycles = sum(t.windows * t.segments for t in maps) * hw.crossbar.compute_cycles_per_window
    return TilingSummary(
        name=model.graph.name, layers=len(maps), weights=weights, apu_rows=apu_rows,
        crossbars=sum(t.crossbars for t in maps), segments=sum(t.segments for t in maps),
        chip_apu_rows=hw.apu_rows, write_s=hw.seconds(write_cycles),
        transfer_s=weights * hw.crossbar.weight_bits / 8 / hw.memory.bandwidth_bytes_per_s,
        compute_s=hw.seconds(compute_cycles))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"
