"""Compile time and memory: wall time and peak resident memory of every stage of `arasc compile`,
for the five full-size zoo models, beside the time PyTorch takes to construct each model.

    .venv/bin/python benchmarks/compile_time.py [MODEL ...] [--runs N]

Each compile runs in a fresh process, as `arasc compile` does: its figures include importing
the compiler (torch, numba, OR-Tools) and building the model in PyTorch, which no compiler
change can remove. Per stage: the process's peak resident memory so far (the first stage whose
figure rises is where the peak happened) and what it holds when the stage ends; and beside
each wall time the CPU time of the process's threads, which on a shared machine varies less (a
loaded machine stretches wall time several-fold; torch's threads waiting for each other add
some CPU time too). The budget (issue 15) is twice the model's fp32 weight bytes plus 0.6 GB."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FULL_MODELS = ["resnet50", "vgg16", "densenet161", "bert-base", "bert-large"]
GB = 1e9


def compile_once(name: str) -> dict:
    """Run in the child process: import, build, compile (stages timed), emit into a temporary folder."""
    start, cpu_start = time.perf_counter(), time.process_time()
    from arasc.openmp import passive_waits

    passive_waits()   # as `arasc compile` does, before torch loads
    from arasc.compile import compile_source, weights_name, write_compiled
    from arasc.isa.hardware import default_hardware
    from arasc.loader import load_source
    from arasc.stages import Stages

    imported, cpu_imported = time.perf_counter(), time.process_time()
    source = load_source(name)
    built, cpu_built = time.perf_counter(), time.process_time()
    weight_bytes = sum(p.numel() * 4 for p in source.module.parameters())
    import tempfile

    stages = Stages()
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{name}.aras"
        write_compiled(compile_source(source, default_hardware(), weights_name(path), stages=stages), path)
    end = time.perf_counter()
    import resource

    return {"model": name, "import_s": imported - start, "build_s": built - imported, "wall_s": end - start,
            "import_cpu_s": cpu_imported - cpu_start, "build_cpu_s": cpu_built - cpu_imported,
            "cpu_s": time.process_time() - cpu_start,
            "weight_bytes": weight_bytes, "process_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "stages": [(r.name, r.seconds, r.cpu_seconds, r.peak_rss_bytes, r.rss_bytes) for r in stages.records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=FULL_MODELS)
    parser.add_argument("--runs", type=int, default=1, help="compiles per model; the table shows the fastest")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(compile_once(args.child)), flush=True)
        os._exit(0)   # as the arasc command leaves (cli.entry): no interpreter teardown
    from rich.console import Console
    from rich.table import Table

    out = Console()
    for name in args.models:
        runs = []
        for _ in range(args.runs):
            start = time.perf_counter()
            child = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
            if child.returncode:
                sys.exit(f"{name}: the compile failed:\n{child.stderr}")
            result = json.loads(child.stdout.splitlines()[-1])
            result["process_wall_s"] = time.perf_counter() - start
            runs.append(result)
        r = min(runs, key=lambda run: run["process_wall_s"])
        budget = 2 * r["weight_bytes"] + 0.6 * GB
        table = Table(title=f"{name}: compile {r['process_wall_s']:.2f} s wall (process), peak RSS "
                      f"{r['process_peak_bytes'] / GB:.2f} GB (budget {budget / GB:.2f} GB = 2 x "
                      f"{r['weight_bytes'] / GB:.2f} GB fp32 weights + 0.6 GB)", title_justify="left")
        for column in ("stage", "wall s", "CPU s", "peak RSS so far GB", "RSS after GB"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        startup = r["import_s"] + r["process_wall_s"] - r["wall_s"]
        table.add_row("start Python, import arasc and torch, exit", f"{startup:.2f}", f"{r['import_cpu_s']:.2f}", "", "")
        table.add_row("construct the model in PyTorch", f"{r['build_s']:.2f}", f"{r['build_cpu_s']:.2f}", "", "")
        for stage, seconds, cpu, peak, held in r["stages"]:
            table.add_row(stage, f"{seconds:.2f}", f"{cpu:.2f}", f"{peak / GB:.2f}", f"{held / GB:.2f}")
        rest = r["wall_s"] - r["import_s"] - r["build_s"] - sum(s[1] for s in r["stages"])
        rest_cpu = r["cpu_s"] - r["import_cpu_s"] - r["build_cpu_s"] - sum(s[2] for s in r["stages"])
        table.add_row("write the files", f"{rest:.2f}", f"{rest_cpu:.2f}", "", "")
        table.add_row("all (this process)", f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", "", "")
        out.print(table)


if __name__ == "__main__":
    main()
