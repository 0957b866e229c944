"""Speculative input slicing (RAELLA, Andrulis, Emer and Sze, ISCA 2023: "dynamically slicing
inputs through speculation and recovery", abstract).

Plain bit-serial compute drives one bit of every input per step: 8 steps, 8 samples of every
bitline per window. With `input_slice_bits = s` a step drives s bits of every input at once
(wordline levels 0..2^s - 1), ceil(8 / s) steps, speculating that the bitline sums still fit the
ADC. Where a sample saturates, the interpreter re-reads that input slice of that window bit by
bit (recovery, s more steps), and the single-bit samples replace the saturated ones: the result
equals plain bit-serial compute whenever no single-bit sample saturates (tests/test_adc_speculation.py).
Speculation pays where sums are small, as Center+Offset makes them on differential cells; the
timing model charges the steps, conversions and recoveries (runtime/adc.py, runtime/timing.py).

This pass sets `input_slice_bits` on every crossbar layer (visible in the IR and the `.aras`
program), unless it is 1, plain bit-serial, the default; the integer semantics of the layers do
not change.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..ir import Model
from .tile import is_crossbar_layer


@dataclass(frozen=True)
class InputSlicing:
    slice_bits: int = 1

    name: ClassVar[str] = "input-slicing"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("input-sliced",)

    def run(self, model: Model, hw=None) -> Model:
        if not 1 <= self.slice_bits <= 8:
            raise ValueError(f"--input-slice-bits {self.slice_bits}: an input slice holds 1 to 8 bits")
        if self.slice_bits == 1:
            return model
        layers = tuple(dataclasses.replace(layer, attrs=tuple({**dict(layer.attrs),
                                                                "input_slice_bits": self.slice_bits}.items()))
                       if is_crossbar_layer(layer) else layer for layer in model.graph.layers)
        return model.replace(graph=dataclasses.replace(model.graph, layers=layers))
