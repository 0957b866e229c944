"""Per-layer weight widths chosen against an accuracy budget (`--weight-bits auto`), for SME's
squeeze-out (SME: Sparse-Multiplication-Engine, arXiv 2103.01705, abstract: bit-sparsity
"orchestrated" on top of existing quantization methods, then "squeeze-out" of the crossbars it
empties; docs/results.md, "Fewer crossbars to write").

Uniform N-bit weights (passes/weight_bits.py) empty the top slices of every layer, but they cost
every layer the same precision, and they save blocks only where a K-chunk's remaining slice tiles
fill fewer APU rows: an APU row holds slice tiles of one K-chunk only (IV-C), so a layer with 3
column blocks still needs 3 rows at 6 bits (9 tiles), and a layer of 1 column block saves nothing
at 6 or 4 bits. This module lowers only the layers where lowering saves rows, least sensitive
first, as far as a measured budget allows:

1. every crossbar layer's inputs and outputs on the calibration inputs, from one run of the
   integer reference (`evaluate`);
2. per layer and narrower width w (6, 4: whole slices dropped), the APU rows w saves
   (`sliced_block_count` with squeeze-out, before and after) and its sensitivity: the relative
   squared error that narrowing that layer alone adds to its own output codes;
3. the moves (layer, w) that save rows, ordered by sensitivity per row saved; a prefix of that
   order gives each layer the narrowest width among its moves;
4. the longest prefix whose model-level loss, measured by the integer reference on the calibration
   inputs, stays within the budget (bisection over the prefix length; every prefix the search
   accepts was measured, so the result always is).

The loss is 1 - the mean over calibration inputs of the cosine between the outputs and those of
the 8-bit model: the 8-bit program is the reference, so the budget bounds what the narrowing
costs, not the 8-bit quantization's own error. At most `MEASURE_INPUTS` calibration inputs are
used (the integer reference of a transformer takes about half a second per input here).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..ir import OPS, Layer, Model, evaluate
from ..isa.hardware import Hardware
from ..isa.tiling import sliced_block_count
from .tile import is_crossbar_layer

FULL_BITS = 8
MEASURE_INPUTS = 16      # calibration inputs the sensitivities and the model-level loss are measured on


@dataclass(frozen=True)
class Move:
    """Lower `layer` to `bits`: `rows_saved` APU rows fewer than at 8 bits, at `sensitivity` (the
    relative squared error of its output codes when it alone is lowered)."""

    layer: str
    bits: int
    rows_saved: int
    sensitivity: float


def candidate_widths(hw: Hardware, narrowest: int) -> tuple[int, ...]:
    """The widths below 8 that drop whole slices (multiples of the cell bits), down to `narrowest`."""
    step = hw.crossbar.cell_bits
    return tuple(range(FULL_BITS - step, narrowest - 1, -step))


def weight_name(layer: Layer) -> str:
    ref = layer.weight("weight")
    assert ref is not None, f"crossbar layer {layer.name} without weights"
    return ref.name


def squeezed_rows(codes: np.ndarray, layer: Layer, hw: Hardware) -> int:
    return sliced_block_count(np.asarray(codes), dict(layer.attrs), hw, squeeze=True)


def narrowed(model: Model, widths: dict[str, int]) -> Model:
    """The model with each layer named in `widths` requantized to its width (8: left alone)."""
    from .weight_bits import narrowed_layer

    weights = dict(model.weights)
    layers = tuple(narrowed_layer(model, layer, weights, widths[layer.name]) if widths.get(layer.name, FULL_BITS) < FULL_BITS
                   else layer for layer in model.graph.layers)
    return model.replace(graph=dataclasses.replace(model.graph, layers=layers), weights=weights)


def _layer_io(model: Model, inputs: Sequence[tuple]) -> list[dict[str, torch.Tensor]]:
    """Per input tuple, every crossbar layer's inputs and output, by the integer reference."""
    wanted = {name for layer in model.graph.layers if is_crossbar_layer(layer) for name in (layer.name, *layer.inputs)}
    runs: list[dict[str, torch.Tensor]] = []

    def keep(name: str, value: torch.Tensor) -> None:
        if name in wanted:
            runs[-1][name] = value

    for x in inputs:
        runs.append({})
        evaluate(model, x, on_value=keep)
    return runs


