"""Slice sparsity for lossy squeeze-out (`--squeeze-out lossy`, passes/slice_sparsity.py).

- the grid: multiples of the step, the nearest one, halves to even, within the layer's codes;
- GPTQ's compensation, by hand: with uncorrelated inputs it is plain rounding; with two inputs
  that are always equal, the coarse weight's rounding error moves to the fine one;
- the rows the moves predict are the rows the tile pass counts from the requantized codes, for
  every prefix of the order;
- the budget holds: the chosen prefix's loss, recomputed, is at most the budget, and the next
  prefix exceeds it; a zero budget empties nothing;
- the compiled program equals the integer reference bit for bit and writes the blocks counted;
- a chip without bit-sliced mapping, and a budget outside [0, 1), are user errors (exit 2).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.ir import evaluate
from arasc.isa.hardware import bundled_hardware
from arasc.options import CompileOptions
from arasc.passes import run_passes
from arasc.passes.quantize import Quantize
from arasc.passes.slice_sparsity import (
    _grid,
    _Requantizer,
    choose_depths,
    compensated_codes,
    damped_inverse,
    depths,
    input_grams,
    layer_inputs,
    layer_moves,
)
from arasc.passes.tile import is_crossbar_layer
from arasc.passes.weight_widths import (
    longest_prefix_doubling,
    longest_prefix_within,
    model_outputs,
    output_loss,
    squeezed_rows,
    weight_name,
)
from arasc.runtime.run import run_file

SME = bundled_hardware("aras-sme")


class Pair(torch.nn.Module):
    """Two linear layers: 256 -> 512 (2 K-chunks x 4 column blocks) and 512 -> 128 (4 x 1)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(256, 512), torch.nn.Linear(512, 128)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    module = Pair().eval()
    calibration = tuple((torch.randn(6, 256).numpy(),) for _ in range(4))
    model = import_module(module, (torch.from_numpy(calibration[0][0]),), "pair")
    quantized = run_passes(model, SME, [Quantize(calibration=calibration)])
    return model, quantized, calibration


