"""What `--weight-bits auto` sees on a model (docs/results.md, "Per-layer widths"): the moves
(layer, width) that save APU rows, least sensitive per row saved first, and for prefixes of that
order the squeezed blocks, the loss the budget is compared with (1 - mean output cosine against
the 8-bit model on the calibration inputs it measures) and the task metric on held-out inputs
(MiniLM: similarity Spearman against PyTorch float; digits: top-1; other zoo models: the output
cosine against PyTorch float on the example input), all by the integer reference, which the
compiled programs equal bit for bit (tests/test_weight_widths.py).

    .venv/bin/python benchmarks/weight_widths.py MODEL [--prefixes 0 1 2 4 ...] [--moves 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sme import TRAINED
from trained_accuracy import data, task_metrics

from arasc import models
from arasc.frontend import import_module
from arasc.ir import evaluate
from arasc.isa.hardware import bundled_hardware
from arasc.options import CompileOptions
from arasc.passes import run_passes
from arasc.passes.quantize import Quantize
from arasc.passes.tile import is_crossbar_layer
from arasc.passes.weight_widths import (
    MEASURE_INPUTS,
    candidate_widths,
    layer_moves,
    model_outputs,
    narrowed,
    ordered,
    output_loss,
    prefix_widths,
    squeezed_rows,
    weight_name,
)
from arasc.runtime.report import cosine

HW = bundled_hardware("aras-sme")


class Trial:
    """A model quantized on its calibration inputs, and its task metric on held-out inputs by the
    integer reference (MiniLM: similarity Spearman against PyTorch float; digits: top-1; other zoo
    models: the output cosine against PyTorch float on the example input)."""

    def __init__(self, name: str):
        self.name = name
        self.module, self.example = models.get(name).build()
        model = import_module(self.module, self.example, name)
        if name in TRAINED:
            calibration, held_out, self.labels = data(name, self.example[0])
            self.held_out = [(np.asarray(x),) for x in held_out]
        else:
            calibration, self.held_out, self.labels = [self.example], [tuple(np.asarray(x) for x in self.example)], None
        self.calibration = tuple(tuple(np.asarray(x) for x in inputs) for inputs in calibration)
        self.quantized = run_passes(model, HW, [Quantize(calibration=self.calibration, **CompileOptions().quantization())])

    def metric(self, model) -> dict[str, str]:
        outputs = [evaluate(model, x)[0].numpy() for x in self.held_out]
        if self.labels is not None:
            return task_metrics(self.name, self.module, [x[0] for x in self.held_out], self.labels, outputs)
        with torch.no_grad():
            want = self.module(*[torch.from_numpy(np.asarray(x)) for x in self.example])
        want = want[0] if isinstance(want, tuple) else want
        return {"cosine": f"{cosine(want.numpy().ravel().astype(np.float64), outputs[0].ravel().astype(np.float64)):.4f}"}


def blocks(model) -> int:
    return sum(squeezed_rows(model.weights[weight_name(layer)], layer, HW)
               for layer in model.graph.layers if is_crossbar_layer(layer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prefixes", nargs="*", type=int, help="prefix lengths to measure (default: 0, 1, 2, 4, ... all)")
    parser.add_argument("--moves", type=int, default=20, help="moves to list (default 20)")
    args = parser.parse_args()
    start = time.time()
    trial = Trial(args.model)
    quantized, measure = trial.quantized, list(trial.calibration)[:MEASURE_INPUTS]
    order = ordered(layer_moves(quantized, HW, measure, candidate_widths(HW, 4)))
    print(f"\n## {args.model}: {len(order)} moves that save APU rows ({time.time() - start:.0f} s)\n")
    print("| # | layer | bits | rows saved | sensitivity | per row saved |\n|---|---|---|---|---|---|")
    for i, m in enumerate(order[:args.moves]):
        print(f"| {i + 1} | {m.layer} | {m.bits} | {m.rows_saved} | {m.sensitivity:.2e} | {m.sensitivity / m.rows_saved:.2e} |")
    prefixes = args.prefixes if args.prefixes is not None else sorted(
        {0, len(order)} | {1 << k for k in range(len(order).bit_length()) if 1 << k < len(order)})
    reference = model_outputs(quantized, measure)
    dense = blocks(quantized)
    print("\n| prefix | layers at 8 / 6 / 4 bits | blocks | of dense | calibration loss | held-out metric |\n|---|---|---|---|---|---|")
    for length in prefixes:
        widths = prefix_widths(order, length)
        candidate = narrowed(quantized, widths)
        loss = output_loss(reference, model_outputs(candidate, measure))
        metric = trial.metric(candidate)
        count = [sum(1 for layer in quantized.graph.layers if is_crossbar_layer(layer) and widths.get(layer.name, 8) == b)
                 for b in (8, 6, 4)]
        n = blocks(candidate)
        print(f"| {length} | {' / '.join(map(str, count))} | {n:,} | {n / dense:.1%} | {loss:.5f} | "
              + ", ".join(f"{k} {v}" for k, v in metric.items()) + " |", flush=True)
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
