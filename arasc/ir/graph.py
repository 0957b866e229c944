"""The layer IR: an immutable, typed graph of DNN layers.

A `Graph` is a straight list of `Layer`s in execution order (the paper's layer-by-layer
dataflow, section III-B). Each layer defines exactly one value named after it, reads values
defined earlier, refers to its static tensors (weights, biases, constants) by name, and keeps
the user's source line. Tensor data lives outside the graph in a `Model`'s weight store, so the
graph stays small, printable and comparable: `parse(print(g)) == g` compares structure only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

NUMPY_DTYPES = {"f32": np.float32, "i64": np.int64, "i32": np.int32, "u8": np.uint8, "i8": np.int8, "i16": np.int16, "bool": np.bool_}
DTYPES = tuple(NUMPY_DTYPES)

AttrValue = bool | int | float | str | tuple


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class WeightRef:
    """A named static tensor in the model's weight store."""

    name: str
    type: TensorType


@dataclass(frozen=True)
class Loc:
    """Where the user wrote the operation: file and line of their model source."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorType


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    inputs: tuple[str, ...]
    type: TensorType
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    weights: tuple[tuple[str, WeightRef], ...] = ()
    loc: Loc | None = None

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "attrs", tuple(sorted((k, _freeze(v)) for k, v in dict(self.attrs).items())))
        object.__setattr__(self, "weights", tuple(sorted(dict(self.weights).items())))

    def attr(self, key: str, default=None):
        return dict(self.attrs).get(key, default)

    def weight(self, role: str) -> WeightRef | None:
        return dict(self.weights).get(role)


@dataclass(frozen=True)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]
    meta: tuple[tuple[str, AttrValue], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "meta", tuple(sorted((k, _freeze(v)) for k, v in dict(self.meta).items())))

    def types(self) -> dict[str, TensorType]:
        """Type of every value, inputs and layers alike."""
        out = {v.name: v.type for v in self.inputs}
        out.update((layer.name, layer.type) for layer in self.layers)
        return out

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def weight_refs(self) -> dict[str, WeightRef]:
        return {ref.name: ref for layer in self.layers for _, ref in layer.weights}

    def users(self) -> dict[str, list[str]]:
        uses: dict[str, list[str]] = {v.name: [] for v in self.inputs}
        for layer in self.layers:
            uses.setdefault(layer.name, [])
            for name in layer.inputs:
                uses.setdefault(name, []).append(layer.name)
        return uses


@dataclass(frozen=True)
class Model:
    """A graph together with the tensors its weight references name."""

    graph: Graph
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def replace(self, graph: Graph | None = None, weights: Mapping[str, np.ndarray] | None = None) -> Model:
        return Model(graph if graph is not None else self.graph, weights if weights is not None else self.weights)


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value
