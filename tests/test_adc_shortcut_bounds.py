"""The finite-ADC shortcuts' bounds (runtime/crossbar.py `saturable_columns`) and what they skip.

- the bounds are sound: every sample outside the ADC's range lies in a saturable column and in
  a window the driven-rows bound calls hot (hypothesis; 1-bit signed, 2-bit signed and unsigned
  levels, single bits and wider input slices);
- with them, `clipping_product` equals every sample emulated (`product`), clipped and sampled
  counts included, on 1-bit differential slices;
- `speculative_product` equals a direct implementation with the counts (samples, recovered,
  clipped) and the recovered window slices;
- both, with bitline sums in int8 (torch's GEMM, as the interpreter makes them) and in float32,
  also at the largest sums a 128-row read makes;
- a machine that keeps the shortcuts' operands between inferences computes what every sample
  emulated does, on its second inference too.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.runtime.crossbar import BitSerial, saturable_columns
from arasc.runtime.int8 import int8_products_exact

# the shortcuts' bitline sums in int8 (torch's GEMM, as the interpreter makes them) and in float32
SUMS = [False, True] if int8_products_exact() else [False]

LEVELS = {"1-bit signed": (-1, 1), "2-bit signed": (-3, 3), "2-bit unsigned": (0, 3)}
CELLS = {"1-bit signed": (1, 8, True), "2-bit signed": (2, 4, True), "2-bit unsigned": (2, 4, False)}


def random_read(seed, kind, rows, windows, columns, density, sparsity):
    """Random input codes [windows, rows] and cell levels [rows, columns] of one kind."""
    rng = np.random.default_rng(seed)
    lowest, highest = LEVELS[kind]
    levels = rng.integers(lowest, highest + 1, (rows, columns)).astype(np.int8)
    levels[rng.random(levels.shape) > density] = 0
    x = rng.integers(0, 256, (windows, rows)).astype(np.uint8)
    x[rng.random(x.shape) < sparsity] = 0
    return x, levels


def weights_of(levels, cell_bits, cells):
    """The weights the slices spell: sum_t level_t 2^(cell_bits t)."""
    significance = 2 ** (cell_bits * np.arange(cells))
    return (levels.reshape(len(levels), -1, cells).astype(np.int64) @ significance).astype(np.float32)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(sorted(LEVELS)), adc_bits=st.integers(3, 8),
       slice_bits=st.integers(1, 3), rows=st.integers(1, 128), density=st.floats(0, 1), sparsity=st.floats(0, 0.9))
def test_no_sample_outside_the_bounds_saturates(seed, kind, adc_bits, slice_bits, rows, density, sparsity):
    x, levels = random_read(seed, kind, rows, 40, 24, density, sparsity)
    signed = CELLS[kind][2]
    low, top = BitSerial(8, 1, 1, adc_bits, signed=signed).adc_range
    most_value = (1 << slice_bits) - 1
    columns = saturable_columns(levels, most_value, low, top)
    for first in range(0, 8, slice_bits):
        values = (x.astype(np.int64) >> first) & most_value
        sums = values @ levels.astype(np.int64)
        window, column = np.nonzero((sums > top) | (sums < low))
        assert np.isin(column, columns.index).all()
        driven = values.sum(1)[window]
        assert ((driven * columns.largest > top) | (driven * columns.most_negative < low)).all()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(sorted(LEVELS)), adc_bits=st.integers(3, 8),
       rows=st.integers(1, 128), windows=st.integers(1, 40), density=st.floats(0, 1), sparsity=st.floats(0, 0.9),
       int8=st.sampled_from(SUMS))
def test_clipping_shortcut_equals_every_sample_emulated(seed, kind, adc_bits, rows, windows, density, sparsity, int8):
    cell_bits, cells, signed = CELLS[kind]
    x, levels = random_read(seed, kind, rows, windows, 3 * cells * 5, density, sparsity)
    padded = np.zeros((windows, 128), np.uint8)
    padded[:, :rows] = x
    every = np.zeros((128, levels.shape[1]), np.int8)
    every[:rows] = levels
    full = BitSerial(8, cell_bits, cells, adc_bits, signed=signed)
    want = full.product(padded, every)
    short = BitSerial(8, cell_bits, cells, adc_bits, signed=signed, int8=int8)
    got = short.clipping_product(x.astype(np.float32), weights_of(levels, cell_bits, cells), every)
    assert np.array_equal(got.astype(np.int64), want)
    assert (short.samples, short.clipped) == (full.samples, full.clipped)


def direct_speculation(x, levels, cell_bits, cells, low, top, slice_bits):
    """Second implementation, with the counts: every window, step and column spelled out."""
    codes, levels = x.astype(np.int64), levels.astype(np.int64)
    total = np.zeros((len(x), levels.shape[1]), np.int64)
    samples = clipped = saturated_samples = 0
    recovered = []
    for first in range(0, 8, slice_bits):
        bits = range(first, min(first + slice_bits, 8))
        speculative = sum(((codes >> b) & 1) << (b - first) for b in bits) @ levels
        saturated = (speculative > top) | (speculative < low)
        again = saturated.any(1)
        singles = [((codes >> b) & 1) @ levels for b in bits]
        total += np.where(saturated, sum(np.clip(s, low, top) << b for s, b in zip(singles, bits, strict=True)),
                          speculative << first)
        samples += speculative.size + int(again.sum()) * len(bits) * levels.shape[1]
        saturated_samples += int(saturated.sum())
        clipped += sum(int((((s > top) | (s < low)) & saturated).sum()) for s in singles)
        recovered.append(again)
    product = total.reshape(len(x), -1, cells) @ (2 ** (cell_bits * np.arange(cells)))
    return product, (samples, clipped, saturated_samples), np.stack(recovered, 1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(sorted(LEVELS)), adc_bits=st.integers(3, 8),
       slice_bits=st.integers(2, 4), rows=st.integers(1, 128), windows=st.integers(1, 40), density=st.floats(0, 1),
       sparsity=st.floats(0, 0.9), int8=st.sampled_from(SUMS))
def test_speculation_and_its_counts_equal_a_direct_implementation(seed, kind, adc_bits, slice_bits, rows, windows,
                                                                   density, sparsity, int8):
    cell_bits, cells, signed = CELLS[kind]
    x, levels = random_read(seed, kind, rows, windows, 2 * cells * 5, density, sparsity)
    spec = BitSerial(8, cell_bits, cells, adc_bits, signed=signed, int8=int8)
    low, top = spec.adc_range
    got, recovered = spec.speculative_product(x.astype(np.float32), weights_of(levels, cell_bits, cells), levels,
                                              slice_bits)
    want, counts, want_recovered = direct_speculation(x, levels, cell_bits, cells, low, top, slice_bits)
    assert np.array_equal(got.astype(np.int64), want)
    assert (spec.samples, spec.clipped, spec.recovered) == counts
    assert np.array_equal(recovered, want_recovered)


@pytest.mark.parametrize("int8", SUMS)
@pytest.mark.parametrize("kind", sorted(LEVELS))
def test_shortcuts_at_the_largest_bitline_sums(kind, int8):
    """The largest sums a read makes: all 128 rows driven at their largest value through levels
    all at one end (either sign), or alternating ends, for single bits and input slices of 2-7
    bits (the widest the int8 sums take) and 8 (float32 sums), against every sample emulated
    and the direct speculation."""
    cell_bits, cells, signed = CELLS[kind]
    lowest, highest = LEVELS[kind]
    ends = np.where(np.arange(128) % 2, lowest, highest)
    weight_levels = [np.full(128, highest), np.full(128, lowest), ends, np.zeros(128)]
    levels = np.repeat(np.stack(weight_levels, 1), cells, axis=1).astype(np.int8)   # [128, 4 weights x cells]
    x = np.stack([np.full(128, 255), np.zeros(128), np.where(np.arange(128) % 2, 0, 255),
                  np.where(np.arange(128) % 2, 255, 0), np.full(128, 0b10101010)]).astype(np.uint8)
    weights = weights_of(levels, cell_bits, cells)
    for adc_bits in (3, 6, 8, 12):
        full = BitSerial(8, cell_bits, cells, adc_bits, signed=signed)
        want = full.product(x, levels)
        short = BitSerial(8, cell_bits, cells, adc_bits, signed=signed, int8=int8)
        assert np.array_equal(short.clipping_product(x.astype(np.float32), weights, levels).astype(np.int64), want)
        assert (short.samples, short.clipped) == (full.samples, full.clipped)
        low, top = full.adc_range
        for slice_bits in (2, 3, 4, 7, 8):
            spec = BitSerial(8, cell_bits, cells, adc_bits, signed=signed, int8=int8)
            got, recovered = spec.speculative_product(x.astype(np.float32), weights, levels, slice_bits)
            want, counts, want_recovered = direct_speculation(x, levels, cell_bits, cells, low, top, slice_bits)
            assert np.array_equal(got.astype(np.int64), want)
            assert (spec.samples, spec.clipped, spec.recovered) == counts
            assert np.array_equal(recovered, want_recovered)


def test_kept_operands_compute_what_every_sample_emulated_does():
    """Two inferences on one machine (the second reads the operands kept from the first), with
    the 1-bit differential chip's own 6-bit ADC and a 4-bit one that clips often."""
    from test_adc_encoding import differential_program

    from arasc.runtime.run import run_file

    _, path = differential_program("digits-cnn", "aras-differential-1bit")
    for adc_bits in (4, 6):
        short = run_file(path, inferences=2, adc_bits=adc_bits)
        full = run_file(path, inferences=2, adc_bits=adc_bits, bit_serial=True)
        assert short.machine._reads, "the shortcuts kept no operands"
        for got, want in zip(short.outputs.values(), full.outputs.values(), strict=True):
            assert np.array_equal(got, want)
        counts = [(r.machine.bit_serial.clipped, r.machine.bit_serial.samples) for r in (short, full)]
        assert counts[0] == counts[1]
        assert adc_bits == 6 or counts[0][0] > 0