def _relative_error(new: list[torch.Tensor], old: list[torch.Tensor], zero: int) -> float:
    num = sum(float(((a.double() - b.double()) ** 2).sum()) for a, b in zip(new, old, strict=True))
    den = sum(float(((b.double() - zero) ** 2).sum()) for b in old)
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def layer_moves(model: Model, hw: Hardware, inputs: Sequence[tuple], widths: tuple[int, ...]) -> list[Move]:
    """Every (layer, width) that saves APU rows, with its sensitivity measured on `inputs`."""
    from .weight_bits import narrowed_layer

    runs = _layer_io(model, inputs)
    moves = []
    for layer in model.graph.layers:
        if not is_crossbar_layer(layer):
            continue
        full = squeezed_rows(model.weights[weight_name(layer)], layer, hw)
        opdef = OPS[layer.op]
        for bits in widths:
            weights: dict = {}
            narrow = narrowed_layer(model, layer, weights, bits)
            saved = full - squeezed_rows(weights[weight_name(layer)], narrow, hw)
            if saved <= 0:
                continue
            tensors = {role: torch.from_numpy(np.asarray(weights.get(ref.name, model.weights[ref.name])))
                       for role, ref in narrow.weights}
            attrs = {**opdef.defaults, **dict(narrow.attrs)}
            with torch.no_grad():
                new = [opdef.fn([run[i] for i in layer.inputs], attrs, tensors) for run in runs]
            error = _relative_error(new, [run[layer.name] for run in runs], int(layer.attr("out_zp", 0)))
            moves.append(Move(layer.name, bits, saved, error))
    return moves


def ordered(moves: list[Move]) -> list[Move]:
    """Least sensitivity per row saved first (ties: more rows saved first, then layer order)."""
    index = {move: i for i, move in enumerate(moves)}
    return sorted(moves, key=lambda m: (m.sensitivity / m.rows_saved, -m.rows_saved, index[m]))


def prefix_widths(order: list[Move], length: int) -> dict[str, int]:
    """Each layer's narrowest width among the first `length` moves."""
    widths: dict[str, int] = {}
    for move in order[:length]:
        widths[move.layer] = min(widths.get(move.layer, FULL_BITS), move.bits)
    return widths


def model_outputs(model: Model, inputs: Sequence[tuple]) -> list[np.ndarray]:
    return [np.concatenate([t.double().numpy().ravel() for t in evaluate(model, x)]) for x in inputs]


def output_loss(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """1 - the mean cosine between each input's outputs and the reference's."""
    cosines = []
    for a, b in zip(outputs, reference, strict=True):
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b)))
    return 1.0 - float(np.mean(cosines))


def longest_prefix_within(loss: Callable[[int], float], length: int, budget: float) -> int:
    """The longest prefix of `length` moves whose `loss` is at most `budget`, by bisection: every
    prefix it returns was measured. It assumes the loss grows with the prefix."""
    if length and loss(length) <= budget:
        return length
    return _bisect(loss, 0, length, budget)


def _bisect(loss: Callable[[int], float], good: int, bad: int, budget: float) -> int:
    """The longest prefix between `good` (loss within budget) and `bad` (known to exceed it)."""
    while bad - good > 1:
        middle = (good + bad) // 2
        if loss(middle) <= budget:
            good = middle
        else:
            bad = middle
    return good


def longest_prefix_doubling(loss: Callable[[int], float], length: int, budget: float) -> int:
    """As `longest_prefix_within`, but trying prefixes of 1, 2, 4, ... moves until one exceeds the
    budget, then bisecting between the last two: for moves whose prefixes cost in proportion to
    their length to build (slice_sparsity.py), so that the search costs what the answer does."""
    good, bad = 0, None
    while good < length:
        probe = min(max(1, 2 * good), length)
        if loss(probe) > budget:
            bad = probe
            break
        good = probe
    return good if bad is None else _bisect(loss, good, bad, budget)


@dataclass(frozen=True)
class Choice:
    """The chosen widths (layers left at 8 bits are not named), their measured loss, and the search."""

    widths: dict[str, int]
    loss: float
    order: list[Move]
    measured: dict[int, float]      # prefix length -> model-level loss


def choose_widths(model: Model, hw: Hardware, calibration: Sequence[tuple], budget: float,
                  narrowest: int = 4) -> Choice:
    """The longest prefix of the moves, least sensitive per row saved first, whose measured
    model-level loss on the calibration inputs is at most `budget`."""
    inputs = list(calibration)[:MEASURE_INPUTS]
    order = ordered(layer_moves(model, hw, inputs, candidate_widths(hw, narrowest)))
    reference = model_outputs(model, inputs)
    measured = {0: 0.0}

    def loss(length: int) -> float:
        if length not in measured:
            measured[length] = output_loss(reference, model_outputs(narrowed(model, prefix_widths(order, length)), inputs))
        return measured[length]

    good = longest_prefix_within(loss, len(order), budget)
    return Choice(prefix_widths(order, good), measured[good], order, measured)
