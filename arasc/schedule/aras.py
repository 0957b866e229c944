"""The ARAS scheduler (paper IV-A..IV-C, Figs. 8-9; V-B): layers compute one after another,
and every APU row a finished layer releases is bound at once to the next blocks waiting to be
written, in layer order: a part of a layer, a whole layer or several layers, as rows allow.

Binding is static (the offline scheduler of IV-A): the write stream walks all blocks in compute
order; when no row is free it waits for the earliest computed segment still holding rows and
takes them back. A segment's compute waits until all its blocks are written. Layers larger than
the chip compute in segments of at most `apu_rows` blocks, as in the naive scheduler.

Write-round packing (`packed` layers, chosen in packing.py): when the walk runs out of rows in
the middle of such a layer, the blocks already bound become a segment of their own. It computes
as soon as they are written, its partial sums accumulating with the later segments' as for a
layer larger than the chip, and its rows are free again for the next writes instead of waiting,
written and idle, for the rest of the layer to be written a round later.

With adaptive replication (V-B, `replication.py`) a layer of r copies takes r rows per block:
one `wr` writes a block to all its copies, and the `mvm` lists the rows copy after copy."""
from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator

from ..backend.segments import Segment, crossbar_segments
from ..ir import Model
from ..isa.hardware import Hardware
from ..isa.program import Instr
from . import Schedule


def binding_walk(segments: list[Segment], copies: dict[str, int], apu_rows: int,
                 packed: Collection[str] = ()) -> Iterator[tuple]:
    """The write stream's walk, as events: ("reclaim", segment) when it must wait for `segment`'s
    compute to take its rows back, ("write", segment, block, rows) for a block and its copies,
    ("bound", segment, rows) once a segment is bound (rows copy after copy). A segment of a
    `packed` layer is cut where the walk must reclaim rows in its middle; its pieces are the
    segments the events name (renumber them with `numbered`)."""
    free = deque(range(apu_rows))
    held: deque = deque()   # (segment, rows) written and not yet taken back, in compute order
    for segment in segments:
        count = copies.get(segment.layer, 1) if segment.count == 1 else 1
        if count * len(segment.blocks) > apu_rows:
            raise ValueError(f"{segment.layer}: {count} copies of {len(segment.blocks)} blocks need more than the "
                             f"chip's {apu_rows} APU rows")
        cut = segment.layer in packed and count == 1
        start, writes = segment.first, []   # the piece being bound: its first block, its writes
        rows_by_copy: list[list[int]] = [[] for _ in range(count)]
        for block in segment.blocks:
            if not free and cut and block > start:   # close the piece: it computes on what is written
                piece = Segment(segment.layer, segment.index, start, block - 1, segment.count)
                yield from ((("write", piece) + w) for w in writes)
                yield ("bound", piece, tuple(rows_by_copy[0]))
                held.append((piece, tuple(rows_by_copy[0])))
                start, writes, rows_by_copy = block, [], [[]]
            rows = []
            for copy in range(count):
                if not free:
                    done, done_rows = held.popleft()
                    yield ("reclaim", done)
                    free.extend(done_rows)
                rows.append(free.popleft())
                rows_by_copy[copy].append(rows[-1])
            if cut:
                writes.append((block, tuple(rows)))
            else:
                yield ("write", segment, block, tuple(rows))
        bound = tuple(row for rows in rows_by_copy for row in rows)
        piece = Segment(segment.layer, segment.index, start, segment.last, segment.count) if cut else segment
        yield from ((("write", piece) + w) for w in writes)
        yield ("bound", piece, bound)
        held.append((piece, bound))


def numbered(events: list[tuple]) -> list[tuple]:
    """The walk's events with every segment renumbered among its layer's pieces (index, count),
    so that tokens name each piece once."""
    pieces: dict[str, list[Segment]] = {}
    for event in events:
        if event[0] == "bound":
            pieces.setdefault(event[1].layer, []).append(event[1])
    final = {piece: Segment(layer, i, piece.first, piece.last, len(layer_pieces))
             for layer, layer_pieces in pieces.items() for i, piece in enumerate(layer_pieces)}
    return [(event[0], final[event[1]]) + event[2:] for event in events]


def aras_schedule(model: Model, hw: Hardware, replicas: dict[str, int] | None = None,
                  packed: Collection[str] = ()) -> Schedule:
    schedule = Schedule()
    events = numbered(list(binding_walk(crossbar_segments(model, hw), replicas or {}, hw.apu_rows, packed)))
    for event in events:
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
