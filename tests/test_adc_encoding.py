"""Differential cell pairs and RAELLA's Center+Offset (docs/adc.md): exact with an ideal ADC.

- the cell levels of a differential pair hold q - 128, and from_cells inverts to_cells;
- the bit-serial emulation over signed slices equals the integer product x (q - 128);
- the clipping shortcut equals every sample emulated, signed ADC range included;
- the center-offset pass leaves the integer reference bit for bit, and puts every filter's
  mean offset within a code of zero;
- a compiled program on aras-differential, with center-offset, run bit-serially with an ideal ADC
  or an ADC too wide to saturate, equals the integer reference bit for bit.
"""
import functools
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.ir import evaluate
from arasc.isa.hardware import bundled_hardware
from arasc.isa.tiling import OFFSET_CENTER, cell_levels, from_cells, slice_levels, to_cells
from arasc.options import CompileOptions
from arasc.passes.center_offset import CenterOffset, channel_centers
from arasc.passes.tile import is_crossbar_layer
from arasc.runtime.crossbar import BitSerial
from arasc.runtime.run import run_file

from conftest import built, lowered

DIFF = bundled_hardware("aras-differential")
ONE_BIT = bundled_hardware("aras-differential-1bit")


def test_differential_pairs_cost_half_the_weights():
    plain = bundled_hardware("aras-default")
    assert (DIFF.cells_per_weight, DIFF.weights_per_row, DIFF.block) == (8, 16, (128, 64))
    assert DIFF.capacity_weights * 2 == plain.capacity_weights
    assert (ONE_BIT.cells_per_weight, ONE_BIT.block, ONE_BIT.capacity_weights * 4) == (16, (128, 32),
                                                                                       plain.capacity_weights)
    assert (DIFF.adc_range, plain.adc_range) == ((-32, 31), (0, 63))


def test_slices_of_every_code_give_its_offset():
    codes = np.arange(256, dtype=np.uint8)[None]
    signed = slice_levels(codes, DIFF).reshape(256, 4).astype(np.int64)
    assert np.array_equal(signed @ (4 ** np.arange(4)), np.arange(256) - OFFSET_CENTER)
    pairs = cell_levels(codes, DIFF).reshape(256, 4, 2)
    assert np.array_equal(pairs[..., 0].astype(int) - pairs[..., 1], signed)
    assert not (pairs[..., 0] & pairs[..., 1]).any()  # a slice sits in one cell of its pair, never both


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 300), n=st.integers(1, 150))
def test_from_cells_inverts_to_cells_on_differential_pairs(seed, k, n):
    matrix = np.random.default_rng(seed).integers(0, 256, (k, n)).astype(np.uint8)
    assert np.array_equal(from_cells(to_cells(matrix, DIFF), k, n, DIFF), matrix)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 128), windows=st.integers(1, 30),
       spread=st.integers(0, 128))
def test_signed_bit_serial_with_an_ideal_adc_is_the_integer_product(seed, rows, windows, spread):
    rng = np.random.default_rng(seed)
    x = np.zeros((windows, 128), np.uint8)
    x[:, :rows] = rng.integers(0, 256, (windows, rows))
    packed = np.clip(OFFSET_CENTER + rng.integers(-spread, spread + 1, (128, 64)), 0, 255).astype(np.uint8)
    got = BitSerial(8, 2, 4, None, signed=True).product(x, slice_levels(packed, DIFF))
    assert np.array_equal(got, x.astype(np.int64) @ (packed.astype(np.int64) - OFFSET_CENTER))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), adc_bits=st.integers(3, 10), rows=st.integers(1, 128),
       windows=st.integers(1, 30), spread=st.integers(0, 128))
def test_signed_clipping_shortcut_equals_every_sample_emulated(seed, adc_bits, rows, windows, spread):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (windows, rows)).astype(np.uint8)
    packed = np.clip(OFFSET_CENTER + rng.integers(-spread, spread + 1, (128, 128)), 0, 255).astype(np.uint8)
    levels = np.hstack([slice_levels(packed[:, :64], DIFF), slice_levels(packed[:, 64:], DIFF)])
    padded = np.zeros((windows, 128), np.uint8)
    padded[:, :rows] = x
    full = BitSerial(8, 2, 4, adc_bits, signed=True)
    want = full.product(padded, levels)
    short = BitSerial(8, 2, 4, adc_bits, signed=True)
    offsets = packed[:rows].astype(np.float32) - OFFSET_CENTER
    got = short.clipping_product(x.astype(np.float32), offsets, levels)
    assert np.array_equal(got.astype(np.int64), want)
    assert (short.clipped, short.samples) == (full.clipped, full.samples)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), low=st.integers(0, 255), high=st.integers(0, 255), zp=st.integers(0, 255))
def test_channel_centers_keep_codes_and_zero_points_in_range(seed, low, high, zp):
    low, high = min(low, high), max(low, high)
    codes = np.random.default_rng(seed).integers(low, high + 1, (3, 50))
    c = channel_centers(codes, np.full(3, zp))
    shifted = codes - c[:, None] + OFFSET_CENTER
    assert shifted.min() >= 0 and shifted.max() <= 255 and (0 <= zp - c + OFFSET_CENTER).all()
    assert (zp - c + OFFSET_CENTER <= 255).all()


