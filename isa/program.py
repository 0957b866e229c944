"""An `.aras` program as data: header directives, mvm layer definitions and two instruction
streams, `write` and `compute` (the ARAS scheduler's two concurrent procedures, paper IV-B/IV-C).

Instructions are `Instr(opcode, args)` with opcode-specific named arguments (see opcodes.py for
each opcode's arguments, text form and meaning). Positions (file line/column) ride along for
error messages but do not take part in equality, so `parse(print(p)) == p`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DTYPES = {"f32": np.float32, "i64": np.int64, "i32": np.int32, "u8": np.uint8, "i8": np.int8, "i16": np.int16,
          "bool": np.bool_}
STREAMS = ("write", "compute")
VERSION = "0.1"


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(DTYPES[self.dtype]).itemsize  # Python ints: never wraps

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def _frozen(pairs) -> tuple:
    def freeze(v):
        if isinstance(v, (list, tuple)):
            return tuple(freeze(x) for x in v)
        if isinstance(v, np.generic):
            return v.item()
        return v
    return tuple(sorted((k, freeze(v)) for k, v in dict(pairs).items()))


@dataclass(frozen=True)
class Instr:
    opcode: str
    args: tuple[tuple[str, Any], ...]
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)
    _by_name: dict = field(init=False, repr=False, compare=False)  # the operands by name: a lookup per use

    def __post_init__(self):
        object.__setattr__(self, "args", _frozen(self.args))
        object.__setattr__(self, "_by_name", dict(self.args))

    def __getitem__(self, key: str):
        return self._by_name[key]

    def get(self, key: str, default=None):
        return self._by_name.get(key, default)


@dataclass(frozen=True)
class Port:
    """A model input (`.input`) or output (`.output`): its name, the Gbuffer value it lives
    in, its type on the chip and its quantization (scale, zero point) if any."""

    name: str
    value: str
    type: TensorSpec
    attrs: tuple[tuple[str, Any], ...] = ()
    line: int = field(default=0, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "attrs", _frozen(self.attrs))

    def attr(self, key, default=None):
        return dict(self.attrs).get(key, default)


# Requantization parameters of a crossbar layer that may be one per output channel: given as
# int32 weights of these roles instead of attributes (docs/quantization.md).
CHANNEL_PARAMS = ("w_zp", "out_zp", "multiplier", "shift")


@dataclass(frozen=True)
class LayerDef:
    """A layer computed on the crossbars: its op, geometry and quantization, and its weights."""

    name: str
    op: str
    attrs: tuple[tuple[str, Any], ...]
    weights: tuple[tuple[str, str, TensorSpec], ...]  # (role, tensor name in the weight file, type)
    line: int = field(default=0, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "attrs", _frozen(self.attrs))
        object.__setattr__(self, "weights", tuple(sorted(self.weights)))

    def attr(self, key, default=None):
        return dict(self.attrs).get(key, default)

    def weight(self, role):
        for r, name, spec in self.weights:
            if r == role:
                return name, spec
        return None


@dataclass(frozen=True)
class Program:
    name: str
    hw: tuple[str, str]                   # (hardware name, sha256 fingerprint)
    weights: tuple[str, str]              # (weight file, sha256 of its bytes)
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    layers: tuple[LayerDef, ...]
    write: tuple[Instr, ...]
    compute: tuple[Instr, ...]
    version: str = VERSION

    def layer(self, name: str) -> LayerDef:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def stream(self, name: str) -> tuple[Instr, ...]:
        return self.write if name == "write" else self.compute
