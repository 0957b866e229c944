"""Slice sparsity: SME's bit-sparsity orchestration at the granularity of a crossbar, for lossy
squeeze-out (SME: Sparse-Multiplication-Engine, arXiv 2103.01705, abstract: bit-sparsity
"orchestrated" on existing quantization, then "squeeze-out" of the crossbars it empties;
docs/tiling.md, "Slice sparsity").

On a bit-sliced chip a crossbar slot holds slice t of a 128 x 128 weight tile, and an APU row
holds the slots of one K-chunk only (its crossbars share their inputs, IV-C). The 8-bit codes
have no all-zero slice tile (docs/results.md, "Why lossless squeeze-out finds nothing"), and the
weight-bits pass empties slices a whole layer at a time, where one trained layer's narrowing
already costs most of the accuracy budget. This pass empties the lowest slices of single tiles:
tile (i, j) at depth d keeps codes that are multiples of 2^(d cell_bits), so its d lowest slices
are zero for every weight and squeeze out. Every `slices_per_weight` slots a K-chunk sheds is one
APU row fewer written and computed.

Which tiles: for each tile and depth, the squared error that rounding it alone adds to the
layer's output codes, relative to their squared size, is computed from the Gram matrix of the
layer's centred inputs on the calibration inputs (sum_n M_n^2 d_n' G d_n, M_n the output
channel's requantization multiplier). A move saves one APU row of one K-chunk by emptying its
cheapest slots; the moves are ordered by cost, and the longest prefix whose model-level loss
stays within the budget is kept (as in weight_widths.py, same loss: 1 - mean output
cosine against the program before this pass, on at most `MEASURE_INPUTS` calibration inputs),
searched from the short prefixes up: a long prefix costs a requantization of many column blocks.

How the codes are made: rounding a tile alone throws its error away. Instead each column block
is requantized as GPTQ does (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", ICLR 2023, Algorithm 1): input rows one at a time, the
coarse tiles' rows first, each row's rounding error spread over the rows not yet rounded through
the inverse Gram matrix, so that the 8-bit tiles of the other K-chunks absorb most of it. The
target is the program's own codes, so the other tiles stay 8-bit codes of the same channel scale
and zero point; only their values move. On all-MiniLM-L6-v2 this is what makes a write round
affordable: the same 72 rows cost 1.9 points of similarity Spearman rounded alone and 0.3
compensated (docs/results.md).

The rows each move saves are predicted from the slots present; the blocks the program has are
counted from its codes by the tile pass, as for lossless squeeze-out, which must follow
(`--squeeze-out lossy` runs both).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..ir import Model
from ..isa.hardware import Hardware
from ..isa.tiling import block_grid, slice_tile_nonzero, weight_matrix
from .shift_weights import channel_param
from .tile import is_crossbar_layer
from .weight_slicing import layer_inputs, layer_windows
from .weight_widths import MEASURE_INPUTS, longest_prefix_doubling, model_outputs, output_loss, weight_name

DAMPING = 0.01      # of the Gram matrix's mean diagonal, added to it before inverting (GPTQ's choice)
LAZY_COLUMNS = 128  # input rows rounded before their error is spread over the rest in one product (GPTQ's lazy batch)

Tile = tuple[str, int, int, int]   # (layer, group, K-chunk i, column block j)


class SliceSparsityError(ValueError):
    """Slice sparsity asked of a chip, model or budget it cannot serve: the user's to fix (exit 2)."""


@dataclass(frozen=True)
class RowMove:
    """Empty `drops` (column block j, new depth) of K-chunk `chunk` of a layer's group: one APU
    row fewer, at `cost` (the sum of the drops' relative output errors)."""

    layer: str
    group: int
    chunk: int
    drops: tuple[tuple[int, int], ...]
    cost: float


def _grid(codes: np.ndarray, step: int, top: int) -> np.ndarray:
    """The nearest multiples of `step` within 0..top (rounding half to even: unbiased)."""
    return np.clip(np.round(codes / step) * step, 0, top + 1 - step)


def _layer_bits(layer) -> int:
    return int(layer.attr("weight_bits", 8))