def narrowed(model, seed):
    """The model with every crossbar layer's codes squeezed into part of the range, at random
    places per channel (another valid model: per-channel quantization fills the whole range,
    where Center+Offset can only keep the center at 128)."""
    rng = np.random.default_rng(seed)
    weights = dict(model.weights)
    for layer in model.graph.layers:
        if is_crossbar_layer(layer):
            name = layer.weight("weight").name
            codes = np.asarray(weights[name]).astype(np.int64)
            n = len(codes)
            start = rng.integers(0, 128, n).reshape((n,) + (1,) * (codes.ndim - 1))
            weights[name] = (codes // 2 + start).astype(np.uint8)
    return model.replace(weights=weights)


@pytest.mark.parametrize("name", ["digits-cnn", "bert-base-small"])
def test_center_offset_is_exact_and_centers_every_filter(name):
    from arasc.passes import run_passes
    from arasc.passes.quantize import Quantize

    _, inputs = built(name)
    calibration = (tuple(np.asarray(x) for x in inputs),)
    quantized = narrowed(run_passes(lowered(name), DIFF, [Quantize(calibration=calibration)]), 0)
    moved = CenterOffset().run(quantized, DIFF)
    for got, want in zip(evaluate(moved, inputs), evaluate(quantized, inputs), strict=True):
        assert np.array_equal(got.numpy(), want.numpy())
    layers = [layer for layer in moved.graph.layers if is_crossbar_layer(layer)]
    assert layers and all(layer.attr("center_offset") for layer in layers)
    for layer in layers:
        weight = np.asarray(moved.weights[layer.weight("weight").name]).astype(np.int64)
        codes = weight.reshape(len(weight), -1)
        zp = np.broadcast_to(np.asarray(moved.weights[layer.weight("w_zp").name] if layer.weight("w_zp")
                                        else layer.attr("w_zp")).reshape(-1), (len(codes),))
        # each channel's mean offset is within half a code of 0, unless moving it further would push
        # a code or the zero point out of 0..255 (a channel using the whole range cannot move)
        centered_mean = np.abs(codes.mean(1) - OFFSET_CENTER) <= 0.5
        at_a_limit = (codes.max(1) == 255) | (codes.min(1) == 0) | (zp == 0) | (zp == 255)
        assert (centered_mean | at_a_limit).all() and centered_mean.mean() > 0.5


def test_center_offset_refuses_unsigned_cells(tmp_path, capsys):
    from arasc.cli import main

    with pytest.raises(ValueError, match="differential cell pairs"):
        CenterOffset().run(lowered("digits-cnn"), bundled_hardware("aras-default"))
    out = tmp_path / "d.aras"
    assert main(["compile", "digits-cnn", "-o", str(out), "--center-offset", "on", "--quiet"]) == 2
    assert "needs differential cell pairs" in capsys.readouterr().err and not list(tmp_path.iterdir())


@functools.cache
def differential_program(name, hw_name="aras-differential"):
    module, inputs = built(name)
    path = f"{tempfile.mkdtemp(prefix='arasc-adc-')}/{name}.aras"
    options = CompileOptions(center_offset="on")
    result = compile_model(lowered(name), bundled_hardware(hw_name), [inputs], inputs, weights_name(path), options)
    write_compiled(result, path)
    return result, path


@pytest.mark.parametrize("name, hw_name", [("digits-cnn", "aras-differential"), ("bert-base-small", "aras-differential"),
                                            ("digits-cnn", "aras-differential-1bit")])
def test_differential_program_equals_the_reference_bit_for_bit(name, hw_name):
    result, path = differential_program(name, hw_name)
    _, inputs = built(name)
    assert "center_offset=true" in result.text
    reference = [t.numpy() for t in evaluate(result.model, inputs)]
    runs = {"exact": run_file(path), "exhaustive": run_file(path, bit_serial=True),
            "wide ADC": run_file(path, adc_bits=16)}
    assert runs["wide ADC"].machine.bit_serial.clipped == 0
    for how, run in runs.items():
        for got, want in zip(run.outputs.values(), reference, strict=True):
            assert np.array_equal(got, want), how


def test_differential_finite_adc_shortcut_equals_every_sample_emulated():
    _, path = differential_program("digits-cnn")
    short, full = run_file(path, adc_bits=4), run_file(path, adc_bits=4, bit_serial=True)
    for got, want in zip(short.outputs.values(), full.outputs.values(), strict=True):
        assert np.array_equal(got, want)
    counts = [(r.machine.bit_serial.clipped, r.machine.bit_serial.samples) for r in (short, full)]
    assert counts[0] == counts[1] and counts[0][0] > 0


@pytest.mark.parametrize("hw_name", ["aras-differential", "aras-differential-1bit"])
def test_differential_writes_count_both_cells_of_a_pair(hw_name):
    result, path = differential_program("digits-cnn", hw_name)
    hw = bundled_hardware(hw_name)
    writes = run_file(path).machine.writes
    weights = [np.asarray(result.model.weights[layer.weight("weight").name])
               for layer in result.model.graph.layers if is_crossbar_layer(layer)]
    assert writes.cells_written + writes.cells_skipped == sum(w.size for w in weights) * hw.cells_per_weight
    # into empty cells (code 0: offset -128, the negative cell of the top slice at its top level) each
    # written cell moves by at most its top level, and each weight of code 128 writes nothing
    top = (1 << hw.crossbar.cell_bits) - 1
    assert writes.cells_written <= writes.pulses <= 2 * top * writes.cells_written
