"""SME's bit-sliced mapping and squeeze-out on ARAS (docs/results.md, "Fewer crossbars to write").

For each model and configuration: blocks written per inference, write pulses (steady state: the
second of two inferences, and the first, from empty crossbars), inferences/s, the fraction of the DENSE chip's write-only upper bound
(packed mapping, 8-bit weights; unchanged by the other rows), the row's own bound, energy per
inference, and the task metric (digits: top-1 on the held-out split; MiniLM: cosine of the
final hidden state and Spearman correlation of the sentence similarities against PyTorch float;
zoo models with random weights: cosine of the output against PyTorch float on the example input).

    .venv/bin/python benchmarks/sme.py [MODEL ...] [--bits 6 4] [--budgets B ...] [--lossy B ...] [--auto-only]

MODEL: digits-cnn, digits-resnet, minilm-l6 (trained) or any zoo name (default: the three trained
ones). Configurations: dense (aras-default), bit-sliced (aras-sme), bit-sliced + lossless
squeeze-out, and bit-sliced + squeeze-out with --weight-bits N for each N of --bits; with
--budgets, also --weight-bits auto at each --weight-bits-budget B; with --lossy, also
--squeeze-out lossy at each --squeeze-out-budget B (--auto-only: only the dense, auto and lossy rows). Each row's progress line goes out as soon as it is measured.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from trained_accuracy import data, task_metrics

from arasc import models
from arasc.compile import compile_quantized, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import bundled_hardware
from arasc.options import CompileOptions
from arasc.passes import run_passes
from arasc.passes.quantize import Quantize
from arasc.passes.tile import is_crossbar_layer
from arasc.runtime.report import cosine, run_summary
from arasc.runtime.run import execute, load_program

TRAINED = ("digits-cnn", "digits-resnet", "minilm-l6")


def configurations(bits: list[int], budgets: list[float], auto_only: bool,
                   lossy: list[float] = ()) -> list[tuple[str, str, CompileOptions]]:
    rows = [("dense (packed, aras-default)", "aras-default", CompileOptions())]
    if not auto_only:
        rows += [("bit-sliced (aras-sme)", "aras-sme", CompileOptions()),
                 ("bit-sliced + squeeze-out", "aras-sme", CompileOptions(squeeze_out="on"))]
        rows += [(f"bit-sliced + squeeze-out, {b}-bit weights", "aras-sme", CompileOptions(squeeze_out="on", weight_bits=b))
                 for b in bits]
    rows += [(f"bit-sliced + squeeze-out, auto widths, budget {b:g}", "aras-sme",
              CompileOptions(squeeze_out="on", weight_bits="auto", weight_bits_budget=b)) for b in budgets]
    rows += [(f"bit-sliced + lossy squeeze-out, budget {b:g}", "aras-sme",
              CompileOptions(squeeze_out="lossy", squeeze_out_budget=b)) for b in lossy]
    return rows


def widths_text(model) -> str:
    """How many crossbar layers the program has at each weight width, and the measured loss of auto."""
    counts: dict[int, int] = {}
    for layer in model.graph.layers:
        if is_crossbar_layer(layer):
            counts[layer.attr("weight_bits", 8)] = counts.get(layer.attr("weight_bits", 8), 0) + 1
    meta = dict(model.graph.meta)
    loss = meta.get("weight_bits_loss")
    text = ", ".join(f"{n} at {b}" for b, n in sorted(counts.items(), reverse=True)) + (
        f" (calibration loss {loss:.5f})" if loss is not None else "")
    if "slice_sparsity_loss" in meta:
        text += (f"; {meta['slice_tiles_emptied']} slice tiles emptied (calibration loss "
                 f"{meta['slice_sparsity_loss']:.5f})")
    return text


def slice_sparsity(quantized, bits: list[int]) -> list[str]:
    """Markdown rows: the share of slice tiles (slice t of a 128 x 128 block) that are zero for every
    weight, per slice, over all crossbar layers: of the codes as quantized, of their sign-magnitude
    offsets abs(q - w_zp) (what an offset or differential encoding would slice), and of N-bit codes."""
    from arasc.isa.tiling import slice_tile_nonzero, weight_matrix
    from arasc.passes.shift_weights import channel_param
    from arasc.passes.weight_bits import WeightBits

    hw = bundled_hardware("aras-sme")
    encodings = [("codes, 8-bit", quantized, False), ("sign-magnitude abs(q - w_zp), 8-bit", quantized, True)]
    encodings += [(f"codes, {b}-bit (weight-bits)", WeightBits(b).run(quantized), False) for b in bits]
    lines = ["| encoding | tiles | zero: slice 0 (bits 1:0) | slice 1 | slice 2 | slice 3 (bits 7:6) | all slices |",
             "|---|---|---|---|---|---|---|"]
    for label, model, magnitude in encodings:
        zero = np.zeros(hw.slices_per_weight, np.int64)
        tiles = 0
        for layer in model.graph.layers:
            if not is_crossbar_layer(layer):
                continue
            codes = np.asarray(model.weights[layer.weight("weight").name])
            if magnitude:
                zp = channel_param(model, layer, "w_zp").reshape((-1,) + (1,) * (codes.ndim - 1))
                codes = np.minimum(np.abs(codes.astype(np.int64) - zp), 255).astype(np.uint8)
            for matrix in weight_matrix(codes, dict(layer.attrs)):
                nonzero = slice_tile_nonzero(matrix, hw)
                zero += (~nonzero).sum((0, 1))
                tiles += nonzero.shape[0] * nonzero.shape[1]
        lines.append(f"| {label} | {tiles:,} | " + " | ".join(f"{z / tiles:.1%}" for z in zero)
                     + f" | {zero.sum() / (tiles * len(zero)):.1%} |")
    return lines


def measure(name: str, bits: list[int], markdown: bool, sparsity_only: bool = False, budgets: list[float] = (),
            auto_only: bool = False, lossy: list[float] = ()) -> None:
    start = time.time()
    module, example = models.get(name).build()
    model = import_module(module, example, name)
    if name in TRAINED:
        calibration, held_out, labels = data(name, example[0])
        held_out = [(x,) for x in held_out]
    else:
        calibration, held_out, labels = [example], [example], None
    rows, dense_bound, widths = [], None, {}
    calibration = tuple(tuple(np.asarray(x) for x in inputs) for inputs in calibration)
    # one quantization (the configurations differ only in the stages after it)
    quantized = run_passes(model, bundled_hardware("aras-default"), [Quantize(calibration=calibration, **CompileOptions().quantization())])
    sparsity = slice_sparsity(quantized, bits)
    if sparsity_only:
        print(f"\n## {name}: all-zero slice tiles\n")
        print("\n".join(sparsity))
        return
    with tempfile.TemporaryDirectory() as folder:
        for tag, (label, hw_name, options) in enumerate(configurations(bits, budgets, auto_only, lossy)):
            hw = bundled_hardware(hw_name)
            path = f"{folder}/{name}-{tag}.aras"
            result = compile_quantized(quantized, hw, calibration, example, weights_name(path), options)
            write_compiled(result, path)
            program, weights, hw = load_program(path)
            ports = [p.name for p in program.inputs]
            first = execute(program, weights, hw, dict(zip(ports, held_out[0])))
            first_pulses = first.machine.writes.pulses
            steady = run_summary(execute(program, weights, hw, dict(zip(ports, held_out[0])), machine=first.machine))
            steady["first_pulses"] = first_pulses
            outputs = [next(iter(execute(program, weights, hw, dict(zip(ports, x))).outputs.values())) for x in held_out]
            if labels is not None:
                metric = task_metrics(name, module, [x[0] for x in held_out], labels, outputs)
            else:
                with torch.no_grad():
                    reference = module(*[torch.from_numpy(np.asarray(x)) for x in example])
                reference = reference[0] if isinstance(reference, tuple) else reference
                metric = {"cosine": f"{cosine(reference.numpy().ravel().astype(np.float64), outputs[0].ravel().astype(np.float64)):.4f}"}
            if dense_bound is None:
                dense_bound = steady["upper_bound_inferences_per_second"]
            rows.append((label, steady, metric))
            widths[label] = widths_text(result.model)
            print(f"  [{name}, {time.time() - start:.0f} s] {label}: {steady['blocks_written']:,} blocks, "
                  f"{steady['inferences_per_second']:.1f} inf/s, {steady['inferences_per_second'] / dense_bound:.1%} of dense bound, {metric}; "
                  f"widths: {widths_text(result.model)}", flush=True)
    print(f"\n## {name} ({time.time() - start:.0f} s)\n")
    metric_names = list(rows[0][2])
    header = ["configuration", "blocks written", "pulses, 1st inference", "pulses, steady", "inferences/s", "of dense bound", "own bound",
              "energy mJ"] + metric_names
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, s, metric in rows:
        cells = [label, f"{s['blocks_written']:,}", f"{s['first_pulses']:,}", f"{s['write_pulses']:,}", f"{s['inferences_per_second']:.1f}",
                 f"{s['inferences_per_second'] / dense_bound:.1%}", f"{s['upper_bound_inferences_per_second']:.1f}",
                 f"{s['energy_joules']['total'] * 1e3:.3f}"] + [metric[m] for m in metric_names]
        print("| " + " | ".join(cells) + " |")
    if budgets or lossy:
        print(f"\nWeight widths of {name}'s crossbar layers:\n")
        print("\n".join(f"- {label}: {text}" for label, text in widths.items()))
    print(f"\nAll-zero slice tiles of {name}'s crossbar layers:\n")
    print("\n".join(sparsity))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(TRAINED))
    parser.add_argument("--bits", nargs="*", type=int, default=[6, 4], help="weight widths to squeeze (default 6 4)")
    parser.add_argument("--markdown", action="store_true", help="(tables are always markdown)")
    parser.add_argument("--sparsity-only", action="store_true", help="only the table of all-zero slice tiles")
    parser.add_argument("--budgets", nargs="*", type=float, default=[],
                        help="also --weight-bits auto with each --weight-bits-budget B")
    parser.add_argument("--lossy", nargs="*", type=float, default=[],
                        help="also --squeeze-out lossy with each --squeeze-out-budget B")
    parser.add_argument("--auto-only", action="store_true", help="only the dense, the auto and the lossy rows")
    args = parser.parse_args()
    for name in args.models:
        measure(name, args.bits, args.markdown, args.sparsity_only, args.budgets, args.auto_only, args.lossy)


if __name__ == "__main__":
    main()
