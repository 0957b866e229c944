"""Cut crossbar layers into segments that fit the chip (paper IV-A): a layer needing more APU
rows than the chip has is written and computed in pieces of consecutive blocks."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    layer: str
    index: int          # segment number within the layer
    first: int          # first block (inclusive)
    last: int           # last block (inclusive)
    count: int          # segments of this layer

    @property
    def blocks(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def token(self) -> str:
        return self.layer if self.count == 1 else f"{self.layer}.s{self.index}"


def segments_of(layer: str, blocks: int, apu_rows: int) -> list[Segment]:
    count = -(-blocks // apu_rows)
    return [Segment(layer, s, s * apu_rows, min(blocks, (s + 1) * apu_rows) - 1, count) for s in range(count)]


def crossbar_segments(model, hw) -> list[Segment]:
    """Every segment of every crossbar layer, in compute order (the tile pass sized them)."""
    from ..ir import OPS

    segments = []
    for layer in model.graph.layers:
        if OPS[layer.op].kind != "mvm":
            continue
        blocks = layer.attr("apu_rows")
        if blocks is None:
            raise ValueError(f"layer {layer.name} has no tile map: run the tile pass first")
        segments += segments_of(layer.name, blocks, hw.apu_rows)
    return segments
