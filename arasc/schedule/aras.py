"""The ARAS baseline scheduler (paper IV-A..IV-C, Figs. 8-9): layers compute one after another,
and every APU row a finished layer releases is bound at once to the next blocks waiting to be
written, in layer order: a part of a layer, a whole layer or several layers, as rows allow.

Binding is static (the offline scheduler of IV-A): the write stream walks all blocks in compute
order; when no row is free it waits for the earliest computed segment still holding rows and
takes them back. A segment's compute waits until all its blocks are written. Layers larger than
the chip compute in segments of at most `apu_rows` blocks, as in the naive scheduler."""
from __future__ import annotations

from collections import deque

from ..backend.segments import crossbar_segments
from ..ir import Model
from ..isa.hardware import Hardware
from ..isa.program import Instr
from . import Schedule


def aras_schedule(model: Model, hw: Hardware) -> Schedule:
    schedule = Schedule()
    segments = crossbar_segments(model, hw)
    free = deque(range(hw.apu_rows))
    held: deque = deque()   # (segment, rows) written and not yet taken back, in compute order
    for segment in segments:
        rows = []
        for block in segment.blocks:
            if not free:
                done, done_rows = held.popleft()
                schedule.write.append(Instr("wait", {"token": f"c.{done.token}"}))
                free.extend(done_rows)
            row = free.popleft()
            rows.append(row)
            schedule.write.append(Instr("wr", {"layer": segment.layer, "block": block, "rows": (row,)}))
        schedule.write.append(Instr("signal", {"token": f"w.{segment.token}"}))
        schedule.write_tokens[segment] = f"w.{segment.token}"
        schedule.bindings.setdefault(segment.layer, []).append((segment, tuple(rows)))
        held.append((segment, tuple(rows)))
    return schedule
