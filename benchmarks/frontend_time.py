"""Frontend time: build a zoo model, then trace + lower it to verified IR, per capture path.

    .venv/bin/python benchmarks/frontend_time.py [resnet50 bert-base ...] [--repeat N]

Prints, per model and frontend, the median wall time of import_module (trace, shape
propagation, lowering, verification; model construction excluded) and the lowered size."""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from arasc import models
from arasc.frontend import import_module
from arasc.summary import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "bert-base"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    table = Table(title=f"frontend time (torch {torch.__version__}, {torch.get_num_threads()} threads, "
                        f"median of {args.repeat})")
    for column in ("model", "frontend", "seconds", "layers", "crossbar weights"):
        table.add_column(column, justify="left" if column in ("model", "frontend") else "right")
    for name in args.models:
        module, inputs = models.get(name).build()
        for frontend in ("fx", "export"):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                model = import_module(module, inputs, name, frontend)
                times.append(time.perf_counter() - start)
            summary = summarize(model)
            table.add_row(name, frontend, f"{statistics.median(times):.2f}", f"{summary.layers}",
                          f"{summary.crossbar_weights:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
