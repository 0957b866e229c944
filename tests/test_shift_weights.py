"""Weight-mean shifting (paper V-C): exact compensation through the zero point, the center
choice and its guard, and the skipped cells it buys on the interpreter."""
import dataclasses
import difflib
import functools
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arasc.isa.hardware
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.ir import OPS, evaluate, print_graph
from arasc.isa.hardware import default_hardware, load_hardware
from arasc.options import CompileOptions
from arasc.passes.quantize import Quantize
from arasc.passes.shift_weights import CENTERS, ShiftWeights, channel_param, choose_center, crossbar_weights, shifted
from arasc.runtime.run import run_file

from conftest import built, lowered

HW = default_hardware()
ISA_DIR = os.path.dirname(arasc.isa.hardware.__file__)


@functools.cache
def quantized(name):
    """After quantize with one weight zero point per layer: the paper's Eqs. 4-7 shift layers."""
    _, inputs = built(name)
    return Quantize(calibration=(tuple(np.asarray(x) for x in inputs),), weights="tensor").run(lowered(name))


def narrowed(model):
    """The same quantized model with every crossbar weight pulled to within 32 codes of its
    zero point, so that no center clips it."""
    weights = dict(model.weights)
    for layer in model.graph.layers:
        if OPS[layer.op].kind == "mvm":
            name, zp = layer.weight("weight").name, layer.attr("w_zp")
            codes = np.asarray(model.weights[name]).astype(np.int16)
            weights[name] = (zp + (codes - zp) // 8).astype(np.uint8)
    return model.replace(weights=weights)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), center=st.sampled_from(CENTERS), mean=st.integers(20, 235),
       spread=st.integers(1, 120))
def test_the_shift_keeps_q_minus_z_wherever_nothing_clips(seed, center, mean, spread):
    model = narrowed(quantized("digits-cnn"))
    name = crossbar_weights(model)[1]
    rng = np.random.default_rng(seed)
    codes = np.clip(rng.normal(mean, spread, model.weights[name].shape).round(), 0, 255).astype(np.uint8)
    zp = int(np.clip(mean + rng.integers(-10, 11), 0, 255))
    layers = tuple(dataclasses.replace(layer, attrs={**dict(layer.attrs), "w_zp": zp})
                   if OPS[layer.op].kind == "mvm" and layer.weight("weight").name == name else layer
                   for layer in model.graph.layers)
    model = model.replace(graph=dataclasses.replace(model.graph, layers=layers), weights={**model.weights, name: codes})
    out, clipped = shifted(model, center, "clip")
    layer = next(c for c in out.graph.layers if OPS[c.op].kind == "mvm" and c.weight("weight").name == name)
    new_zp = layer.attr("w_zp")
    assert 0 <= new_zp <= 255
    moved = np.asarray(out.weights[name]).astype(int) - new_zp
    kept = (codes.astype(int) + new_zp - zp >= 0) & (codes.astype(int) + new_zp - zp <= 255)
    assert np.array_equal(moved[kept], codes.astype(int)[kept] - zp)
    assert (np.asarray(out.weights[name]) != codes.astype(int) + new_zp - zp).any() == (not kept.all())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), center=st.sampled_from(CENTERS), spread=st.integers(1, 120))
def test_fit_clips_nothing_and_rescales_the_multiplier(seed, center, spread):
    model = quantized("digits-cnn")
    name = crossbar_weights(model)[1]
    rng = np.random.default_rng(seed)
    layer = next(c for c in model.graph.layers if OPS[c.op].kind == "mvm" and c.weight("weight").name == name)
    zp = layer.attr("w_zp")
    codes = np.clip(rng.normal(zp, spread, model.weights[name].shape).round(), 0, 255).astype(np.uint8)
    out, clipped = shifted(model.replace(weights={**model.weights, name: codes}), center, "fit")
    assert clipped == 0
    new = next(c for c in out.graph.layers if c.name == layer.name)
    real = layer.attr("multiplier") / 2.0 ** layer.attr("shift")
    alpha = real / (new.attr("multiplier") / 2.0 ** new.attr("shift"))
    assert 0 < alpha <= 1 + 1e-9
    moved = np.asarray(out.weights[name]).astype(float) - new.attr("w_zp")
    assert np.abs(moved - alpha * (codes.astype(float) - zp)).max() <= 0.5 + 1e-6


