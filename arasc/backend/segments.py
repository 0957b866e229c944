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
