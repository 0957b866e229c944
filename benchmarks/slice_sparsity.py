"""What `--squeeze-out lossy` sees on a model (docs/results.md, "Lossy squeeze-out"): the row-saving
moves, cheapest first, and for prefixes of that order the squeezed blocks, the loss the budget is
compared with (1 - mean output cosine against the program without the pass, on the calibration
inputs it measures) and the task metric on held-out inputs, with the tiles' codes requantized as
the pass does (GPTQ-compensated) and, for comparison, only rounded. All by the integer
reference, which the compiled programs equal bit for bit (tests/test_slice_sparsity.py).

    .venv/bin/python benchmarks/slice_sparsity.py MODEL [--prefixes 0 24 72 ...] [--moves 10]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from weight_widths import HW, Trial

from arasc.isa.tiling import weight_matrix
from arasc.passes.slice_sparsity import _grid, _Requantizer, depths, input_grams, layer_moves
from arasc.passes.tile import is_crossbar_layer
from arasc.passes.weight_slicing import layer_inputs
from arasc.passes.weight_widths import MEASURE_INPUTS, model_outputs, output_loss, squeezed_rows, weight_name


def rounded(model, chosen):
    """The model with each chosen tile's codes rounded to its grid, nothing compensated."""
    rows, cols = HW.block
    weights = dict(model.weights)
    layers = {layer.name: layer for layer in model.graph.layers}
    for name in {tile[0] for tile in chosen}:
        layer = layers[name]
        codes = np.array(model.weights[weight_name(layer)])
        matrices = weight_matrix(codes, {"groups": 1, **dict(layer.attrs)})
        for (tile_layer, g, i, j), depth in chosen.items():
            if tile_layer == name:
                block = matrices[g][i * rows:(i + 1) * rows, j * cols:(j + 1) * cols]
                block[...] = _grid(block.astype(np.float64), 1 << (HW.crossbar.cell_bits * depth),
                                   (1 << int(layer.attr("weight_bits", 8))) - 1)
        weights[weight_name(layer)] = codes
    return model.replace(weights=weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--prefixes", nargs="*", type=int, help="prefix lengths to measure (default: 0, 1, 2, 4, ... all)")
    parser.add_argument("--moves", type=int, default=10, help="moves to list (default 10)")
    args = parser.parse_args()
    start = time.time()
    trial = Trial(args.model)
    quantized, measure = trial.quantized, list(trial.calibration)[:MEASURE_INPUTS]
    seen = layer_inputs(quantized, measure)
    layers = [layer for layer in quantized.graph.layers if is_crossbar_layer(layer)]
    grams = {layer.name: input_grams(quantized, layer, seen[layer.inputs[0]]) for layer in layers}
    order = sorted((m for layer in layers for m in layer_moves(quantized, layer, grams[layer.name], HW)),
                   key=lambda m: m.cost)
    print(f"\n## {args.model}: {len(order)} moves that save an APU row ({time.time() - start:.0f} s)\n")
    print("| # | layer | K-chunk | slots emptied (column block, depth) | cost |\n|---|---|---|---|---|")
    for i, m in enumerate(order[:args.moves]):
        print(f"| {i + 1} | {m.layer} | {m.chunk} | {', '.join(f'{j}:{d}' for j, d in m.drops)} | {m.cost:.2e} |")
    prefixes = args.prefixes if args.prefixes is not None else sorted(
        {0, len(order)} | {1 << k for k in range(len(order).bit_length()) if 1 << k < len(order)})
    reference = model_outputs(quantized, measure)
    requantize = _Requantizer(quantized, grams, HW)

    def blocks(m) -> int:
        return sum(squeezed_rows(m.weights[weight_name(layer)], layer, HW) for layer in layers)

    def metric(candidate) -> str:
        return ", ".join(f"{k} {v}" for k, v in trial.metric(candidate).items())

    print("\n| prefix | blocks | of dense | compensated: calibration loss | held-out metric | rounded only: calibration loss "
          "| held-out metric |\n|---|---|---|---|---|---|---|")
    dense = blocks(quantized)
    for length in prefixes:
        chosen = depths(order, length)
        cells = []
        for candidate in (requantize(chosen), rounded(quantized, chosen)):
            cells += [f"{output_loss(reference, model_outputs(candidate, measure)):.5f}", metric(candidate)]
        n = blocks(requantize(chosen))
        print(f"| {length} | {n:,} | {n / dense:.1%} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
