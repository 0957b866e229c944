"""The naive scheduler (paper IV-A, Fig. 7): write a layer's weights, compute it, then the next
layer. Every segment starts at APU row 0, so each write waits for the previous segment's compute
to release the rows; nothing overlaps."""
from __future__ import annotations

from ..backend.segments import crossbar_segments
from ..ir import Model
from ..isa.hardware import Hardware
from ..isa.program import Instr
from . import Schedule


def naive_schedule(model: Model, hw: Hardware) -> Schedule:
    schedule = Schedule()
    previous = None
    for segment in crossbar_segments(model, hw):
        rows = tuple(range(len(segment.blocks)))
        if previous is not None:
            schedule.write.append(Instr("wait", {"token": f"c.{previous.token}"}))
        for row, block in zip(rows, segment.blocks):
            schedule.write.append(Instr("wr", {"layer": segment.layer, "block": block, "rows": (row,)}))
        schedule.write.append(Instr("signal", {"token": f"w.{segment.token}"}))
        schedule.write_tokens[segment] = f"w.{segment.token}"
        schedule.bindings.setdefault(segment.layer, []).append((segment, rows))
        previous = segment
    return schedule