def test_the_ir_changes_only_in_the_zero_points_of_all_but_the_first_layer():
    model = narrowed(quantized("resnet50-small"))  # nothing to fit: the shift alone
    before, after = print_graph(model.graph).splitlines(), print_graph(shifted(model, 96)[0].graph).splitlines()
    diff = list(difflib.unified_diff(before, after, lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    first = crossbar_weights(model)[0]
    layers = [c for c in model.graph.layers if OPS[c.op].kind == "mvm"]
    assert removed[0].startswith("graph ") and 'weight_center=96, weight_shift="fit"' in added[0]
    removed, added = removed[1:], added[1:]
    assert len(removed) == len(added) == len(layers) - 1
    for old, new in zip(removed, added, strict=True):
        assert old != new and old.split("w_zp=")[0] == new.split("w_zp=")[0]  # same line up to w_zp
        assert old.split("w_zp=")[1].split(",")[1:] == new.split("w_zp=")[1].split(",")[1:]
        assert f"@{first}" not in old


def test_without_clipping_the_outputs_are_bit_identical():
    _, inputs = built("resnet50-small")
    model = narrowed(quantized("resnet50-small"))
    for center, method in zip(CENTERS, ["clip", "fit"] * 3, strict=True):
        out, clipped = shifted(model, center, method)
        assert clipped == 0
        for a, b in zip(evaluate(model, inputs), evaluate(out, inputs), strict=True):
            assert np.array_equal(a.numpy(), b.numpy())


def test_per_channel_zero_points_shift_per_channel_and_keep_the_outputs():
    # With a zero point per output channel, each channel's codes move by its own d_c = center -
    # mean(q_c) (clamped so that z_c + d_c stays a code): q - z is unchanged per channel, so
    # without clipping the outputs are bit-identical and every channel's mean lands on the center.
    _, inputs = built("digits-cnn")
    model = Quantize(calibration=(tuple(np.asarray(x) for x in inputs),)).run(lowered("digits-cnn"))
    weights = dict(model.weights)
    for layer in model.graph.layers:
        if OPS[layer.op].kind == "mvm":
            zp, name = channel_param(model, layer, "w_zp"), layer.weight("weight").name
            codes = np.asarray(weights[name]).astype(np.int64).reshape(len(zp), -1)
            weights[name] = (zp[:, None] + (codes - zp[:, None]) // 8).astype(np.uint8).reshape(weights[name].shape)
    model = model.replace(weights=weights)       # within 32 codes of each zero point: nothing clips
    out, clipped = shifted(model, 104, "clip")
    assert clipped == 0
    for a, b in zip(evaluate(model, inputs), evaluate(out, inputs), strict=True):
        assert np.array_equal(a.numpy(), b.numpy())
    second = next(c for c in out.graph.layers if OPS[c.op].kind == "mvm" and c.weight("weight").name ==
                  crossbar_weights(out)[1])
    means = np.asarray(out.weights[second.weight("weight").name]).reshape(len(channel_param(out, second, "w_zp")),
                                                                           -1).mean(1)
    assert np.abs(means - 104).max() <= 0.5 + 1e-9


def test_task_agreement_by_output_shape():
    from arasc.passes.shift_weights import task_agreement

    logits = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0], [2.0, 1.0, 0.0]])
    flipped = logits.copy()
    flipped[1] = [0.0, 3.0, 1.0]                  # one of four top-1 classes changes
    assert task_agreement([[logits]], [[logits]]) == pytest.approx(1.0)
    assert task_agreement([[logits]], [[flipped]]) == 0.75   # below the logits' cosine, 0.80
    # Every class kept, the logits changed: their cosine counts (one calibration image says little).
    assert task_agreement([[logits]], [[logits + [[0.0, 0.0, 1.0]] * 4]]) == pytest.approx(
        float((logits * (logits + [0, 0, 1])).sum() / np.linalg.norm(logits) / np.linalg.norm(logits + [0, 0, 1])))
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(6, 4, 8))
    assert task_agreement([[hidden]], [[hidden * 2.0]]) == pytest.approx(1.0)   # similarities keep their order
    assert task_agreement([[hidden]], [[rng.normal(size=(6, 4, 8))]]) < 0.9
    # Noise that cancels in the token mean keeps every similarity; the hidden states' cosine still counts.
    noise = np.concatenate([np.full((6, 2, 8), 0.3), np.full((6, 2, 8), -0.3)], axis=1)
    cos = float((hidden * (hidden + noise)).sum() / np.linalg.norm(hidden) / np.linalg.norm(hidden + noise))
    assert task_agreement([[hidden]], [[hidden + noise]]) == pytest.approx(cos) and cos < 0.99


