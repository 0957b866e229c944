"""Float evaluator of the layer IR: runs each layer's op definition on real tensors.

It is the IR's meaning made executable, used to check that lowering and every pass keep what
the network computes (numerical checks against PyTorch)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..runtime import progress
from .graph import Model
from .ops import OPS


def evaluate(model: Model, inputs: Sequence) -> list[torch.Tensor]:
    graph = model.graph
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph {graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {v.name: torch.as_tensor(np.asarray(x)) for v, x in zip(graph.inputs, inputs)}
    weights: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for layer in graph.layers:
            progress.step(f"evaluating {layer.name}")
            opdef = OPS[layer.op]
            w = {}
            for role, ref in layer.weights:
                if ref.name not in weights:
                    weights[ref.name] = torch.from_numpy(np.asarray(model.weights[ref.name]))
                w[role] = weights[ref.name]
            env[layer.name] = opdef.fn([env[i] for i in layer.inputs], {**opdef.defaults, **dict(layer.attrs)}, w)
    return [env[name] for name in graph.outputs]
