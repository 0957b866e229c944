"""Gbuffer bank choice per layer: which banks hold the layer's inputs and which its output
(a bank holds inputs or outputs of a layer, never both; DESIGN.md section 2).

This is the simple rule every scheduler starts from: for each side, the smallest single bank
that fits, else the largest free banks until the bytes fit. The paper's ILP (section V-A)
replaces it in the bank-selection pass."""
from __future__ import annotations


class BankError(ValueError):
    pass


def greedy_banks(in_bytes: int, out_bytes: int, banks: tuple[int, ...], where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    free = set(range(len(banks)))
    chosen = []
    for need, side in ((in_bytes, "inputs"), (out_bytes, "output")):
        picked = _cover(need, banks, free)
        if picked is None:
            raise BankError(f"{where}: its {side} need {need:,} bytes but the free Gbuffer banks hold "
                            f"{sum(banks[i] for i in free):,}; partitioning activations is not implemented")
        free -= set(picked)
        chosen.append(tuple(sorted(picked)))
    return chosen[0], chosen[1]


def _cover(need: int, banks: tuple[int, ...], free: set[int]):
    fitting = sorted((banks[i], i) for i in free if banks[i] >= need)
    if fitting:
        return [fitting[0][1]]
    picked, total = [], 0
    for size, i in sorted(((banks[i], i) for i in free), reverse=True):
        picked.append(i)
        total += size
        if total >= need:
            return picked
    return None
