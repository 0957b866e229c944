"""Tile the five full-size zoo models and print their block counts and time bounds beside
DESIGN.md's derived-figures table; then time the cell mapping of all of VGG-16's weights.

    .venv/bin/python benchmarks/block_counts.py [MODEL ...]

Lowering a full model through the frontend takes 5-30 s and up to 3 GB (BERT-Large), which is
why this is a script and not a unit test (tests/test_tiling.py checks hand-computed cases).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from arasc.isa.hardware import default_hardware
from arasc.isa.tiling import from_cells, layer_cells, weight_matrix
from arasc.loader import load_model
from arasc.passes.tile import Tile, is_crossbar_layer, summarize_tiling

# DESIGN.md section 2: blocks, write-only bound (ms), compute without replication (ms).
DESIGN = {
    "vgg16": (8450, 11.3, 13.2),
    "resnet50": (1580, 2.1, 5.9),
    "densenet161": (2880, 3.8, 8.6),
    "bert-base": (5220, 7.0, 0.9),
    "bert-large": (18500, 24.7, 1.8),
}


def time_cells(model, hw) -> None:
    """Map every crossbar weight of a tiled model (random uint8 values in the real shapes) to
    cells and back, checking the round trip."""
    rng = np.random.default_rng(0)
    weights, to_s, back_s = 0, 0.0, 0.0
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer):
            continue
        attrs = dict(layer.attrs)
        weight = rng.integers(0, 256, layer.weight("weight").type.shape, dtype=np.uint8)
        start = time.perf_counter()
        cells = layer_cells(weight, attrs, hw)
        middle = time.perf_counter()
        per_group = len(cells) // attrs.get("groups", 1)
        for g, matrix in enumerate(weight_matrix(weight, attrs)):
            back = from_cells(cells[g * per_group:(g + 1) * per_group], attrs["k"], attrs["n"], hw)
            assert np.array_equal(back, matrix), layer.name
        to_s, back_s = to_s + middle - start, back_s + time.perf_counter() - middle
        weights += weight.size
    print(f"\n{model.graph.name}: {weights:,} weights: to_cells {to_s:.1f} s, from_cells and compare {back_s:.1f} s")


def main(names: list[str]) -> None:
    hw = default_hardware()
    print(f"{'model':<12} {'layers':>6} {'weights':>13} {'blocks':>7} {'(DESIGN)':>8} {'crossbars':>9} "
          f"{'segments':>8} {'write ms':>8} {'(DESIGN)':>8} {'xfer ms':>7} {'compute ms':>10} {'(DESIGN)':>8} "
          f"{'lower s':>7}")
    for name in names:
        start = time.perf_counter()
        model = Tile().run(load_model(name), hw)
        lowered = time.perf_counter() - start
        s = summarize_tiling(model, hw)
        blocks, write_ms, compute_ms = DESIGN[name]
        print(f"{name:<12} {s.layers:>6} {s.weights:>13,} {s.apu_rows:>7,} {blocks:>8,} {s.crossbars:>9,} "
              f"{s.segments:>8} {s.write_s * 1e3:>8.2f} {write_ms:>8} {s.transfer_s * 1e3:>7.2f} "
              f"{s.compute_s * 1e3:>10.2f} {compute_ms:>8} {lowered:>7.1f}", flush=True)
        if name == "vgg16":
            time_cells(model, hw)
    print("\nwrite ms = blocks / chip APU rows * 768,000 cycles (DESIGN's write-only bound, no bandwidth limit);\n"
          "xfer ms = weight bytes / 19.2 GB/s; the bound with the bandwidth limit is the larger of the two.")


if __name__ == "__main__":
    main(sys.argv[1:] or list(DESIGN))
