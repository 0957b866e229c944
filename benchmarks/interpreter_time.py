"""Interpreter speed: one full-size inference on the interpreter-simulator vs PyTorch fp32 eager,
measured side by side in one process.

    .venv/bin/python benchmarks/interpreter_time.py [MODEL] [--adc-bits 6] [--repeat 3]

The interpreter executes the whole program: every block write into the crossbar state (with
pulse counting) and every layer, from the cells. 'steady' reuses the machine of the previous
run, as a deployed chip would (crossbar contents stay; weight cells are precomputed). With a
finite ADC the interpreter emulates bit-serially only the samples that can saturate
(runtime/crossbar.py); the last row emulates every sample, the reference it equals."""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

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
    args = parser.parse_args()
    module, inputs = models.get(args.model).build()
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{args.model}.aras"
        write_compiled(compile_model(import_module(module, inputs, args.model), default_hardware(), [inputs], inputs,
                                     weights_name(path)), path)
        program, weights, hw = load_program(path)
    x = read_inputs(program, weights, None)
    rows = []
    with torch.no_grad():
        module(*inputs)
        torch_s = timed(lambda: module(*inputs), args.repeat)
    rows.append(("PyTorch fp32 eager", torch_s, peak_mb()))
    first = execute(program, weights, hw, x)
    steady = timed(lambda: execute(program, weights, hw, x, machine=first.machine), args.repeat)
    rows.append(("interpreter, ideal ADC (steady state)", steady, peak_mb()))
    cold = timed(lambda: execute(program, weights, hw, x), 1)
    rows.append(("interpreter, ideal ADC (fresh machine)", cold, peak_mb()))
    serial = execute(program, weights, hw, x, adc_bits=args.adc_bits)
    adc = timed(lambda: execute(program, weights, hw, x, machine=serial.machine), 1)
    rows.append((f"interpreter, {args.adc_bits}-bit ADC (steady state)", adc, peak_mb()))
    full = timed(lambda: execute(program, weights, hw, x, adc_bits=args.adc_bits, bit_serial=True), 1)
    rows.append((f"interpreter, {args.adc_bits}-bit ADC, every sample emulated (fresh machine)", full, peak_mb()))
    table = Table(title=f"{args.model}: one inference (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for column in ("engine", "seconds", "x PyTorch", "peak RSS so far (MB)"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for engine, seconds, mb in rows:
        table.add_row(engine, f"{seconds:.3f}", f"{seconds / torch_s:.1f}", f"{mb:,.0f}")
    Console().print(table)
    bs = serial.machine.bit_serial
    Console().print(f"{args.adc_bits}-bit ADC clipped {bs.clipped:,} of {bs.samples:,} samples "
                    f"({bs.clipped / max(bs.samples, 1):.2%})")


if __name__ == "__main__":
    main()
