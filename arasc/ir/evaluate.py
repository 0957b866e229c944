"""Float evaluator of the layer IR: runs each layer's op definition on real tensors.

It is the IR's meaning made executable, used to check that lowering and every pass keep what
the network computes (numerical checks against PyTorch)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..runtime import progress
from .graph import Model
from .ops import OPS


def evaluate(model: Model, inputs: Sequence,
             on_value: Callable[[str, torch.Tensor], None] | None = None) -> list[torch.Tensor]:
    """The graph's outputs on `inputs` (one array per graph input). `on_value(name, tensor)` sees
    every graph input and layer output as it is made (the calibration statistics are gathered
    this way); then each value is dropped after its last reader, so memory holds the live values
    only. Without `on_value` the values stay until the end: an integer model's uint8 values are
    small, and freeing them as they die made ResNet-50's integer evaluation 10-30 % slower in
    side-by-side runs (the cause was not pinned down; the allocator's handling of freed pages
    is the suspect)."""
    graph = model.graph
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph {graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {v.name: torch.as_tensor(np.asarray(x)) for v, x in zip(graph.inputs, inputs)}
    if on_value is not None:
        for v in graph.inputs:
            on_value(v.name, env[v.name])
    last_use = {name: index for index, layer in enumerate(graph.layers) for name in layer.inputs}
    kept = set(graph.outputs)
    weights: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for index, layer in enumerate(graph.layers):
            progress.step(f"evaluating {layer.name}")
            opdef = OPS[layer.op]
            w = {}
            for role, ref in layer.weights:
                if ref.name not in weights:
                    weights[ref.name] = torch.from_numpy(np.asarray(model.weights[ref.name]))
                w[role] = weights[ref.name]
            env[layer.name] = opdef.fn([env[i] for i in layer.inputs], {**opdef.defaults, **dict(layer.attrs)}, w)
            if on_value is not None:
                on_value(layer.name, env[layer.name])
                for name in set(layer.inputs):
                    if last_use[name] == index and name not in kept:
                        del env[name]
    return [env[name] for name in graph.outputs]