def test_auto_keeps_the_outputs_or_shifts_nothing():
    _, inputs = built("bert-base-small")
    model = quantized("bert-base-small")
    choice = choose_center(model, [inputs], 0.999, HW)
    if choice.center is not None:
        assert choice.agreement[choice.center] >= 0.999
        assert choice.skip[choice.center] > choice.skip[None]
    strict = ShiftWeights("auto", (tuple(np.asarray(x) for x in inputs),), min_agreement=1.5).run(model, HW)
    assert strict is model


def test_a_common_center_raises_the_skipped_cells_on_the_interpreter(tmp_path):
    """On a chip of 24 APU rows, too small to hold resnet50-small, so layers overwrite each other."""
    module, inputs = built("resnet50-small")
    hw_path = tmp_path / "small-chip.toml"
    hw_path.write_text(Path(ISA_DIR, "aras-default.toml").read_text().replace("pes = 96", "pes = 4"))
    hw = load_hardware(str(hw_path))
    ratios = {}
    for center in (None, 96):
        path = str(tmp_path / f"{center}.aras")
        write_compiled(compile_model(lowered("resnet50-small"), hw, [inputs], inputs, weights_name(path),
                                     CompileOptions(weight_center=center)), path)
        writes = run_file(path, hw_path=str(hw_path), inferences=2, compute=False).machine.writes
        ratios[center] = writes.cells_skipped / (writes.cells_skipped + writes.cells_written)
    assert ratios[96] > ratios[None] + 0.01, ratios


def test_fit_rescales_only_codes_that_would_leave_the_range():
    from arasc.passes.shift_weights import _fitting_scales

    low, high, zero_point = np.array([-88, -89, -10, -120]), np.array([100, 100, 167, 200]), np.array([88, 88, 88, 88])
    alpha = _fitting_scales(low, high, zero_point)
    assert alpha[0] == 1.0       # the lowest code lands on 0 exactly
    assert alpha[1] < 1.0        # one code further would be -1
    assert alpha[2] == 1.0       # the highest lands on 255
    assert 88 - alpha[3] * 120 >= -0.5 and 88 + alpha[3] * 200 <= 255.5
    assert 88 - alpha[3] * 120 <= 0.5 or 88 + alpha[3] * 200 >= 254.5   # and as large as that allows


@settings(max_examples=200, deadline=None)
@given(reals=st.lists(st.floats(1e-20, 1e6), min_size=1, max_size=20), bits=st.integers(24, 31))
def test_fixed_points_match_fixed_point_one_at_a_time(reals, bits):
    from arasc.ir.qops import fixed_point
    from arasc.passes.shift_weights import _fixed_points

    multipliers, shifts = _fixed_points(np.array(reals), bits)
    assert [fixed_point(r, bits) for r in reals] == list(zip(multipliers.tolist(), shifts.tolist(), strict=True))


def test_the_center_choice_predicts_from_histograms_what_the_shifted_model_holds():
    """... and the ranges the center choice reads off the histograms once (`channel_ranges`) plan
    the same moves as each layer's histogram read anew."""
    from arasc.passes.shift_weights import channel_histograms, channel_ranges, predicted_center, predicted_skip

    _, inputs = built("digits-cnn")
    per_channel = Quantize(calibration=(tuple(np.asarray(x) for x in inputs),)).run(lowered("digits-cnn"))
    for model in (quantized("resnet50-small"), per_channel):
        histograms = channel_histograms(model)
        ranges = channel_ranges(model, histograms)
        assert predicted_center(model, histograms, None, "fit", HW)[0] == pytest.approx(predicted_skip(model, HW))
        for center, method in zip(CENTERS, ["clip", "fit"] * 3, strict=True):
            out, clipped = shifted(model, center, method)
            skip, clipped_predicted = predicted_center(model, histograms, center, method, HW)
            assert skip == pytest.approx(predicted_skip(out, HW), rel=1e-12)
            assert clipped_predicted == pytest.approx(clipped, rel=1e-12)
            assert predicted_center(model, histograms, center, method, HW, ranges) == (skip, clipped_predicted)
            again, _ = shifted(model, center, method, histograms=histograms, ranges=ranges)
            assert again.weights.keys() == out.weights.keys()
            assert all(np.array_equal(again.weights[k], out.weights[k]) for k in out.weights)
            assert again.graph == out.graph


