"""The interpreter's fused loops and shortcuts, each against the plain statement it replaces."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from arasc.isa.hardware import default_hardware
from arasc.isa.tiling import cell_levels
from arasc.runtime.crossbar import BitSerial
from arasc.runtime.kernels import column_sums, requantize, write_cells
from arasc.runtime.machine import _write_table
from arasc.runtime.windows import conv_windows

HW = default_hardware()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), adc_bits=st.integers(3, 9), rows=st.integers(1, 128),
       windows=st.integers(1, 40), sparsity=st.floats(0, 0.9))
def test_clipping_shortcut_equals_every_sample_emulated(seed, adc_bits, rows, windows, sparsity):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (windows, rows)).astype(np.uint8)
    x[rng.random(x.shape) < sparsity] = 0
    packed = rng.integers(0, 256, (128, 256)).astype(np.uint8)  # two APU rows side by side
    levels = np.hstack([cell_levels(packed[:, :128], HW), cell_levels(packed[:, 128:], HW)])
    full = BitSerial(8, 2, 4, adc_bits)
    padded = np.zeros((windows, 128), np.uint8)
    padded[:, :rows] = x
    want = full.product(padded, levels)
    short = BitSerial(8, 2, 4, adc_bits)
    got = short.clipping_product(x.astype(np.float32), packed[:rows].astype(np.float32), levels)
    assert np.array_equal(got.astype(np.int64), want)
    assert (short.clipped, short.samples) == (full.clipped, full.samples)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), writes=st.integers(1, 6), partial_block=st.booleans())
def test_write_cells_counts_pulses_as_the_table_says(seed, writes, partial_block):
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (8, 128, 128)).astype(np.uint8)
    contents = rng.integers(0, 256, (5, 128, 128)).astype(np.uint8)
    masks = np.ones(contents.shape, bool)
    if partial_block:
        masks[2, 100:] = False
        masks[2, :, 70:] = False
    partial = ~masks.all((1, 2))
    rows = rng.permutation(8)[:writes]
    blocks = rng.integers(0, 5, writes)
    pulse_table, changed_table = _write_table(HW)
    count = rng.random(writes) < 0.7   # the others are only copied: their counts stay as given
    want_cells, want_pulses, want_changed = cells.copy(), np.full(writes, -1), np.full(writes, -2)
    for b, (row, block) in enumerate(zip(rows, blocks, strict=True)):
        new = np.where(masks[block], contents[block], want_cells[row])
        pair = new.astype(np.int64) << 8 | want_cells[row]
        if count[b]:
            want_pulses[b] = int(pulse_table[pair].sum())
            want_changed[b] = int(changed_table[pair].sum())
        want_cells[row] = new
    pulses, changed = np.full(writes, -1), np.full(writes, -2)
    write_cells(cells, rows.astype(np.int64), contents, blocks.astype(np.int64), masks, partial, pulse_table,
                changed_table, count, pulses, changed)
    assert np.array_equal(pulses, want_pulses) and np.array_equal(changed, want_changed)
    assert np.array_equal(cells, want_cells)


def test_write_table_is_level_distance():
    pulses, changed = (t.reshape(256, 256) for t in _write_table(HW))
    for new, old in [(0, 0), (255, 0), (0b11100100, 0b00011011), (7, 5)]:
        a, b = cell_levels(np.array([new], np.uint8), HW), cell_levels(np.array([old], np.uint8), HW)
        assert pulses[new, old] == int(np.abs(a.astype(int) - b).sum())
        assert changed[new, old] == int((a != b).sum())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), groups=st.integers(1, 3), relu=st.booleans(), wide=st.booleans())
def test_requantize_is_the_integer_formula(seed, groups, relu, wide):
    rng = np.random.default_rng(seed)
    batch, positions, n = 2, 6, 5
    acc = rng.integers(-2**27, 2**27, (groups, n, batch * positions)).astype(np.float64)
    x_sums = rng.integers(0, 2**16, (groups, batch * positions)).astype(np.float64)
    w_zp = rng.integers(-128, 128, (groups, n)).astype(np.float64)
    columns = rng.integers(-2**40, 2**40, (groups, n))
    multiplier = rng.integers(1, 2**20, (groups, n))
    shift = rng.integers(8, 40, (groups, n))
    low, high, dtype = (-2**15, 2**15 - 1, np.int16) if wide else (0, 255, np.uint8)
    floor = rng.integers(low, 128, (groups, n)) if relu else np.full((groups, n), low)
    out = np.empty((batch, groups * n, positions), dtype)
    requantize(acc, x_sums, w_zp, multiplier, columns, shift, floor, high, out)
    # the same formula, element by element in Python integers
    for g in range(groups):
        for c in range(n):
            for w in range(batch * positions):
                q = ((int(acc[g, c, w]) - int(w_zp[g, c]) * int(x_sums[g, w])) * int(multiplier[g, c])
                     + int(columns[g, c])) >> int(shift[g, c])
                b, p = divmod(w, positions)
                assert out[b, g * n + c, p] == min(max(q, int(floor[g, c])), high)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kernel=st.sampled_from([(1, 1), (3, 3), (1, 3), (2, 2)]),
       stride=st.sampled_from([(1, 1), (2, 2), (2, 1)]), padding=st.sampled_from([(0, 0), (1, 1), (2, 0)]),
       dilation=st.sampled_from([(1, 1), (2, 2)]), groups=st.sampled_from([1, 2]))
def test_conv_windows_are_the_sliding_windows(seed, kernel, stride, padding, dilation, groups):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (2, 4, 7, 8)).astype(np.uint8)
    x[0, 0, 0, :4] = (0, 127, 128, 255)   # the ends of the int8 range
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "x_zp": 9}
    mats, (oh, ow) = conv_windows(x, attrs, kernel)
    (ph, pw), (dh, dw), (kh, kw) = padding, dilation, kernel
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=9)
    view = sliding_window_view(padded, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    view = view[:, :, ::stride[0], ::stride[1], ::dh, ::dw]
    assert view.shape[2:4] == (oh, ow)
    per_group = x.shape[1] // groups
    for g, mat in enumerate(mats):
        part = view[:, g * per_group:(g + 1) * per_group].transpose(0, 2, 3, 1, 4, 5)
        assert np.array_equal(mat, part.reshape(2 * oh * ow, per_group * kh * kw).astype(np.float32))
    # as the int8 products take them: the codes less 128, in int8
    centred, _ = conv_windows(x, attrs, kernel, 128, np.int8)
    for g, mat in enumerate(centred):
        part = view[:, g * per_group:(g + 1) * per_group].transpose(0, 2, 3, 1, 4, 5)
        assert mat.dtype == np.int8
        assert np.array_equal(mat, part.reshape(2 * oh * ow, per_group * kh * kw).astype(np.int64) - 128)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 70), k=st.integers(1, 3000), n=st.integers(1, 70),
       extreme=st.booleans())
def test_int8_product_is_the_integer_product(seed, m, k, n, extreme):
    from arasc.runtime.int8 import int8_product

    rng = np.random.default_rng(seed)
    values = np.array([-128, 127], np.int8) if extreme else np.arange(-128, 128).astype(np.int8)
    a, b = rng.choice(values, (m, k)), rng.choice(values, (n, k)).T   # b a transposed view, as the machine passes it
    assert np.array_equal(int8_product(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_the_int8_probe_refuses_a_kernel_that_saturates(monkeypatch):
    import arasc.runtime.int8 as kernels

    def pairs_in_int16(a, b):   # vpmaddubsw without VNNI: pairs of products added in int16, saturating
        products = a.astype(np.int64)[:, :, None] * b.astype(np.int64)[None, :, :]
        pairs = products[:, 0::2] + np.pad(products[:, 1::2], ((0, 0), (0, products.shape[1] % 2), (0, 0)))
        return np.clip(pairs, -2**15, 2**15 - 1).sum(1)

    assert kernels.int8_products_exact()   # on this CPU (VNNI), torch's int8 GEMM is exact
    kernels.int8_products_exact.cache_clear()
    monkeypatch.setattr(kernels, "int8_product", pairs_in_int16)
    try:
        assert not kernels.int8_products_exact()
    finally:
        kernels.int8_products_exact.cache_clear()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 600), windows=st.integers(1, 50),
       dtype=st.sampled_from([np.int8, np.float32]), transposed=st.booleans())
def test_column_sums_are_the_window_sums(seed, k, windows, dtype, transposed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (k, windows))
    codes[0] = -128   # the most negative code in every column
    mat = codes.astype(dtype) if not transposed else np.ascontiguousarray(codes.T.astype(dtype)).T
    out = np.full(windows, 7, np.int64)
    column_sums(mat, out)
    assert np.array_equal(out, codes.sum(0))
