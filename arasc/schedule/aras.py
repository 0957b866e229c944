"""The ARAS scheduler (paper IV-A..IV-C, Figs. 8-9; V-B): layers compute one after another,
and every APU row a finished layer releases is bound at once to the next blocks waiting to be
written, in layer order: a part of a layer, a whole layer or several layers, as rows allow.

Binding is static (the offline scheduler of IV-A): the write stream walks all blocks in compute
order; when no row is free it waits for the earliest computed segment still holding rows and
takes them back. A segment's compute waits until all its blocks are written. Layers larger than
the chip compute in segments of at most `apu_rows` blocks, as in the naive scheduler.

With adaptive replication (V-B, `replication.py`) a layer of r copies takes r rows per block:
one `wr` writes a block to all its copies, and the `mvm` lists the rows copy after copy."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..backend.segments import Segment, crossbar_segments
from ..ir import Model
from ..isa.hardware import Hardware
from ..isa.program import Instr
from . import Schedule


def binding_walk(segments: list[Segment], copies: dict[str, int], apu_rows: int) -> Iterator[tuple]:
    """The write stream's walk, as events: ("reclaim", segment) when it must wait for `segment`'s
    compute to take its rows back, ("write", segment, block, rows) for a block and its copies,
    ("bound", segment, rows) once a segment is bound (rows copy after copy)."""
    free = deque(range(apu_rows))
    held: deque = deque()   # (segment, rows) written and not yet taken back, in compute order
    for segment in segments:
        count = copies.get(segment.layer, 1) if segment.count == 1 else 1
        if count * len(segment.blocks) > apu_rows:
            raise ValueError(f"{segment.layer}: {count} copies of {len(segment.blocks)} blocks need more than the "
                             f"chip's {apu_rows} APU rows")
        rows_by_copy: list[list[int]] = [[] for _ in range(count)]
        for block in segment.blocks:
            rows = []
            for copy in range(count):
                if not free:
                    done, done_rows = held.popleft()
                    yield ("reclaim", done)
                    free.extend(done_rows)
                rows.append(free.popleft())
                rows_by_copy[copy].append(rows[-1])
            yield ("write", segment, block, tuple(rows))
        bound = tuple(row for rows in rows_by_copy for row in rows)
        yield ("bound", segment, bound)
        held.append((segment, bound))


def aras_schedule(model: Model, hw: Hardware, replicas: dict[str, int] | None = None) -> Schedule:
    schedule = Schedule()
    for event in binding_walk(crossbar_segments(model, hw), replicas or {}, hw.apu_rows):
        if event[0] == "reclaim":
            schedule.write.append(Instr("wait", {"token": f"c.{event[1].token}"}))
        elif event[0] == "write":
            _, segment, block, rows = event
            schedule.write.append(Instr("wr", {"layer": segment.layer, "block": block, "rows": rows}))
        else:
            _, segment, rows = event
            schedule.write.append(Instr("signal", {"token": f"w.{segment.token}"}))
            schedule.write_tokens[segment] = f"w.{segment.token}"
            schedule.bindings.setdefault(segment.layer, []).append((segment, rows))
    return schedule