def input_grams(model: Model, layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Per group, sum over the inputs' windows of x x' (float64 [K, K]), x the window less x_zp."""
    codes = np.asarray(model.weights[weight_name(layer)])
    kernel = (codes.shape[2], codes.shape[3]) if codes.ndim == 4 else (1, 1)
    grams: list[np.ndarray] | None = None
    for x in inputs:
        per_group = [w.astype(np.float64) - layer.attr("x_zp") for w in layer_windows(layer, kernel, x)]
        products = [w.T @ w for w in per_group]
        grams = products if grams is None else [g + p for g, p in zip(grams, products, strict=True)]
    assert grams is not None, f"no calibration input reached {layer.name}"
    return grams


def _output_weights(model: Model, layer) -> np.ndarray:
    """M_n^2: an accumulator error's squared size in output codes, per output channel."""
    multiplier = channel_param(model, layer, "multiplier").astype(np.float64)
    return (multiplier / np.exp2(channel_param(model, layer, "shift").astype(np.float64))) ** 2


def _weighted_energy(delta: np.ndarray, gram: np.ndarray, weights: np.ndarray) -> float:
    """sum_n weights[n] delta[:, n]' G delta[:, n]: the squared size of x' delta over the windows."""
    return float(((gram @ delta) * delta).sum(0) @ weights)


def layer_moves(model: Model, layer, grams: list[np.ndarray], hw: Hardware) -> list[RowMove]:
    """The row-saving moves of one layer, each K-chunk's cheapest first."""
    codes = np.asarray(model.weights[weight_name(layer)])
    attrs = {"groups": 1, **dict(layer.attrs)}
    rows, cols = hw.block
    cell_bits, per_row = hw.crossbar.cell_bits, hw.slices_per_weight
    top = (1 << _layer_bits(layer)) - 1
    present_slices = -(-_layer_bits(layer) // cell_bits)
    weights, zp = _output_weights(model, layer), channel_param(model, layer, "w_zp").astype(np.float64)
    moves = []
    for g, (matrix, gram) in enumerate(zip(weight_matrix(codes, attrs), grams, strict=True)):
        k, n = matrix.shape
        columns = slice(g * n, (g + 1) * n)
        centred = matrix.astype(np.float64) - zp[columns]
        signal = _weighted_energy(centred, gram, weights[columns])
        if signal <= 0:
            continue
        present = slice_tile_nonzero(matrix, hw)
        kb, nb = block_grid(k, n, hw)
        for i in range(kb):
            r = slice(i * rows, min((i + 1) * rows, k))
            g_ii = gram[r, r]
            marginal = []   # (cost of one more slice of tile j, j, the depth it takes the tile to)
            for j in range(nb):
                c = slice(j * cols, min((j + 1) * cols, n))
                tile = matrix[r, c].astype(np.float64)
                error = cost = 0.0
                for depth in range(1, present_slices):   # the top slice stays: it holds the codes' range
                    if not present[i, j, depth - 1]:
                        break
                    delta = _grid(tile, 1 << (cell_bits * depth), top) - tile
                    deeper = _weighted_energy(delta, g_ii, weights[columns][c]) / signal
                    cost = max(deeper - error, cost)   # a deeper drop sorts after the shallower one
                    marginal.append((cost, j, depth))
                    error = deeper
            marginal.sort()
            slots = int(present[i].sum())
            size = slots - per_row * (-(-slots // per_row) - 1)   # the slots of the last row
            start = 0
            while start + size <= len(marginal):
                group = marginal[start:start + size]
                moves.append(RowMove(layer.name, g, i, tuple((j, d) for _, j, d in group),
                                     sum(cost for cost, *_ in group)))
                start, size = start + size, per_row
    return moves


def damped_inverse(gram: np.ndarray) -> np.ndarray:
    """(G + DAMPING mean(diag G) I)^-1: G's inverse once the inputs no sample excites are damped."""
    h = gram.copy()
    mean = float(np.mean(np.diag(h)))
    h[np.diag_indices(len(h))] += DAMPING * mean if mean > 0 else 1.0
    return torch.linalg.inv(torch.from_numpy(h)).numpy()


def compensated_codes(target: np.ndarray, steps: np.ndarray, top: int, inverse: np.ndarray) -> np.ndarray:
    """GPTQ (module docstring): codes [rows, K] for the float `target` [rows, K], input row k a
    multiple of steps[k] within 0..top, minimising sum over rows of e' G e (e the row's error)
    greedily, the coarsest input rows first. `inverse`: `damped_inverse(G)`, which a reordering
    of the rows only permutes, so one serves every column block of a layer. (torch's linear
    algebra: numpy's Cholesky factorisation runs 20-300x slower once torch is loaded, its OpenBLAS
    threads contending with torch's.)"""
    k = target.shape[1]
    order = np.argsort(-steps, kind="stable")
    upper = torch.linalg.cholesky(torch.from_numpy(inverse[np.ix_(order, order)])).numpy().T
    w = target[:, order].astype(np.float64)
    step = steps[order]
    codes = np.empty_like(w)
    for b0 in range(0, k, LAZY_COLUMNS):
        b1 = min(b0 + LAZY_COLUMNS, k)
        errors = np.empty((len(w), b1 - b0))
        for c in range(b0, b1):
            codes[:, c] = _grid(w[:, c], int(step[c]), top)
            errors[:, c - b0] = (w[:, c] - codes[:, c]) / upper[c, c]
            w[:, c + 1:b1] -= np.outer(errors[:, c - b0], upper[c, c + 1:b1])
        w[:, b1:] -= errors @ upper[b0:b1, b1:]
    result = np.empty_like(codes)
    result[:, order] = codes
    return result.astype(np.uint8)


def depths(order: list[RowMove], length: int) -> dict[Tile, int]:
    """Each tile's depth after the first `length` moves."""
    chosen: dict[Tile, int] = {}
    for move in order[:length]:
        for j, depth in move.drops:
            tile = (move.layer, move.group, move.chunk, j)
            chosen[tile] = max(chosen.get(tile, 0), depth)
    return chosen


class _Requantizer:
    """The model with given tile depths, each column block requantized once per pattern of depths."""

    def __init__(self, model: Model, grams: dict[str, list[np.ndarray]], hw: Hardware):
        self.model, self.grams, self.hw = model, grams, hw
        self.layers = {layer.name: layer for layer in model.graph.layers}
        self.done: dict[tuple, np.ndarray] = {}
        self.inverses: dict[tuple[str, int], np.ndarray] = {}

    def _inverse(self, name: str, group: int) -> np.ndarray:
        if (name, group) not in self.inverses:
            self.inverses[name, group] = damped_inverse(self.grams[name][group])
        return self.inverses[name, group]

    def __call__(self, chosen: dict[Tile, int]) -> Model:
        rows, cols = self.hw.block
        by_block: dict[tuple[str, int, int], dict[int, int]] = {}
        for (name, g, i, j), depth in chosen.items():
            by_block.setdefault((name, g, j), {})[i] = depth
        weights = dict(self.model.weights)
        for name in sorted({name for name, _, _ in by_block}):
            layer = self.layers[name]
            codes = np.array(self.model.weights[weight_name(layer)])
            matrices = weight_matrix(codes, {"groups": 1, **dict(layer.attrs)})   # views into `codes`
            for (block_layer, g, j), chunk_depths in by_block.items():
                if block_layer != name:
                    continue
                matrix = matrices[g]
                c = slice(j * cols, min((j + 1) * cols, matrix.shape[1]))
                key = (name, g, j, tuple(sorted(chunk_depths.items())))
                if key not in self.done:
                    steps = np.ones(matrix.shape[0], np.int64)
                    for i, depth in chunk_depths.items():
                        steps[i * rows:(i + 1) * rows] = 1 << (self.hw.crossbar.cell_bits * depth)
                    self.done[key] = compensated_codes(matrix[:, c].T.astype(np.float64), steps,
                                                       (1 << _layer_bits(layer)) - 1, self._inverse(name, g))
                matrix[:, c] = self.done[key].T
            weights[weight_name(layer)] = codes
        return self.model.replace(weights=weights)


@dataclass(frozen=True)
class Choice:
    """The chosen tile depths, their measured loss, the ordered moves and the search's measurements."""

    depths: dict[Tile, int]
    loss: float
    order: list[RowMove]
    measured: dict[int, float]


def choose_depths(model: Model, hw: Hardware, calibration: Sequence[tuple], budget: float) -> tuple[Choice, Model]:
    """The longest prefix of the moves, cheapest first, whose measured loss is within `budget`,
    and the model requantized for it."""
    inputs = list(calibration)[:MEASURE_INPUTS]
    seen = layer_inputs(model, inputs)
    crossbar = [layer for layer in model.graph.layers if is_crossbar_layer(layer)]
    grams = {layer.name: input_grams(model, layer, seen[layer.inputs[0]]) for layer in crossbar}
    del seen
    moves = [move for layer in crossbar for move in layer_moves(model, layer, grams[layer.name], hw)]
    order = sorted(moves, key=lambda m: m.cost)   # stable: ties keep layer and K-chunk order
    requantize = _Requantizer(model, grams, hw)
    reference = model_outputs(model, inputs)
    measured: dict[int, float] = {0: 0.0}
    models: dict[int, Model] = {0: model}

    def loss(length: int) -> float:
        if length not in measured:
            models[length] = requantize(depths(order, length))
            measured[length] = output_loss(reference, model_outputs(models[length], inputs))
        return measured[length]

    length = longest_prefix_doubling(loss, len(order), budget)
    return Choice(depths(order, length), measured[length], order, measured), models[length]


@dataclass(frozen=True)
class SliceSparsity:
    """Empty the lowest weight slices of the tiles where that saves APU rows at the least cost, as
    far as `budget` allows (module docstring); `enabled` False leaves the model as it is (the default)."""

    enabled: bool = False
    budget: float = 0.003
    calibration: tuple = ()

    name: ClassVar[str] = "slice-sparsity"
    requires: ClassVar[tuple[str, ...]] = ("quantized",)
    ensures: ClassVar[tuple[str, ...]] = ("slice-sparsity",)

    def run(self, model: Model, hw: Hardware | None = None) -> Model:
        if not self.enabled:
            return model
        if hw is None or not hw.bit_sliced:
            raise SliceSparsityError("--squeeze-out lossy empties weight slices of single crossbar tiles: it needs a "
                                     "bit-sliced chip, e.g. --hw aras-sme (docs/tiling.md)")
        if not self.calibration:
            raise SliceSparsityError("--squeeze-out lossy measures what emptied slices cost on calibration inputs: "
                                     "none given")
        if not 0 <= self.budget < 1:
            raise SliceSparsityError(f"--squeeze-out-budget {self.budget}: a loss of output cosine from 0 to 1")
        choice, chosen = choose_depths(model, hw, self.calibration, self.budget)
        meta = {**dict(chosen.graph.meta), "slice_sparsity_loss": round(choice.loss, 6),
                "slice_tiles_emptied": sum(choice.depths.values())}
        return chosen.replace(graph=dataclasses.replace(chosen.graph, meta=tuple(meta.items())))
