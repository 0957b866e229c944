"""Interpreter speed: one full-size inference on the interpreter-simulator vs PyTorch fp32 eager,
measured side by side in one process.

    .venv/bin/python benchmarks/interpreter_time.py [MODEL] [--adc-bits 6] [--repeat 3] [--ideal-only] [--threads N]

The interpreter executes the whole program: every block write into the crossbar state (with
pulse counting) and every layer, from the cells. 'steady' reuses the machine of the previous
run, as a deployed chip would (crossbar contents stay; weight cells are precomputed). With an
ideal ADC the products are int8 x int8 -> int32 (torch._int_mm); the row 'float32 products'
makes them with float32 BLAS instead (exact within 2^24, runtime/machine.py), for comparison.
PyTorch and the ideal-ADC interpreter alternate, `--repeat` times each, so that the machine's
load falls on both alike; each figure is the median. With a finite ADC the interpreter emulates
bit-serially only the samples that can saturate (runtime/crossbar.py); the last row emulates
every sample, the reference it equals."""
from __future__ import annotations

from arasc.openmp import short_blas_waits

short_blas_waits()   # before numpy loads; OpenMP's policy stays PyTorch's default (arasc/openmp.py)

import argparse
import resource
import statistics
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from arasc import models
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import default_hardware
from arasc.runtime.run import execute, load_program, read_inputs


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="resnet50")
    parser.add_argument("--adc-bits", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ideal-only", action="store_true", help="leave out the finite-ADC rows")
    parser.add_argument("--threads", type=int, help="torch threads, for PyTorch and the interpreter's int8 "
                        "products alike (default: torch's, one per core). On a loaded machine two threads "
                        "on two cores wait spinning for each other; one thread each compares the engines "
                        "without that")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    module, inputs = models.get(args.model).build()
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{args.model}.aras"
        write_compiled(compile_model(import_module(module, inputs, args.model), default_hardware(), [inputs], inputs,
                                     weights_name(path)), path)
        program, weights, hw = load_program(path)
    x = read_inputs(program, weights, None)
    rows = []
    first = execute(program, weights, hw, x, int8=True)
    float32 = execute(program, weights, hw, x, int8=False)
    if any(not np.array_equal(first.outputs[name], float32.outputs[name]) for name in first.outputs):
        raise SystemExit("int8 and float32 products disagree: the interpreter is not exact")
    with torch.no_grad():
        module(*inputs)
        times: dict[str, list[float]] = {"torch": [], "int8": [], "float32": []}
        for _ in range(args.repeat):   # side by side: each round runs all three
            # PyTorch: median of 3 back-to-back calls, as benchmarks/adc.py does; its first call
            # after an interpreter inference finds cold caches and took up to 2x the others
            times["torch"].append(timed(lambda: module(*inputs), 3))
            times["int8"].append(timed(lambda: execute(program, weights, hw, x, machine=first.machine), 1))
            times["float32"].append(timed(lambda: execute(program, weights, hw, x, machine=float32.machine), 1))
    torch_s, steady, steady_f32 = (statistics.median(times[k]) for k in ("torch", "int8", "float32"))
    rows.append(("PyTorch fp32 eager", torch_s, peak_mb()))
    rows.append(("interpreter, ideal ADC (steady state)", steady, peak_mb()))
    rows.append(("interpreter, ideal ADC, float32 products (steady state)", steady_f32, peak_mb()))
    cold = timed(lambda: execute(program, weights, hw, x), 1)
    rows.append(("interpreter, ideal ADC (fresh machine)", cold, peak_mb()))
    if not args.ideal_only:
        serial = execute(program, weights, hw, x, adc_bits=args.adc_bits)
        adc = timed(lambda: execute(program, weights, hw, x, machine=serial.machine), 1)
        rows.append((f"interpreter, {args.adc_bits}-bit ADC (steady state)", adc, peak_mb()))
        full = timed(lambda: execute(program, weights, hw, x, adc_bits=args.adc_bits, bit_serial=True), 1)
        rows.append((f"interpreter, {args.adc_bits}-bit ADC, every sample emulated (fresh machine)", full, peak_mb()))
    table = Table(title=f"{args.model}: one inference (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for column in ("engine", "seconds", "x PyTorch", "peak RSS so far (MB)"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for engine, seconds, mb in rows:
        table.add_row(engine, f"{seconds:.3f}", f"{seconds / torch_s:.2f}", f"{mb:,.0f}")
    Console().print(table)
    if args.ideal_only:
        return
    bs = serial.machine.bit_serial
    Console().print(f"{args.adc_bits}-bit ADC clipped {bs.clipped:,} of {bs.samples:,} samples "
                    f"({bs.clipped / max(bs.samples, 1):.2%})")


if __name__ == "__main__":
    main()
