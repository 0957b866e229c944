"""Trained networks on the chip with the default compile options (docs/results.md, "Trained networks").

For each model: its task metric on held-out inputs, PyTorch float against the interpreter-simulator
(top-1 for the digits CNNs; for all-MiniLM-L6-v2 the final hidden state's cosine and the Spearman
correlation of the pairwise sentence similarities); the weight center that weight-mean shifting
(paper V-C) chose and the write pulses it saved against `--weight-center none`; and the per-layer
table of `arasc compare` (integer reference against float) on a few held-out inputs.

    .venv/bin/python benchmarks/trained_accuracy.py [MODEL ...] [--markdown]

MODEL: digits-cnn, digits-resnet, minilm-l6 (default: all three). Minutes on this machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from arasc import models
from arasc.compare import all_values, compare
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import default_hardware
from arasc.options import CompileOptions
from arasc.passes.quantize import Quantize
from arasc.runtime.report import cosine, run_summary
from arasc.runtime.run import execute, load_program

DIGITS_CALIBRATION = 128      # training images
MINILM_CALIBRATION = 96       # of the 143 sentences; the other 47 are held out
COMPARE_INPUTS = 4


def data(name: str, example: torch.Tensor):
    """(calibration input tuples, held-out inputs one per run, labels, or for sentences their token counts)."""
    if name.startswith("digits"):
        from arasc.models.digits import load_digits_split

        x_train, _, x_test, y_test = load_digits_split()
        batch = len(example)
        calibration = [(x_train[i:i + batch].numpy(),) for i in range(0, DIGITS_CALIBRATION, batch)]
        held_out = [x_test[i:i + batch].numpy() for i in range(0, len(x_test) - batch + 1, batch)]
        return calibration, held_out, y_test.numpy()[:len(held_out) * batch]
    from arasc.models import minilm

    sentences = minilm.sentences()
    calibration, _ = minilm.token_ids(list(sentences[:MINILM_CALIBRATION]))
    held_out, lengths = minilm.token_ids(list(sentences[MINILM_CALIBRATION:]))
    return [(ids[None],) for ids in calibration], [ids[None] for ids in held_out], lengths


def compiled(model, calibration, example, options: CompileOptions, folder: str, tag: str):
    path = f"{folder}/{model.graph.name}-{tag}.aras"
    result = compile_model(model, default_hardware(), calibration, (example,), weights_name(path), options)
    write_compiled(result, path)
    return result, load_program(path)


def run(loaded, x: np.ndarray):
    program, weights, hw = loaded
    return execute(program, weights, hw, {program.inputs[0].name: x})


def task_metrics(name: str, module, held_out, labels, chip: list[np.ndarray]) -> dict:
    """Top-1 against the labels (digits), or cosine and similarity correlation (sentences: `labels`
    holds their token counts)."""
    with torch.no_grad():
        reference = [module(torch.from_numpy(x)).numpy() for x in held_out]
    if name.startswith("digits"):
        float_top1 = float((np.concatenate([r.argmax(1) for r in reference]) == labels).mean())
        chip_top1 = float((np.concatenate([c.argmax(1) for c in chip]) == labels).mean())
        return {"float top-1": f"{float_top1:.4f}", "chip top-1": f"{chip_top1:.4f}"}
    from arasc.models import minilm

    cosines = [cosine(r.ravel().astype(np.float64), c.ravel().astype(np.float64)) for r, c in zip(reference, chip, strict=True)]

    def similarities(hidden: np.ndarray) -> list[float]:
        e = minilm.embeddings(hidden, labels)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return [float(e[i] @ e[j]) for i, j in itertools.combinations(range(len(e)), 2)]

    correlation = spearmanr(similarities(np.concatenate(reference)), similarities(np.concatenate(chip))).statistic
    return {"cosine min": f"{min(cosines):.4f}", "cosine mean": f"{np.mean(cosines):.4f}",
            "similarity Spearman": f"{correlation:.4f}"}


def compare_table(model, calibration, inputs, options: CompileOptions) -> list[str]:
    quantized = Quantize(calibration=tuple(calibration), **options.quantization()).rewrite(model)
    rows = compare(model, quantized.params, quantized.sources, [all_values(quantized.model, x) for x in inputs], inputs)
    lines = ["| layer | op | codes | cosine | SQNR dB | float range | clipped |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        mark = " **(error jumps)**" if row.jump else ""
        lines.append(f"| {row.layer}{mark} | {row.op} | {row.dtype} | {row.cosine:.5f} | {row.sqnr_db:.1f} | "
                     f"[{row.low:.3g}, {row.high:.3g}] | {row.clipped:.2%} |")
    return lines


def measure(name: str, markdown: bool) -> None:
    start = time.time()
    module, (example,) = models.get(name).build()
    model = import_module(module, (example,), name)
    calibration, held_out, labels = data(name, example)
    options = CompileOptions()
    with tempfile.TemporaryDirectory() as folder:
        result, loaded = compiled(model, calibration, example, options, folder, "default")
        _, unshifted = compiled(model, calibration, example, dataclasses.replace(options, weight_center=None),
                                folder, "none")
        chip = [next(iter(run(loaded, x).outputs.values())) for x in held_out]
        pulses = run_summary(run(loaded, held_out[0]))["write_pulses"]
        pulses_none = run_summary(run(unshifted, held_out[0]))["write_pulses"]
    figures = {"held-out inputs": len(held_out), **task_metrics(name, module, held_out, labels, chip),
               "weight center (V-C)": dict(result.model.graph.meta).get("weight_center", "none"),
               "write pulses": f"{pulses:,}", "without shifting": f"{pulses_none:,}",
               "pulses saved": f"{1 - pulses / pulses_none:.1%}", "seconds": f"{time.time() - start:.0f}"}
    print(f"\n## {name}\n")
    print("\n".join(f"- {key}: {value}" for key, value in figures.items()))
    if markdown:
        inputs = [(x,) for x in held_out[:COMPARE_INPUTS]]
        print(f"\n`arasc compare` (integer reference against float, {len(inputs)} held-out inputs):\n")
        print("\n".join(compare_table(model, calibration, inputs, options)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["digits-cnn", "digits-resnet", "minilm-l6"])
    parser.add_argument("--markdown", action="store_true", help="also print the per-layer compare tables")
    args = parser.parse_args()
    for name in args.models:
        measure(name, args.markdown)


if __name__ == "__main__":
    main()
