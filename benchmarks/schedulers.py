"""The five zoo models at full size under the naive and ARAS baseline schedulers (with the simple
bank rule), then ARAS with the paper's optimizations added one by one: adaptive bank selection
(V-A), adaptive replication (V-B), weight-mean shifting (V-C, the center `auto` picks):
inferences/s,
fraction of the upper bound (paper VII-B), energy breakdown and write pulses, each the steady
state (second inference on one chip). 'run s' is the wall time of `arasc run` (load, verify,
two inferences with outputs); 'timing-only s' the same with --timing-only; 'cosine to PyTorch'
the outputs' agreement with the float model (the lowest over its outputs).

    .venv/bin/python benchmarks/schedulers.py [MODEL ...] [--markdown FILE.md]
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from arasc import models
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import default_hardware
from arasc.options import CompileOptions
from arasc.runtime.report import cosine, run_summary
from arasc.runtime.run import run_file

MODELS = ["vgg16", "resnet50", "densenet161", "bert-base", "bert-large"]
COLUMNS = ("model", "scheduler", "banks", "replication", "weight center", "inf/s", "upper bound inf/s", "of bound", "energy mJ", "write", "compute",
           "static", "memory", "write pulses", "cells skipped", "cosine to PyTorch", "run s", "timing-only s")



def measure(name: str, hw) -> list[tuple]:
    module, inputs = models.get(name).build()
    model = import_module(module, inputs, name)
    with torch.no_grad():
        expected = module(*inputs)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    del module
    rows = []
    for scheduler, banks, replication, center in (("naive", "greedy", "none", None), ("aras", "greedy", "none", None),
                                                  ("aras", "ilp", "none", None), ("aras", "ilp", "adaptive", None),
                                                  ("aras", "ilp", "adaptive", "auto")):
        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/{name}.aras"
            compiled = compile_model(model, hw, [inputs], inputs, weights_name(path),
                                     CompileOptions(scheduler=scheduler, banks=banks, replication=replication,
                                                    weight_center=center))
            write_compiled(compiled, path)
            chosen = dict(compiled.model.graph.meta).get("weight_center", "none")
            del compiled
            start = time.perf_counter()
            result = run_file(path, inferences=2)
            seconds = time.perf_counter() - start
            s = run_summary(result)
            agreement = min(cosine(got, want) for got, want in zip(result.outputs.values(), expected, strict=True))
            del result
            start = time.perf_counter()
            timed = run_summary(run_file(path, inferences=2, compute=False))
            timing_only = time.perf_counter() - start
            assert timed["cycles"] == s["cycles"] and timed["write_pulses"] == s["write_pulses"]
        e = s["energy_joules"]
        skipped = s["cells_skipped"] / max(s["cells_written"] + s["cells_skipped"], 1)
        rows.append((name, scheduler, banks, replication, f"{center} ({chosen})" if center else "none",
                     f"{s['inferences_per_second']:.1f}", f"{s['upper_bound_inferences_per_second']:.1f}",
                     f"{s['fraction_of_upper_bound']:.0%}", f"{e['total'] * 1e3:.2f}", f"{e['write'] * 1e3:.2f}",
                     f"{e['compute'] * 1e3:.2f}", f"{e['static'] * 1e3:.2f}", f"{e['memory'] * 1e3:.2f}",
                     f"{s['write_pulses']:,}", f"{skipped:.1%}", f"{agreement:.5f}", f"{seconds:.1f}",
                     f"{timing_only:.1f}"))
        gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown into FILE, a new file")
    args = parser.parse_args()
    if args.markdown and os.path.exists(args.markdown):  # checked before an hour of measuring
        parser.error(f"--markdown {args.markdown}: the file exists; give a new file")
    hw = default_hardware()
    table = Table(title="steady-state inference on the default ARAS chip")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in COLUMNS[:5] else "right")
    rows = []
    for name in args.models:
        for row in measure(name, hw):
            rows.append(row)
            table.add_row(*row)
    Console().print(table)
    if args.markdown:
        write_markdown(rows, args.markdown)


def write_markdown(rows: list, path: str) -> None:
    """The table as Markdown into a new file: never over a file that exists (docs/results.md is
    written by hand around these figures)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    with open(path, "x") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
