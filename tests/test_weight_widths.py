"""Per-layer weight widths against an accuracy budget (`--weight-bits auto`, passes/weight_widths.py).

- the rows each (layer, width) saves, derived by hand from the counting rule (an APU row holds 4
  slice tiles of one K-chunk), on four linear layers of 1 to 4 column blocks;
- the order (sensitivity per row saved) and the prefix widths, by hand;
- each sensitivity equals the layer's error measured a second way (the whole model evaluated with
  only that layer narrowed);
- the budget holds: the chosen widths' loss, recomputed, is at most the budget, and one more move
  would exceed it; no budget lowers every saving layer; a zero budget lowers nothing lossy;
- the compiled program at the chosen widths equals the integer reference bit for bit;
- auto without a bit-sliced chip and squeeze-out is a user error (exit 2).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compare import all_values
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.ir import evaluate
from arasc.isa.hardware import bundled_hardware
from arasc.options import CompileOptions
from arasc.passes import run_passes
from arasc.passes.quantize import Quantize
from arasc.passes.tile import is_crossbar_layer
from arasc.passes.weight_widths import (
    Move,
    choose_widths,
    layer_moves,
    model_outputs,
    narrowed,
    ordered,
    output_loss,
    prefix_widths,
)
from arasc.runtime.run import run_file

SME = bundled_hardware("aras-sme")


class Chain(torch.nn.Module):
    """Linear layers of 1, 2, 3 and 4 column blocks of 128 (a, b, c, d)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(64, 128), torch.nn.Linear(128, 256)
        self.c, self.d = torch.nn.Linear(256, 384), torch.nn.Linear(384, 512)

    def forward(self, x):
        return self.d(torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x)))))))


@pytest.fixture(scope="module")
def chain():
    torch.manual_seed(0)
    module = Chain().eval()
    calibration = [(torch.randn(4, 64).numpy(),) for _ in range(4)]
    model = import_module(module, (torch.from_numpy(calibration[0][0]),), "chain")
    quantized = run_passes(model, SME, [Quantize(calibration=tuple(calibration))])
    return module, model, quantized, calibration


def test_rows_saved_follow_the_counting_rule(chain):
    _, _, quantized, calibration = chain
    saved = {(m.layer, m.bits): m.rows_saved for m in layer_moves(quantized, SME, calibration, (6, 4))}
    # K-chunks kb, column blocks nb; rows = kb * ceil(slices * nb / 4) with 4, 3 or 2 slices at 8, 6, 4 bits:
    # a: kb 1, nb 1: 1, 1, 1 -> nothing saved        b: kb 1, nb 2: 2, ceil(6/4)=2, 1 -> 4-bit saves 1
    # c: kb 2, nb 3: 6, 2*ceil(9/4)=6, 2*ceil(6/4)=4   d: kb 3, nb 4: 12, 3*3=9, 3*2=6
    assert saved == {("b", 4): 1, ("c", 4): 2, ("d", 6): 3, ("d", 4): 6}


def test_order_and_prefix_widths_by_hand():
    moves = [Move("x", 6, 1, 0.004), Move("x", 4, 2, 0.010), Move("y", 4, 4, 0.008), Move("z", 6, 2, 0.004)]
    # per row saved: x6 0.004, x4 0.005, y4 0.002, z6 0.002 (tie: y4 saves more rows)
    order = ordered(moves)
    assert [(m.layer, m.bits) for m in order] == [("y", 4), ("z", 6), ("x", 6), ("x", 4)]
    assert prefix_widths(order, 0) == {}
    assert prefix_widths(order, 3) == {"y": 4, "z": 6, "x": 6}
    assert prefix_widths(order, 4) == {"y": 4, "z": 6, "x": 4}


