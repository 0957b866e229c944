"""Schedulers: bind every block of every crossbar layer to APU rows and order the writes
(paper section IV). Each returns a `Schedule` the backend turns into the two streams."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..backend.segments import Segment
from ..isa.program import Instr


@dataclass
class Schedule:
    write: list[Instr] = field(default_factory=list)
    bindings: dict[str, list[tuple[Segment, tuple[int, ...]]]] = field(default_factory=dict)
    write_tokens: dict[Segment, str] = field(default_factory=dict)
