"""RAELLA's speculative input slicing (runtime/crossbar.py `speculative_product`, docs/adc.md).

- speculation with recovery equals plain bit-serial compute whenever no single-bit sample
  saturates (hypothesis, unsigned and differential cells, every slice width);
- in general it equals a second, direct implementation: per window and input slice, the
  speculative sample where it fits, else the sum of the single-bit samples through the ADC;
- the pass marks every crossbar layer, the program carries it, and the timing model charges
  fewer steps and the recoveries' extra ones.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.isa.hardware import bundled_hardware
from arasc.isa.tiling import OFFSET_CENTER, slice_levels
from arasc.runtime.crossbar import BitSerial

HARDWARE = {name: bundled_hardware(name) for name in ("aras-default", "aras-differential", "aras-differential-1bit")}


def crossbar(seed, hw, rows, windows, spread, sparsity):
    """Random inputs [windows, rows], packed weights [128, 2 blocks] and what both compute with."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (windows, rows)).astype(np.uint8)
    x[rng.random(x.shape) < sparsity] = 0
    cols = hw.block[1]
    packed = np.clip(OFFSET_CENTER + rng.integers(-spread, spread + 1, (128, 2 * cols)), 0, 255).astype(np.uint8)
    levels = np.hstack([slice_levels(packed[:, :cols], hw), slice_levels(packed[:, cols:], hw)])
    center = OFFSET_CENTER if hw.differential else 0
    return x, packed[:rows].astype(np.float32) - center, levels


def emulator(hw, adc_bits):
    return BitSerial(8, hw.crossbar.cell_bits, hw.slices_per_weight, adc_bits, signed=hw.differential)


def direct_speculation(x, levels, hw, adc_bits, slice_bits):
    """Second implementation: every window, step and column spelled out with full matrix products."""
    low, top = emulator(hw, adc_bits).adc_range
    significance = 2.0 ** (hw.crossbar.cell_bits * np.arange(hw.slices_per_weight))
    levels = levels[:x.shape[1]].astype(np.int64)
    codes = x.astype(np.int64)
    total = np.zeros((x.shape[0], levels.shape[1]))
    for first in range(0, 8, slice_bits):
        bits = range(first, min(first + slice_bits, 8))
        value = sum(((codes >> b) & 1) << (b - first) for b in bits)
        speculative = value @ levels
        saturated = (speculative > top) | (speculative < low)
        again = saturated.any(1, keepdims=True) & saturated  # recovery keeps the samples that fitted
        single = sum(np.clip(((codes >> b) & 1) @ levels, low, top) * 2.0 ** b for b in bits)
        total += np.where(again, single, speculative * 2.0 ** first)
    return (total.reshape(len(x), -1, hw.slices_per_weight) @ significance).astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hw_name=st.sampled_from(sorted(HARDWARE)), adc_bits=st.integers(3, 12),
       slice_bits=st.integers(1, 8), rows=st.integers(1, 128), windows=st.integers(1, 20),
       spread=st.integers(0, 128), sparsity=st.floats(0, 0.95))
def test_speculation_equals_bit_serial_when_no_sample_saturates(seed, hw_name, adc_bits, slice_bits, rows, windows,
                                                               spread, sparsity):
    hw = HARDWARE[hw_name]
    x, weights, levels = crossbar(seed, hw, rows, windows, spread, sparsity)
    padded = np.zeros((windows, 128), np.uint8)
    padded[:, :rows] = x
    plain = emulator(hw, adc_bits)
    want = plain.product(padded, levels)
    speculating = emulator(hw, adc_bits)
    got, recovered = speculating.speculative_product(x.astype(np.float32), weights, levels, slice_bits)
    assert np.array_equal(got.astype(np.int64), direct_speculation(x, levels, hw, adc_bits, slice_bits))
    if plain.clipped == 0:
        assert np.array_equal(got.astype(np.int64), want)
        assert speculating.clipped == 0
    if slice_bits == 1:  # one bit a step: the speculative samples are the bit-serial ones
        assert np.array_equal(got.astype(np.int64), want) and speculating.clipped == plain.clipped
    assert recovered.shape == (windows, -(-8 // slice_bits))
    assert speculating.samples >= windows * recovered.shape[1] * levels.shape[1]


def test_speculation_recovers_what_saturates():
    hw = HARDWARE["aras-default"]  # unsigned sums of 4-bit input slices saturate a 6-bit ADC at once
    x, weights, levels = crossbar(0, hw, 128, 8, 128, 0.0)
    spec = emulator(hw, 6)
    got, recovered = spec.speculative_product(x.astype(np.float32), weights, levels, 4)
    assert recovered.all() and spec.recovered > 0
    assert np.array_equal(got.astype(np.int64), direct_speculation(x, levels, hw, 6, 4))


@pytest.mark.parametrize("slice_bits", [2, 4])
def test_input_slicing_fewer_steps_and_charged_recoveries(slice_bits):
    import tempfile

    from arasc.compile import compile_model, weights_name, write_compiled
    from arasc.options import CompileOptions
    from arasc.runtime.run import run_file

    from conftest import built, lowered

    module, inputs = built("digits-cnn")
    hw = HARDWARE["aras-differential-1bit"]
    runs = {}
    for bits in (1, slice_bits):
        path = f"{tempfile.mkdtemp(prefix='arasc-spec-')}/d.aras"
        options = CompileOptions(center_offset="on", input_slice_bits=bits)
        compiled = compile_model(lowered("digits-cnn"), hw, [inputs], inputs, weights_name(path), options)
        write_compiled(compiled, path)
        assert (f"input_slice_bits={bits}" in compiled.text) == (bits != 1)
        runs[bits] = {adc: run_file(path, adc_bits=adc, inferences=1) for adc in (None, 6)}
    ideal_plain, ideal_sliced = runs[1][None].timing, runs[slice_bits][None].timing
    # with an ideal ADC nothing recovers: exactly ceil(8 / s) steps of every crossbar, so as many fewer conversions
    assert ideal_sliced.adc_conversions * 8 == ideal_plain.adc_conversions * -(-8 // slice_bits)
    finite = runs[slice_bits][6]
    assert finite.machine.bit_serial.recovered > 0
    assert finite.timing.adc_conversions > ideal_sliced.adc_conversions  # the recoveries' conversions
    assert finite.timing.energy.adc > ideal_sliced.energy.adc
    for got, want in zip(finite.outputs.values(), runs[1][6].outputs.values(), strict=True):
        assert np.abs(got - want).max() <= np.abs(want).max() * 0.05