def test_sensitivity_is_the_layers_own_output_error(chain):
    _, _, quantized, calibration = chain
    layers = {layer.name: layer for layer in quantized.graph.layers}
    for move in layer_moves(quantized, SME, calibration, (6, 4)):
        alone = narrowed(quantized, {move.layer: move.bits})
        zero = layers[move.layer].attr("out_zp", 0)
        num = den = 0.0
        for x in calibration:
            new = all_values(alone, x)[move.layer].astype(np.float64)
            old = all_values(quantized, x)[move.layer].astype(np.float64)
            num += ((new - old) ** 2).sum()
            den += ((old - zero) ** 2).sum()
        assert move.sensitivity == pytest.approx(num / den, rel=1e-9)
        assert move.sensitivity > 0


def test_no_budget_lowers_every_saving_layer_and_a_zero_budget_none(chain):
    _, _, quantized, calibration = chain
    assert choose_widths(quantized, SME, calibration, budget=0.999).widths == {"b": 4, "c": 4, "d": 4}
    nothing = choose_widths(quantized, SME, calibration, budget=0.0)
    assert nothing.widths == {} and nothing.loss == 0.0


@settings(max_examples=8, deadline=None)
@given(budget=st.floats(0, 0.02))
def test_the_budget_holds_and_one_more_move_breaks_it(chain, budget):
    _, _, quantized, calibration = chain
    choice = choose_widths(quantized, SME, calibration, budget)
    reference = model_outputs(quantized, calibration)
    loss = output_loss(reference, model_outputs(narrowed(quantized, choice.widths), calibration))
    assert loss == pytest.approx(choice.loss, abs=1e-12) and loss <= budget + 1e-12   # a cosine of 1 rounds to 1 - 1e-16
    taken = next(n for n in range(len(choice.order) + 1) if prefix_widths(choice.order, n) == choice.widths)
    if taken < len(choice.order):
        longer = prefix_widths(choice.order, taken + 1)
        assert output_loss(reference, model_outputs(narrowed(quantized, longer), calibration)) > budget


def test_auto_program_equals_the_reference_at_the_chosen_widths(chain, tmp_path):
    module, model, _, calibration = chain
    options = CompileOptions(squeeze_out="on", weight_bits="auto", weight_bits_budget=0.002, banks="greedy")
    path = str(tmp_path / "chain.aras")
    result = compile_model(model, SME, calibration, calibration[0], weights_name(path), options)
    write_compiled(result, path)
    widths = {layer.name: layer.attr("weight_bits", 8) for layer in result.model.graph.layers if is_crossbar_layer(layer)}
    assert widths["a"] == 8 and min(widths.values()) < 8        # a saves nothing; the budget allows d at 6 bits
    for layer in result.model.graph.layers:
        if is_crossbar_layer(layer):
            assert np.asarray(result.model.weights[layer.weight("weight").name]).max() < 1 << widths[layer.name]
    reference = [t.numpy() for t in evaluate(result.model, calibration[0])]
    run = run_file(path)
    for got, want in zip(run.outputs.values(), reference, strict=True):
        assert np.array_equal(got, want)
    assert run.machine.writes.blocks == sum(layer.attr("apu_rows") for layer in result.model.graph.layers
                                            if is_crossbar_layer(layer))


@pytest.mark.parametrize("flags, message", [
    (["--squeeze-out", "on"], "needs a bit-sliced chip"),
    (["--hw", "aras-sme"], "needs a bit-sliced chip and --squeeze-out on"),
])
def test_auto_without_a_sliced_chip_and_squeeze_out_is_a_user_error(tmp_path, capsys, flags, message):
    from arasc.cli import main

    out = tmp_path / "d.aras"
    assert main(["compile", "digits-cnn", "-o", str(out), "--quiet", "--weight-bits", "auto", *flags]) == 2
    assert message in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_budget_outside_0_to_1_is_refused(capsys):
    from arasc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["compile", "digits-cnn", "-o", "unused.aras", "--weight-bits", "auto", "--weight-bits-budget", "2"])
    assert exit_.value.code == 2 and "a loss of output cosine from 0 to 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="weight_bits_budget"):
        CompileOptions(weight_bits_budget=-0.5)
