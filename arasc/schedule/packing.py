"""Write-round packing for the ARAS scheduler (paper IV-B/IV-C, Fig. 9(b): rows are bound to
new weights as soon as they are free): which layers may compute in pieces, so that no APU row
holds written weights idle while writes are pending.

Without packing, a layer computes only when all its blocks are written. When the chip runs out
of rows in the middle of a layer, the blocks already written wait, idle, for the rest of the
layer to be written a whole round (768 us) later, and the rows they hold are lost to that round.
BERT-Large lost nearly four of its 33 write rounds this way. A packed layer is cut there
(`binding_walk`): the blocks already written compute at once, their partial sums accumulating
with the rest as for a layer larger than the chip (IV-A), and their rows are rewritten.

A piece repeats the layer's whole compute (every window, on fewer blocks), so only layers whose
compute is short next to a block write are packed: those below an eighth of a block write, the
ones replication leaves alone (`replication.SHORTEST`). Transformers' linear layers (128
windows, 12,288 cycles) qualify; early conv layers (thousands of windows) do not. Packing is
kept only if the schedule model (`replication.schedule_cycles`) says it shortens the inference.
"""
from __future__ import annotations

from ..ir import Model
from ..isa.hardware import Hardware
from ..passes.tile import tilings
from .replication import SHORTEST, schedule_cycles, segment_cycles


def packed_layers(model: Model, hw: Hardware) -> frozenset[str]:
    """The crossbar layers the ARAS scheduler may cut where the chip runs out of rows."""
    tiles = tilings(model, hw)
    short = SHORTEST * hw.crossbar.write_cycles_per_crossbar
    candidates = frozenset(name for name, t in tiles.items() if segment_cycles(t, 1, hw) < short)
    if candidates and schedule_cycles(model, hw, {}, tiles, candidates) < schedule_cycles(model, hw, {}, tiles):
        return candidates
    return frozenset()
