"""The naive scheduler (paper IV-A, Fig. 7): write a layer's weights, compute it, then the next
layer. Every segment starts at APU row 0, so each write waits for the previous segment's compute
to release the rows; nothing overlaps."""
from __future__ import annotations

from ..backend.segments import segments_of
from ..ir import OPS, Model
from ..isa.hardware import Hardware
from ..isa.program import Instr
from . import Schedule


def naive_schedule(model: Model, hw: Hardware) -> Schedule:
    schedule = Schedule()
    previous = None
    for layer in model.graph.layers:
        if OPS[layer.op].kind != "mvm":
            continue
        blocks = layer.attr("apu_rows")
        if blocks is None:
            raise ValueError(f"layer {layer.name} has no tile map: run the tile pass first")
        bound = []
        for segment in segments_of(layer.name, blocks, hw.apu_rows):
            rows = tuple(range(len(segment.blocks)))
            if previous is not None:
                schedule.write.append(Instr("wait", {"token": f"c.{previous.token}"}))
            for row, block in zip(rows, segment.blocks):
                schedule.write.append(Instr("wr", {"layer": layer.name, "block": block, "rows": (row,)}))
            schedule.write.append(Instr("signal", {"token": f"w.{segment.token}"}))
            schedule.write_tokens[segment] = f"w.{segment.token}"
            bound.append((segment, rows))
            previous = segment
        schedule.bindings[layer.name] = bound
    return schedule
