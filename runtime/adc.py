"""What the ADC schemes change in one `mvm` (docs/adc.md): input steps per window, recoveries.

Activations are uint8 and enter the crossbar bit-serially: INPUT_BITS steps per window, each a
sample of every bitline. A layer with `input_slice_bits = s` (RAELLA's speculative input
slicing, arasc/passes/input_slicing.py) drives s bits of every input at once, ceil(8 / s) steps,
and re-reads bit by bit, s more steps, an input slice whose sample saturated (recovery). The
machine records the recoveries of each `mvm` (`MvmAdc`); the timing model charges the steps,
the conversions and the recoveries.

A layer with `dynamic_precision` (arasc/passes/dynamic_precision.py) skips, per window and APU
row, the input bit-planes above the highest bit set in the inputs it drives."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INPUT_BITS = 8


def input_slice_bits(layer) -> int:
    """Input bits a step drives: the layer's `input_slice_bits`, or 1 (plain bit-serial)."""
    return int(layer.attr("input_slice_bits", 1) or 1)


def input_steps(layer) -> int:
    """Speculative steps of one window: ceil(8 / input slice bits)."""
    return math.ceil(INPUT_BITS / input_slice_bits(layer))


# bit length of every uint8 code: the input bit-planes a window needs under dynamic precision
BIT_LENGTH = np.array([v.bit_length() for v in range(256)], np.int64)


def dynamic_precision(layer) -> bool:
    return bool(layer.attr("dynamic_precision", False))


def window_steps(codes: np.ndarray, slice_bits: int) -> np.ndarray:
    """Steps of each window [windows, rows] of one APU row's inputs under dynamic precision: the
    bit-planes up to the highest bit set in any of its inputs (the planes above are all zero:
    their samples are 0, skipping them changes nothing), in input slices of `slice_bits`."""
    planes = BIT_LENGTH[codes.max(1, initial=0).astype(np.int64)]
    return -(-planes // slice_bits)


@dataclass
class MvmAdc:
    """One `mvm`'s recoveries, as the machine found them with a finite ADC."""

    line: int                        # the instruction's line: a record belongs to one instruction
    recovered_windows: int = 0       # (window, input slice) pairs re-read bit by bit anywhere in the segment
    recovered_crossbar_steps: int = 0  # single-bit steps run again, summed over the crossbars that ran them
    # dynamic precision: input steps run, of the busiest APU row (its windows one after the other),
    # and summed over the crossbars that ran them (None: every window takes `input_steps`)
    busiest_row_steps: int | None = None
    crossbar_steps: int | None = None
