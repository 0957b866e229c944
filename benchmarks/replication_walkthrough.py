"""The paper's Fig. 10 (VII, replication for VGG-16), checked on the paper's chip.

The paper reports that the chip has rows for the weights of VGG-16's first 9 layers without
replication. Algorithm 1 then delays the 9th layer three times and gives its rows to copies of
the earlier layers, which leaves 6 replicated layers. This script prints, per crossbar layer in
compute order: the APU rows of one copy, the running total against the chip's rows, and the
copies that `replication_factors` (arasc/schedule/replication.py) chooses.

    .venv/bin/python benchmarks/replication_walkthrough.py [MODEL] [--hw FILE]

Defaults: vgg16 on isa/aras-paper.toml. Takes about a minute (capture, quantize, tile,
replication).
"""
from __future__ import annotations

import argparse

import numpy as np

from arasc.frontend import capture_model, lower
from arasc.isa.hardware import load_hardware
from arasc.loader import load_source
from arasc.passes.quantize import Quantize
from arasc.passes.tile import Tile, tilings
from arasc.schedule.replication import replication_factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="vgg16")
    parser.add_argument("--hw", default="isa/aras-paper.toml")
    args = parser.parse_args()
    source = load_source(args.model)
    hw = load_hardware(args.hw)
    model = lower(capture_model(source.module, source.example_inputs, source.capture_path("auto")), args.model)
    model = Quantize(calibration=(tuple(np.asarray(x) for x in source.example_inputs),)).run(model)
    model = Tile().run(model, hw)
    copies = replication_factors(model, hw)
    total, fitting = 0, 0
    print(f"{'layer':<16} {'APU rows':>9} {'running total':>14} {'copies':>7}")
    for name, tiling in tilings(model, hw).items():
        total += tiling.apu_rows
        fitting += total <= hw.apu_rows
        print(f"{name:<16} {tiling.apu_rows:>9,} {total:>14,} {copies[name]:>7}")
    replicated = sum(c > 1 for c in copies.values())
    print(f"\n{fitting} layers fit the chip's {hw.apu_rows:,} APU rows without replication (paper: 9); "
          f"{replicated} layers get copies (paper: 6)")


if __name__ == "__main__":
    main()
