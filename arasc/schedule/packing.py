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
from .replication import SHORTEST, replication_factors, schedule_cycles, segment_cycles


def packed_layers(model: Model, hw: Hardware, copies: dict[str, int] | None = None) -> frozenset[str]:
    """The crossbar layers the ARAS scheduler may cut where the chip runs out of rows, given the
    layers' `copies` (none replicated by default)."""
    tiles = tilings(model, hw)
    copies = copies or {}
    short = SHORTEST * hw.crossbar.write_cycles_per_crossbar
    candidates = frozenset(name for name, t in tiles.items() if segment_cycles(t, 1, hw) < short)
    if candidates and schedule_cycles(model, hw, copies, tiles, candidates) < schedule_cycles(model, hw, copies, tiles):
        return candidates
    return frozenset()


def plan(model: Model, hw: Hardware, replicate: bool, pack: bool) -> tuple[dict[str, int], frozenset[str]]:
    """(copies, packed layers) for the ARAS scheduler. Replication's greedy search (V-B) finds a
    different optimum with packing than without: ResNet-50's, searched with packing, is 9 % slower
    than the one searched without and packed afterwards. So both orders are tried, and the
    shorter schedule kept (the unpacked search wins a tie)."""
    tiles = tilings(model, hw)
    plans = []
    for searched_with in ((frozenset(), packed_layers(model, hw)) if pack else (frozenset(),)):
        copies = replication_factors(model, hw, searched_with) if replicate else {}
        packed = packed_layers(model, hw, copies) if pack else frozenset()
        plans.append((schedule_cycles(model, hw, copies, tiles, packed), copies, packed))
    _, copies, packed = min(plans, key=lambda p: p[0])
    return copies, packed