class Convs(torch.nn.Module):
    """A 3x3 convolution 32 -> 256 (K 288: 3 K-chunks, the last partial, x 2 column blocks) and a
    1x1 convolution of 2 groups 256 -> 512 (per group K 128 x 2 column blocks)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(32, 256, 3, padding=1)
        self.b = torch.nn.Conv2d(256, 512, 1, groups=2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def convs():
    torch.manual_seed(1)
    module = Convs().eval()
    calibration = tuple((torch.randn(1, 32, 5, 5).numpy(),) for _ in range(3))
    model = import_module(module, (torch.from_numpy(calibration[0][0]),), "convs")
    quantized = run_passes(model, SME, [Quantize(calibration=calibration)])
    return model, quantized, calibration


@given(codes=st.lists(st.integers(0, 255), min_size=1, max_size=64), depth=st.integers(1, 3))
def test_the_grid_is_the_nearest_multiple_halves_to_even(codes, depth):
    step = 4 ** depth
    values = np.array(codes, np.float64)
    got = _grid(values, step, 255)
    for q, g in zip(codes, got, strict=True):
        below = q // step * step
        nearest = [c for c in (below, below + step) if abs(c - q) == min(abs(below - q), abs(below + step - q))]
        want = nearest[0] if len(nearest) == 1 else next(c for c in nearest if c // step % 2 == 0)
        assert g == min(want, 256 - step) and g % step == 0


def test_uncorrelated_inputs_leave_nothing_to_compensate():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (5, 6)).astype(np.float64)
    steps = np.array([4, 1, 16, 1, 4, 1])
    codes = compensated_codes(target, steps, 255, damped_inverse(np.diag(rng.uniform(1, 9, 6))))
    assert np.array_equal(codes, np.stack([_grid(target[:, k], steps[k], 255) for k in range(6)], axis=1))


def test_equal_inputs_move_the_coarse_error_to_the_fine_weight():
    # x0 == x1 always: only w0 + w1 matters. w0 = 2 on a grid of 4 rounds (half to even) to 0; the
    # lost 2 goes to w1 = 10 -> 12, so the sum 12 is kept (the 1 % damping moves it by far less than 0.5)
    codes = compensated_codes(np.array([[2.0, 10.0]]), np.array([4, 1]), 255, damped_inverse(np.ones((2, 2))))
    assert codes.tolist() == [[0, 12]]


def _requantized(quantized, calibration):
    seen = layer_inputs(quantized, calibration)
    layers = [layer for layer in quantized.graph.layers if is_crossbar_layer(layer)]
    grams = {layer.name: input_grams(quantized, layer, seen[layer.inputs[0]]) for layer in layers}
    order = sorted((m for layer in layers for m in layer_moves(quantized, layer, grams[layer.name], SME)),
                   key=lambda m: m.cost)
    return layers, order, _Requantizer(quantized, grams, SME)


def _rows(model, layers):
    return sum(squeezed_rows(model.weights[weight_name(layer)], layer, SME) for layer in layers)


def test_each_move_saves_the_row_the_tile_pass_counts(pair):
    _, quantized, calibration = pair
    layers, order, requantize = _requantized(quantized, calibration)
    dense = _rows(quantized, layers)
    # a: 2 K-chunks of 4 column blocks, 16 slots each -> 4 rows each, 1 when only top slices are left: 6 moves;
    # b: 4 K-chunks of 1 block, 4 slots -> 1 row each: nothing to save
    assert dense == 2 * 4 + 4 * 1 and len(order) == 6 and {m.layer for m in order} == {"a"}
    for length in range(len(order) + 1):
        assert _rows(requantize(depths(order, length)), layers) == dense - length


def test_convolutions_and_groups_save_the_rows_predicted(convs):
    _, quantized, calibration = convs
    layers, order, requantize = _requantized(quantized, calibration)
    dense = _rows(quantized, layers)
    # a: 3 K-chunks x 2 blocks: 8 slots, 2 rows each -> 1 move each; b: 2 groups x 1 K-chunk x 2 blocks: 1 move each
    assert dense == 3 * 2 + 2 * 2 and len(order) == 5
    assert sorted((m.layer, m.group, m.chunk) for m in order) == [("a", 0, 0), ("a", 0, 1), ("a", 0, 2),
                                                                   ("b", 0, 0), ("b", 1, 0)]
    for length in range(len(order) + 1):
        model = requantize(depths(order, length))
        assert _rows(model, layers) == dense - length
    x = calibration[0]
    assert output_loss(model_outputs(quantized, [x]), model_outputs(model, [x])) < 0.05


def test_input_grams_equal_torchs_unfold(convs):
    _, quantized, calibration = convs
    seen = layer_inputs(quantized, calibration)
    for layer in quantized.graph.layers:
        if not is_crossbar_layer(layer):
            continue
        weight = np.asarray(quantized.weights[weight_name(layer)])
        groups = layer.attr("groups", 1)
        per_group = weight.shape[1]
        want = [np.zeros((per_group * 9 if weight.shape[2] == 3 else per_group,) * 2) for _ in range(groups)]
        for x in seen[layer.inputs[0]]:
            centred = torch.from_numpy(x.astype(np.float64) - layer.attr("x_zp"))
            for g in range(groups):
                # padding with 0 after centring is padding with x_zp, the code of real 0
                u = torch.nn.functional.unfold(centred[:, g * per_group:(g + 1) * per_group], weight.shape[2:],
                                               padding=layer.attr("padding"), stride=layer.attr("stride"))
                want[g] += sum((m @ m.T).numpy() for m in u)
        for got, expected in zip(input_grams(quantized, layer, seen[layer.inputs[0]]), want, strict=True):
            assert np.allclose(got, expected, rtol=1e-12, atol=1e-6)


def test_the_dropped_slices_are_zero_and_the_codes_stay_in_range(pair):
    _, quantized, calibration = pair
    layers, order, requantize = _requantized(quantized, calibration)
    chosen = depths(order, 3)
    codes = np.asarray(requantize(chosen).weights[weight_name(layers[0])])
    matrix = codes.T          # K x N, as the tiles are cut
    for (_, _, i, j), depth in chosen.items():
        tile = matrix[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].astype(np.int64)
        assert (tile % (4 ** depth) == 0).all() and tile.max() <= 255
    untouched = np.asarray(quantized.weights[weight_name(layers[1])])
    assert np.array_equal(np.asarray(requantize(chosen).weights[weight_name(layers[1])]), untouched)


def test_a_zero_budget_empties_nothing(pair):
    _, quantized, calibration = pair
    choice, model = choose_depths(quantized, SME, calibration, 0.0)
    assert choice.depths == {} and model is quantized


@settings(max_examples=6, deadline=None)
@given(budget=st.floats(0, 0.05))
def test_the_budget_holds_and_the_next_prefix_breaks_it(pair, budget):
    _, quantized, calibration = pair
    choice, model = choose_depths(quantized, SME, calibration, budget)
    reference = model_outputs(quantized, calibration)
    assert output_loss(reference, model_outputs(model, calibration)) == pytest.approx(choice.loss, abs=1e-12)
    assert choice.loss <= budget
    taken = next(n for n in range(len(choice.order) + 1) if depths(choice.order, n) == choice.depths)
    if taken < len(choice.order):
        assert choice.measured.get(taken + 1, np.inf) > budget


def test_the_longest_prefix_within_a_budget_by_hand():
    calls = []

    def loss(n):
        calls.append(n)
        return [0, 0.1, 0.2, 0.5, 0.4, 0.9][n]

    assert longest_prefix_within(loss, 5, 0.3) == 2 and calls == [5, 2, 3]
    assert longest_prefix_within(lambda n: 0.0, 5, 0.0) == 5
    assert longest_prefix_within(lambda n: 1.0, 0, 0.5) == 0


def test_the_doubling_search_by_hand():
    calls = []

    def loss(n):
        calls.append(n)
        return [0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 0.9, 1, 1][n]

    assert longest_prefix_doubling(loss, 9, 0.3) == 4 and calls == [1, 2, 4, 8, 6, 5]
    assert longest_prefix_doubling(lambda n: 0.0, 9, 0.0) == 9
    assert longest_prefix_doubling(lambda n: 1.0, 9, 0.5) == 0
    assert longest_prefix_doubling(lambda n: 1.0, 0, 0.5) == 0


def test_the_program_equals_the_reference_and_writes_fewer_blocks(pair, tmp_path):
    model, _, calibration = pair
    path = str(tmp_path / "pair.aras")
    options = CompileOptions(squeeze_out="lossy", squeeze_out_budget=0.02, banks="greedy")
    result = compile_model(model, SME, calibration, calibration[0], weights_name(path), options)
    write_compiled(result, path)
    meta = dict(result.model.graph.meta)
    assert 0 < meta["slice_tiles_emptied"] and 0 < meta["slice_sparsity_loss"] <= 0.02
    layers = [layer for layer in result.model.graph.layers if is_crossbar_layer(layer)]
    run = run_file(path)
    for got, want in zip(run.outputs.values(), evaluate(result.model, calibration[0]), strict=True):
        assert np.array_equal(got, want.numpy())
    assert run.machine.writes.blocks == sum(layer.attr("apu_rows") for layer in layers) < 12


@pytest.mark.parametrize("flags, message", [
    ([], "needs a bit-sliced chip"),
    (["--hw", "aras-sme", "--squeeze-out-budget", "2"], "a loss of output cosine from 0 to 1"),
])
def test_user_errors(tmp_path, capsys, flags, message):
    from arasc.cli import main

    out = tmp_path / "d.aras"
    try:
        code = main(["compile", "digits-cnn", "-o", str(out), "--quiet", "--squeeze-out", "lossy", *flags])
    except SystemExit as exit_:   # argparse refuses the budget itself
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err and not list(tmp_path.iterdir())
