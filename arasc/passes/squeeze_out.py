"""Squeeze-out (SME: Sparse-Multiplication-Engine, arXiv 2103.01705, abstract: "a superior squeeze-out
scheme empties the crossbars mapped with highly-sparse non-zeros"), lossless form.

On a bit-sliced chip (`weight_mapping = "bit_sliced"`, docs/tiling.md) slice t of the weights of
a 128 x 128 block fills a crossbar slot of its own, and the SFU splices the slots' partial sums
with their shifts. A slice tile whose level is 0 for every weight adds nothing to any sum, so it
need not be written nor computed: this pass marks every crossbar layer `squeeze_out = true`, and
the tile pass then counts only the non-zero slice tiles, packed 4 to an APU row (K-chunk by
K-chunk: the crossbars of an APU row share their inputs, IV-C). The write stream, the write
pulses, the compute energy and the write-only bound shrink with them; the integer result does
not change (tests/test_sme.py checks it bit for bit).

Which tiles are zero is a function of the codes: the pass leaves them as they are (lossless). A
quantization that makes whole slices zero is the `weight-bits` pass's business.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..ir import Model
from ..isa.hardware import Hardware
from .tile import is_crossbar_layer


class SqueezeOutError(ValueError):
    """Squeeze-out asked of a chip that packs a weight's cells: the user's to fix (exit 2)."""


@dataclass(frozen=True)
class SqueezeOut:
    """Mark every crossbar layer for squeeze-out (`enabled`), or leave the model as it is (the default)."""

    enabled: bool = True

    name: ClassVar[str] = "squeeze-out"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("squeeze-out",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        if not self.enabled:
            return model
        if hw is None or not hw.bit_sliced:
            name = hw.chip.name if hw is not None else "the default chip"
            raise SqueezeOutError(f"--squeeze-out on: hardware {name} keeps a weight's cells side by side "
                                  f"(weight_mapping = \"packed\"), so no crossbar holds one slice alone; squeeze-out "
                                  f"needs a bit-sliced chip, e.g. --hw aras-sme (docs/tiling.md)")
        layers = tuple(dataclasses.replace(layer, attrs=tuple({**dict(layer.attrs), "squeeze_out": True}.items()))
                       if is_crossbar_layer(layer) else layer for layer in model.graph.layers)
        return model.replace(graph=dataclasses.replace(model.graph, layers=layers))
