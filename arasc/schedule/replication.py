"""Adaptive weight replication (paper V-B, Algorithm 1): how many copies of each crossbar layer's
blocks the ARAS scheduler writes, so that r copies compute r activation windows at once.

The compute stream runs the layers one after another while the write stream refills the APU
rows they release. Early CNN layers have many windows and few blocks: ResNet-50's first conv
computes 12,544 windows of 96 cycles on 2 blocks, 1.6 times the 768,000 cycles of a block
write. Copies cost writes (every copy is written each inference) and rows, kept from the
layers being written next, so whether one more copy pays depends on the whole schedule.

As in Algorithm 1, replicas go one at a time to the slowest layer, and replication stops at the
inflection point, where it no longer shortens the inference. That point is found by timing
the ARAS schedule itself (`schedule_cycles`: the same binding walk, every block write
`write_cycles_per_crossbar` long, every segment's compute waiting for its blocks), not by a
closed form. A layer stops receiving copies when one more does not shorten the schedule, or
would not shorten the layer (with r copies a window step moves r windows' inputs and outputs
through the Gbuffer, one bank port each way at the least), or would take more than a quarter of
the APU rows. A layer computed in segments is never replicated; neither is a layer whose
compute is below an eighth of a block write, too short to matter.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection

from ..backend.segments import Segment, crossbar_segments
from ..ir import Model
from ..isa.hardware import Hardware
from ..passes.tile import LayerTiling, tilings
from ..runtime.timing import max_blocks_writing, mvm_cycles
from .aras import binding_walk

ROW_SHARE = 4       # a layer's copies take at most 1 / ROW_SHARE of the APU rows
SHORTEST = 1 / 8    # layers computing in less than this many block writes are left alone


def segment_cycles(t: LayerTiling, copies: int, hw: Hardware) -> int:
    """Cycles of one segment's compute on `copies` copies, one Gbuffer bank port each way."""
    return mvm_cycles(hw, t.windows, copies, t.groups * t.k, t.groups * t.n)


def schedule_cycles(model: Model, hw: Hardware, copies: dict[str, int], tiles: dict[str, LayerTiling],
                    packed: Collection[str] = ()) -> float:
    """The time of one inference of the crossbar layers under the ARAS schedule with `copies` (and
    the `packed` layers cut where the rows run out, packing.py)."""
    return _walk_cycles(crossbar_segments(model, hw), hw, copies, tiles, packed)


def _walk_cycles(segments: list[Segment], hw: Hardware, copies: dict[str, int], tiles: dict[str, LayerTiling],
                 packed: Collection[str] = ()) -> float:
    """`schedule_cycles` of the model's crossbar segments. Replication's search times hundreds of
    schedules (ResNet-50: 301), so the walk is kept lean: every write lasts the same, so the
    writes in flight end in the order they started (a queue, not a heap)."""
    write_cycles = hw.crossbar.write_cycles_per_crossbar
    slots = max_blocks_writing(hw)
    clock = compute_end = 0.0
    inflight: deque[float] = deque()
    finish: dict[int, float] = {}   # by id(segment): the walk keeps every segment it names alive
    end: dict[int, float] = {}
    cycles: dict[tuple[str, int], int] = {}
    for event in binding_walk(segments, copies, hw.apu_rows, packed):
        if event[0] == "reclaim":
            clock = max(clock, end[id(event[1])])
        elif event[0] == "write":
            for _ in event[3]:
                while inflight and inflight[0] <= clock:
                    inflight.popleft()
                if len(inflight) >= slots:
                    clock = inflight.popleft()
                inflight.append(clock + write_cycles)
            finish[id(event[1])] = clock + write_cycles
        else:
            segment = event[1]
            count = copies.get(segment.layer, 1) if segment.count == 1 else 1
            key = (segment.layer, count)
            if key not in cycles:
                cycles[key] = segment_cycles(tiles[segment.layer], count, hw)
            compute_end = max(compute_end, finish[id(segment)]) + cycles[key]
            end[id(segment)] = compute_end
    return compute_end


def replication_factors(model: Model, hw: Hardware, packed: Collection[str] = ()) -> dict[str, int]:
    """Copies of each crossbar layer's blocks (1 = no replica), by layer name, for the schedule
    that cuts the `packed` layers (packing.py)."""
    tiles = tilings(model, hw)
    segments = crossbar_segments(model, hw)
    copies = {name: 1 for name in tiles}
    best = _walk_cycles(segments, hw, copies, tiles, packed)
    shortest = SHORTEST * hw.crossbar.write_cycles_per_crossbar
    slowest = [(-segment_cycles(t, 1, hw), name) for name, t in tiles.items()
               if t.segments == 1 and segment_cycles(t, 1, hw) >= shortest]
    heapq.heapify(slowest)
    while slowest:
        cycles, name = heapq.heappop(slowest)
        t, r = tiles[name], copies[name]
        faster = segment_cycles(t, r + 1, hw)
        if faster >= -cycles or (r + 1) * t.apu_rows > hw.apu_rows // ROW_SHARE:
            continue
        copies[name] = r + 1
        total = _walk_cycles(segments, hw, copies, tiles, packed)
        if total >= best:
            copies[name] = r  # past the inflection point for this layer
            continue
        best = total
        heapq.heappush(slowest, (-faster, name))
    return copies
