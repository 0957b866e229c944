"""Attribute kinds of the `.aras` specification: the type and range of every attribute of every
layer op, SFU op, port and `bank` (isa/opcodes.py lists them), each able to say what is wrong
with a value in words a user can act on. The verifier (runtime/verify.py) checks every
attribute against its kind; docs/isa.md prints the same table."""
from __future__ import annotations

import math
from dataclasses import dataclass

INT64_MAX = (1 << 63) - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Int:
    lo: int = -INT64_MAX - 1
    hi: int = INT64_MAX

    def problem(self, value, inputs: int) -> str | None:
        if not _is_int(value):
            return f"expected {self}, got {_show(value)}"
        if not self.lo <= value <= self.hi:
            return f"{_show(value)} is outside {self.lo}..{self.hi}"
        return None

    def __str__(self) -> str:
        return f"an integer in {self.lo}..{self.hi}"


@dataclass(frozen=True)
class Real:
    """A number in lo..hi (an integer literal is accepted): never NaN or infinite."""
    lo: float
    hi: float

    def problem(self, value, inputs: int) -> str | None:
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            return f"expected {self}, got {_show(value)}"
        if not self.lo <= value <= self.hi:
            return f"{_show(value)} is outside {self.lo:g}..{self.hi:g}"
        return None

    def __str__(self) -> str:
        return f"a number in {self.lo:g}..{self.hi:g}"


@dataclass(frozen=True)
class Bool:
    def problem(self, value, inputs: int) -> str | None:
        return None if isinstance(value, bool) else f"expected true or false, got {_show(value)}"

    def __str__(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice:
    """One of a few words (a comparison, a logical function, a dtype), written as a string."""
    words: tuple[str, ...]

    def problem(self, value, inputs: int) -> str | None:
        return None if value in self.words and isinstance(value, str) else f"expected {self}, got {_show(value)}"

    def __str__(self) -> str:
        return "one of " + ", ".join(f'"{w}"' for w in self.words)


PER_INPUT = -1  # a list length: one item per instruction input


@dataclass(frozen=True)
class Ints:
    """A list of integers of kind `item`: `length` items (PER_INPUT: one per input), or from
    `min_length` to `max_length` when length is None."""
    item: Int
    length: int | None = None
    min_length: int = 0
    max_length: int = 8

    def problem(self, value, inputs: int) -> str | None:
        if not isinstance(value, tuple):
            return f"expected {self.describe(inputs)}, got {_show(value)}"
        want = inputs if self.length == PER_INPUT else self.length
        if want is not None and len(value) != want:
            return f"expected {self.describe(inputs)}, got {len(value)} items"
        if want is None and not self.min_length <= len(value) <= self.max_length:
            return f"expected {self.describe(inputs)}, got {len(value)} items"
        for item in value:
            wrong = self.item.problem(item, inputs)
            if wrong:
                return f"item {wrong}"
        return None

    def describe(self, inputs: int | None = None) -> str:
        if self.length == PER_INPUT:
            count = f"{inputs} (one per input)" if inputs is not None else "one per input"
        elif self.length is not None:
            count = str(self.length)
        else:
            count = f"{self.min_length}..{self.max_length}"
        return f"a list of {count} integers in {self.item.lo}..{self.item.hi}"

    def __str__(self) -> str:
        return self.describe()


def _show(value) -> str:
    text = repr(value) if not isinstance(value, tuple) else "a list"
    return text if len(text) <= 40 else text[:37] + "..."


# The kinds the quantized ops share (DESIGN.md section 3; arasc/ir/qops.py).
ZERO_POINT = Int(0, 255)                          # a uint8 code
WIDE_ZERO_POINT = Int(-(1 << 15), (1 << 15) - 1)  # an int16 code: qrequant's output zero point (wide, levels)
MULTIPLIER = Int(0, (1 << 31) - 1)                # an int32 fixed-point multiplier, m < 2^31
SIGNED_MULTIPLIER = Int(-(1 << 31) + 1, (1 << 31) - 1)  # qadd's: signed for a subtraction
SHIFT = Int(1, 62)                                # a right shift of an int64 product
# A table index of more than 8 bits: codes 0..levels in int16 (a qlut table has at most 4,096 entries).
LEVELS = Int(1, (1 << 12) - 1)
# Quantization scales: real = scale * (code - zp). 1e-30..1e30 spans every float32 tensor a model
# holds, and keeps x / scale and the layer norm's float64 steps away from overflow and underflow.
SCALE = Real(1e-30, 1e30)
EPSILON = Real(1e-30, 1.0)                        # qlayernorm's eps: > 0 so that it never divides by 0
DIM = Int(-8, 7)                                  # an axis of a tensor of at most 8 dimensions
PAIR_POSITIVE = Ints(Int(1, 1 << 16), length=2)   # kernel, stride, dilation (H, W)
PAIR_PADDING = Ints(Int(0, 1 << 16), length=2)
