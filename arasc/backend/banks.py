"""Gbuffer bank choice per layer: which banks hold the layer's inputs and which its output
(a bank holds inputs or outputs of a layer, never both; DESIGN.md section 2).

This is the simple rule (`arasc compile --banks greedy`): for each side, the smallest single bank
that fits, else the largest free banks until the bytes fit. The paper's ILP (section V-A) is
`bank_selection.py`, the default. A layer whose activations exceed the whole Gbuffer is
partitioned (paper V-A: "process them in multiple iterations"): the bytes that do not fit
spill to main memory and stream back, which the timing model charges at the memory bandwidth."""
from __future__ import annotations


def choose_banks(in_bytes: int, out_bytes: int, banks: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(input banks, output banks, bytes spilled to main memory)."""
    everything = set(range(len(banks)))
    options = []
    for first, second in ((("in", in_bytes), ("out", out_bytes)), (("out", out_bytes), ("in", in_bytes))):
        picked = {first[0]: _cover(first[1], banks, everything)}
        picked[second[0]] = _cover(second[1], banks, everything - set(picked[first[0]]))
        spill = sum(max(0, need - sum(banks[i] for i in picked[side])) for side, need in (first, second))
        options.append((spill, sum(banks[i] for side in picked for i in picked[side]), picked))
    spill, _, picked = min(options, key=lambda o: (o[0], o[1]))
    return tuple(sorted(picked["in"])), tuple(sorted(picked["out"])), spill


def _cover(need: int, banks: tuple[int, ...], free: set[int]) -> list[int]:
    """The smallest free bank holding `need`, else the largest free banks until it is held (or
    all of them, when it cannot be)."""
    if need == 0:
        return []
    fitting = sorted((banks[i], i) for i in free if banks[i] >= need)
    if fitting:
        return [fitting[0][1]]
    picked, total = [], 0
    for size, i in sorted(((banks[i], i) for i in free), reverse=True):
        picked.append(i)
        total += size
        if total >= need:
            break
    return picked
