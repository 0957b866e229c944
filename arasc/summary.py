"""Figures about a layer-IR model: layer counts, weights, and how they reconcile with the
PyTorch parameter count (batch-norm folding removes 2 parameters per channel and adds at most
one bias per channel)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .ir import OPS, Model


@dataclass(frozen=True)
class ModelSummary:
    name: str
    layers: int
    ops: dict[str, int]
    weights: int            # every static value in the IR
    crossbar_weights: int   # weights of conv2d / linear layers, the ones written into ReRAM
    source_params: int      # parameters of the PyTorch module before lowering
    weight_center: str = ""  # set once the shift-weights pass centred the weights (paper V-C)

    def rows(self):
        yield "layers", f"{self.layers:,}"
        yield "ops", ", ".join(f"{op} {n}" for op, n in sorted(self.ops.items()))
        yield "PyTorch parameters", f"{self.source_params:,}"
        yield "IR weights", f"{self.weights:,} ({self.weights - self.source_params:+,} from compile-time folding: batch norm, constants)"
        yield "crossbar weights (conv2d + linear)", f"{self.crossbar_weights:,}"
        if self.weight_center:
            yield "weight center (V-C)", self.weight_center


def summarize(model: Model) -> ModelSummary:
    graph = model.graph
    ops = Counter(layer.op for layer in graph.layers)
    weights = sum(ref.type.numel for ref in graph.weight_refs().values())
    crossbar = sum(layer.weight("weight").type.numel for layer in graph.layers if OPS[layer.op].kind == "mvm")
    meta = dict(graph.meta)
    center = f"{meta['weight_center']} ({meta['weight_shift']})" if "weight_center" in meta else ""
    return ModelSummary(graph.name, len(graph.layers), dict(ops), weights, crossbar,
                        int(meta.get("source_params", 0)), center)
