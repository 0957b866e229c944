"""Adaptive bank selection (paper V-A, Eqs. 1-2): per layer, an integer program picks the Gbuffer
banks of least static power that hold the layer's input and output activations, with no bank
holding both. Unused banks are power-gated, so a layer pays only for the banks it keeps on.

    minimise   sum_b P_b (in_b + out_b)
    subject to sum_b C_b in_b >= input bytes,  sum_b C_b out_b >= output bytes,  in_b + out_b <= 1

Solved exactly with OR-Tools CP-SAT (single worker, fixed seed: the same model always gets the
same banks). Among equally cheap choices the lower bank indices win. Activations that no split
of the Gbuffer holds fall back to `banks.choose_banks`, which spills the excess to main memory.
"""
from __future__ import annotations

import functools

from ortools.sat.python import cp_model

from .banks import choose_banks

PICOWATT = 1e12  # CP-SAT wants integer costs: static power in pW keeps every digit that matters


@functools.cache
def select_banks(in_bytes: int, out_bytes: int, banks: tuple[int, ...],
                 static_w: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(input banks, output banks, spilled bytes) of least static power."""
    if in_bytes + out_bytes > sum(banks):
        return choose_banks(in_bytes, out_bytes, banks)
    model = cp_model.CpModel()
    take_in = [model.NewBoolVar(f"in{b}") for b in range(len(banks))]
    take_out = [model.NewBoolVar(f"out{b}") for b in range(len(banks))]
    for b in range(len(banks)):
        model.Add(take_in[b] + take_out[b] <= 1)
    model.Add(sum(size * x for size, x in zip(banks, take_in)) >= in_bytes)
    model.Add(sum(size * x for size, x in zip(banks, take_out)) >= out_bytes)
    tie = len(banks) * (len(banks) + 1)  # exceeds any sum of bank indices: power first, then indices
    cost = [round(p * PICOWATT) * tie + b for b, p in enumerate(static_w)]
    model.Minimize(sum(c * (i + o) for c, i, o in zip(cost, take_in, take_out)))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_time_in_seconds = 10.0
    status = solver.Solve(model)
    if status == cp_model.INFEASIBLE:  # enough bytes in all, but no split into disjoint sides
        return choose_banks(in_bytes, out_bytes, banks)
    if status != cp_model.OPTIMAL:
        raise RuntimeError(f"bank selection for {in_bytes} + {out_bytes} bytes: CP-SAT returned "
                           f"{solver.StatusName(status)}, not an optimum")
    chosen_in = tuple(b for b, x in enumerate(take_in) if solver.Value(x))
    chosen_out = tuple(b for b, x in enumerate(take_out) if solver.Value(x))
    return chosen_in, chosen_out, 0