def test_auto_costs_two_evaluations_when_the_best_center_passes(monkeypatch):
    import arasc.passes.shift_weights as shift_weights

    _, inputs = built("resnet50-small")
    model = quantized("resnet50-small")
    calls = []
    evaluate_module = __import__("arasc.ir.evaluate", fromlist=["evaluate"])
    monkeypatch.setattr(evaluate_module, "evaluate", lambda m, x: calls.append(m) or evaluate(m, x))
    choice = choose_center(model, [inputs], 0.0, HW)
    assert len(calls) == 2 and calls[0] is model
    assert choice.center == max(CENTERS, key=lambda c: choice.skip[c]) and not choice.kept
    calls.clear()
    assert choose_center(model, [inputs], 1.5, HW).center is None         # nothing can pass
    assert len(calls) == 1 + shift_weights.MAX_CHECKS


def test_the_fallback_leaves_the_layers_the_shift_changes_most_unshifted(monkeypatch):
    import arasc.passes.shift_weights as shift_weights

    _, inputs = built("resnet50-small")
    model = quantized("resnet50-small")
    calibration = (tuple(np.asarray(x) for x in inputs),)
    verdicts = iter([0.5, 1.0, 0.5, 1.0])    # each time: the full shift fails the task, the first fallback passes
    monkeypatch.setattr(shift_weights, "task_agreement", lambda reference, outputs: next(verdicts))
    choice = choose_center(model, calibration, 0.999, HW)
    assert choice.center is not None
    errors = shift_weights.layer_errors(model, choice.center, "fit")
    changed = sorted((name for name, e in errors.items() if e > 0), key=errors.get)
    assert len(changed) >= 2 and choice.kept == frozenset(changed[len(changed) // 2:])
    out = ShiftWeights("auto", calibration).run(model, HW)
    for name in crossbar_weights(model)[1:]:
        same = np.array_equal(out.weights[name], model.weights[name])
        assert same == (name in choice.kept), name


def weight_changes(model, candidate):
    """The simple statement of `layer_errors`: ||W' - W|| / ||W|| per crossbar weight, from the
    weights of both models, W = m (q - z) per output channel."""
    def real_rows(m, layer):
        zp, multiplier, shift = (channel_param(m, layer, p) for p in ("w_zp", "multiplier", "shift"))
        codes = np.asarray(m.weights[layer.weight("weight").name]).reshape(len(zp), -1)
        return (codes - zp[:, None].astype(np.float64)) * (multiplier / 2.0 ** shift)[:, None]

    before = {c.weight("weight").name: c for c in model.graph.layers if OPS[c.op].kind == "mvm"}
    after = {c.weight("weight").name: c for c in candidate.graph.layers if OPS[c.op].kind == "mvm"}
    return {name: float(np.linalg.norm(real_rows(candidate, after[name]) - real_rows(model, layer))
                        / np.linalg.norm(real_rows(model, layer))) for name, layer in before.items()}


@pytest.mark.parametrize("name, weights, center, method", [
    ("resnet50-small", "tensor", 152, "fit"), ("resnet50-small", "tensor", 88, "clip"),
    ("digits-cnn", "channel", 104, "fit"), ("digits-cnn", "channel", 168, "clip")])
def test_layer_errors_from_the_histograms_are_those_of_the_shifted_weights(name, weights, center, method):
    from arasc.passes.shift_weights import layer_errors

    _, inputs = built(name)
    model = Quantize(calibration=(tuple(np.asarray(x) for x in inputs),), weights=weights).run(lowered(name))
    want = weight_changes(model, shifted(model, center, method)[0])
    got = layer_errors(model, center, method)
    assert list(got) == crossbar_weights(model) and got[crossbar_weights(model)[0]] == 0.0
    assert sum(e > 0 for e in want.values()) >= 2     # layers the shift changes, so the check means something
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key


def test_the_plan_reads_each_channels_range_and_mean_off_its_histogram():
    from arasc.passes.shift_weights import _fitting_scales, _plan, channel_histograms

    _, inputs = built("digits-cnn")
    model = Quantize(calibration=(tuple(np.asarray(x) for x in inputs),)).run(lowered("digits-cnn"))
    histograms = channel_histograms(model)
    layer = next(c for c in model.graph.layers if OPS[c.op].kind == "mvm" and c.weight("weight").name ==
                 crossbar_weights(model)[1])
    zp = channel_param(model, layer, "w_zp")
    codes = np.asarray(model.weights[layer.weight("weight").name]).reshape(len(zp), -1).astype(np.int64)
    d, alpha = _plan(model, layer, histograms[layer.weight("weight").name], 104, "fit")
    assert np.array_equal(d, np.clip(104 - np.round(codes.mean(1)).astype(np.int64), -zp, 255 - zp))
    expected = _fitting_scales(codes.min(1) - zp, codes.max(1) - zp, zp + d)
    assert np.array_equal(alpha, np.where(expected < 0.5, 1.0, expected))
