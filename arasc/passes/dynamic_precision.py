"""Dynamic activation precision (ReDy, Sabri, Riera and González: "dynamically adjusts
activation quantization levels based on statistical analysis" to need fewer input bit-planes,
hence fewer ADC conversions and cycles; abstract), in its lossless form.

A bit-serial crossbar spends one step, and a conversion of every bitline, per input bit-plane.
Post-ReLU activations are mostly small codes, so the top planes of a window's inputs are often
all zero: their samples are 0 and skipping them changes nothing. A layer with
`dynamic_precision = true` runs, per window and APU row, only the planes up to the highest bit
set in the inputs that row drives (runtime/adc.py); the timing model charges the steps and
conversions run. ReDy goes further and lowers the precision itself from statistics, which loses
accuracy; that lossy step is not built here.

This pass sets `dynamic_precision` on every crossbar layer (visible in the IR and the `.aras`
program); the integer semantics do not change.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..ir import Model
from .tile import is_crossbar_layer


@dataclass(frozen=True)
class DynamicPrecision:
    """Mark every crossbar layer (`enabled`), or leave the model as it is (the default compile)."""

    enabled: bool = True

    name: ClassVar[str] = "dynamic-precision"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("dynamic-precision",)

    def run(self, model: Model, hw=None) -> Model:
        if not self.enabled:
            return model
        layers = tuple(dataclasses.replace(layer, attrs=tuple({**dict(layer.attrs), "dynamic_precision": True}.items()))
                       if is_crossbar_layer(layer) else layer for layer in model.graph.layers)
        return model.replace(graph=dataclasses.replace(model.graph, layers=layers))
