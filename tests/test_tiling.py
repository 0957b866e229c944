"""Crossbar tiling: the weight -> block -> crossbar -> cell map (isa/tiling.py) and the tile pass."""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.ir import (
    Graph,
    Layer,
    Model,
    TensorType,
    Value,
    VerifyError,
    WeightRef,
    evaluate,
    parse_graph,
    print_graph,
    verify_graph,
    verify_model,
)
from arasc.isa.hardware import default_hardware, dumps_hardware, loads_hardware
from arasc.isa.tiling import UNUSED, block_grid, from_cells, layer_cells, locate, to_cells, weight_matrix
from arasc.passes import run_passes
from arasc.passes.tile import Tile, block_counts, summarize_tiling

from conftest import SMALL_MODELS, built, lowered

HW = default_hardware()
# A chip with other sizes everywhere (64-row crossbars of 64 cells, 4-bit cells, 2 APUs a row,
# 3 APU rows), so a constant 128, 32, 4 or 576 hidden in the code would fail the tests.
ODD_HW = loads_hardware(dumps_hardware(dataclasses.replace(
    HW, chip=dataclasses.replace(HW.chip, pes=1, apu_rows_per_pe=3, apus_per_row=2),
    crossbar=dataclasses.replace(HW.crossbar, rows=64, cols_cells=64, cell_bits=4))))


def f32(*shape):
    return TensorType("f32", shape)


# ---- the cell map -------------------------------------------------------------------------------

def check_cells(matrix, levels, hw):
    """Every weight in exactly its 4 cells (cell t = bits 2t+1:2t), no cell used twice, the
    rest UNUSED, and from_cells inverts to_cells."""
    k, n = matrix.shape
    cpw, bits = hw.cells_per_weight, hw.crossbar.cell_bits
    r, c = np.meshgrid(np.arange(k), np.arange(n), indexing="ij")
    block, xbar, row, first = locate(r, c, k, hw)
    uses = np.zeros(levels.shape, np.int64)
    for t in range(cpw):
        np.add.at(uses, (block, xbar, row, first + t), 1)
        assert np.array_equal(levels[block, xbar, row, first + t], (matrix >> (bits * t)) & ((1 << bits) - 1))
    assert uses.max() == 1 and uses.sum() == k * n * cpw
    assert np.array_equal(levels == UNUSED, uses == 0)
    assert np.array_equal(from_cells(levels, k, n, hw), matrix)


edge = st.sampled_from([1, 31, 32, 33, 127, 128, 129, 255, 256, 257])
dim = st.one_of(st.integers(1, 300), edge)


@settings(max_examples=60, deadline=None)
@given(k=dim, n=dim, hw=st.sampled_from([HW, ODD_HW]), seed=st.integers(0, 2**32 - 1))
def test_linear_weights_land_in_exactly_their_cells(k, n, hw, seed):
    weight = np.random.default_rng(seed).integers(0, 256, (n, k), dtype=np.uint8)  # linear: [N, K]
    (matrix,) = weight_matrix(weight, {})
    assert np.array_equal(matrix, weight.T)
    levels = layer_cells(weight, {}, hw)
    kb, nb = block_grid(k, n, hw)
    assert levels.shape == (kb * nb, hw.chip.apus_per_row, hw.crossbar.rows, hw.crossbar.cols_cells)
    assert levels.dtype == np.uint8
    check_cells(matrix, levels, hw)


@st.composite
def conv_shapes(draw):
    """(Cout, Cin/groups, kh, kw, groups), groups dividing both channel counts."""
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    per_group_out = draw(st.one_of(st.integers(1, 300 // groups), st.sampled_from([32, 64, 128, 129])))
    return (groups * per_group_out, draw(st.integers(1, 48 // groups)), draw(st.integers(1, 5)),
            draw(st.integers(1, 5)), groups)


@settings(max_examples=40, deadline=None)
@given(shape=conv_shapes(), hw=st.sampled_from([HW, ODD_HW]), seed=st.integers(0, 2**32 - 1))
def test_conv_weights_land_in_exactly_their_cells(shape, hw, seed):
    *wshape, groups = shape
    weight = np.random.default_rng(seed).integers(0, 256, wshape, dtype=np.uint8)
    matrices = weight_matrix(weight, {"groups": groups})
    cout, per_group = wshape[0], wshape[0] // groups
    assert len(matrices) == groups
    for n in range(cout):  # column n of its group's matrix is kernel n unrolled (cin, kh, kw)
        assert np.array_equal(matrices[n // per_group][:, n % per_group], weight[n].reshape(-1))
    levels = layer_cells(weight, {"groups": groups}, hw)
    per_matrix = len(levels) // groups
    for g, matrix in enumerate(matrices):  # groups follow each other, each tiled on its own
        check_cells(matrix, levels[g * per_matrix:(g + 1) * per_matrix], hw)


def test_worked_example_of_docs():
    # docs/tiling.md: weight (130, 170) of a 300 x 200 matrix, value 0b10_01_11_00 = 156.
    assert block_grid(300, 200, HW) == (3, 2)
    assert locate(130, 170, 300, HW) == (4, 1, 2, 40)  # block (1, 1) = 1*3 + 1; column 42 = crossbar 1, weight 10
    matrix = np.zeros((300, 200), np.uint8)
    matrix[130, 170] = 156
    levels = to_cells(matrix, HW)
    assert levels[4, 1, 2, 40:44].tolist() == [0, 3, 1, 2]
    assert levels[5, 0, 0, 0] == 0 and levels[5, 0, 44, 0] == UNUSED  # block (2, 1) holds rows 256..299
    assert levels[3, 2, 0, 4 * 8 - 1] == 0 and levels[3, 2, 0, 4 * 8] == UNUSED  # columns 128..199: 72 = 2*32 + 8


def test_to_cells_rejects_what_is_not_a_quantized_matrix():
    with pytest.raises(TypeError, match="quantize first"):
        to_cells(np.zeros((4, 4), np.float32), HW)
    with pytest.raises(ValueError, match="8-bit"):
        to_cells(np.full((4, 4), 256, np.uint16), HW)


def test_from_cells_rejects_a_broken_map():
    levels = to_cells(np.full((10, 10), 7, np.uint8), HW)
    with pytest.raises(ValueError, match="shape"):
        from_cells(levels, 200, 10, HW)
    broken = levels.copy()
    broken[0, 0, 0, 0] = UNUSED
    with pytest.raises(ValueError, match="level above 3"):
        from_cells(broken, 10, 10, HW)
    broken = levels.copy()
    broken[0, 3, 127, 127] = 0
    with pytest.raises(ValueError, match="not UNUSED"):
        from_cells(broken, 10, 10, HW)


# ---- the pass -----------------------------------------------------------------------------------

def tiny_graph():
    conv = Layer("conv", "conv2d", ("x",), f32(1, 300, 4, 4),
                 {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 2},
                 {"weight": WeightRef("conv.weight", f32(300, 20, 3, 3))})
    relu = Layer("relu", "relu", ("conv",), f32(1, 300, 4, 4))
    flat = Layer("flat", "reshape", ("relu",), f32(1, 4800), {"shape": (1, 4800)})
    fc = Layer("fc", "linear", ("flat",), f32(1, 10),
               weights={"weight": WeightRef("fc.weight", f32(10, 4800)), "bias": WeightRef("fc.bias", f32(10))})
    return Graph("tiny", (Value("x", f32(1, 40, 4, 4)),), (conv, relu, flat, fc), ("fc",))


def tiny_model():
    rng = np.random.default_rng(0)
    return Model(tiny_graph(), {"conv.weight": rng.standard_normal((300, 20, 3, 3), np.float32),
                                "fc.weight": rng.standard_normal((10, 4800), np.float32),
                                "fc.bias": rng.standard_normal(10, dtype=np.float32)})


# conv: 2 groups of K = 20*3*3 = 180, N = 150 -> 2 x 2 blocks each; fc: K = 4800, N = 10 -> 38 x 1.
GOLDEN = '''graph tiny
  input %x : f32[1,40,4,4]
  %conv = conv2d(%x) {apu_rows=8, blocks=[2, 2], dilation=[1, 1], groups=2, k=180, n=150, padding=[1, 1], segments=1, stride=[1, 1]} [weight=@conv.weight : f32[300,20,3,3]] : f32[1,300,4,4]
  %relu = relu(%conv) : f32[1,300,4,4]
  %flat = reshape(%relu) {shape=[1, 4800]} : f32[1,4800]
  %fc = linear(%flat) {apu_rows=38, blocks=[38, 1], k=4800, n=10, segments=1} [bias=@fc.bias : f32[10], weight=@fc.weight : f32[10,4800]] : f32[1,10]
  output %fc
end
'''


def test_golden_ir_after_tile():
    model = tiny_model()
    tiled = Tile().run(model, None)
    assert print_graph(tiled.graph) == GOLDEN
    assert parse_graph(GOLDEN) == tiled.graph
    verify_model(tiled)
    assert tiled.weights == model.weights
    x = np.random.default_rng(1).standard_normal((1, 40, 4, 4), dtype=np.float32)
    assert np.array_equal(evaluate(tiled, [x])[0], evaluate(model, [x])[0])


def test_tile_follows_the_hardware_and_reruns_cleanly():
    tiled = Tile().run(Tile().run(tiny_model(), HW), ODD_HW)
    # 64 x 64 blocks and 3 APU rows: conv 2 x (3 x 3) blocks, fc 75 x 1 in 25 segments.
    assert tiled.graph.layer("conv").attr("apu_rows") == 18
    assert dict(tiled.graph.layer("fc").attrs) == {"apu_rows": 75, "blocks": (75, 1), "k": 4800, "n": 10,
                                                   "segments": 25}
    assert print_graph(Tile().run(tiled, HW).graph) == GOLDEN


def test_tile_attrs_are_allowed_on_crossbar_layers_only():
    graph = tiny_graph()
    relu = dataclasses.replace(graph.layers[1], attrs={"apu_rows": 1})
    with pytest.raises(VerifyError, match=r"unknown attributes \['apu_rows'\]"):
        verify_graph(dataclasses.replace(graph, layers=(graph.layers[0], relu) + graph.layers[2:]))


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_zoo_models(name):
    model = lowered(name)
    tiled = run_passes(model, HW, [Tile()])
    for before, after in zip(model.graph.layers, tiled.graph.layers, strict=True):
        if before.op not in ("conv2d", "linear"):
            assert after == before
            continue
        cout, *kernel = before.weight("weight").type.shape
        groups = before.attr("groups", 1)
        k, n = math.prod(kernel), cout // groups
        blocks = groups * math.ceil(k / 128) * math.ceil(n / 128)
        assert after.attr("apu_rows") == blocks and after.attr("segments") == math.ceil(blocks / 576)
        assert (after.attr("k"), after.attr("n")) == (k, n)
    _, inputs = built(name)
    expected = evaluate(model, [x.numpy() for x in inputs])
    assert all(np.array_equal(a, b) for a, b in zip(evaluate(tiled, [x.numpy() for x in inputs]), expected, strict=True))


# ---- whole-model figures, from weight shapes alone ------------------------------------------------

def conv(name, cin, cout, kernel, size, groups=1):
    return Layer(name, "conv2d", ("x",), f32(1, cout, size, size),
                 {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": groups},
                 {"weight": WeightRef(name + ".weight", f32(cout, cin // groups, kernel, kernel))})


def linear(name, k, n, tokens=None):
    out = f32(1, tokens, n) if tokens else f32(1, n)
    return Layer(name, "linear", ("x",), out, weights={"weight": WeightRef(name + ".weight", f32(n, k))})


def shapes_only(name, layers):
    """A model of weight shapes and output types only: the tiling figures read nothing else."""
    return Model(Graph(name, (Value("x", f32(1)),), tuple(layers), (layers[-1].name,)))


def vgg16():
    channels = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56),
                (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28), (512, 512, 14), (512, 512, 14),
                (512, 512, 14)]
    convs = [conv(f"conv{i}", cin, cout, 3, size) for i, (cin, cout, size) in enumerate(channels)]
    return shapes_only("vgg16", convs + [linear("fc6", 25088, 4096), linear("fc7", 4096, 4096),
                                         linear("fc8", 4096, 1000)])


def bert_base():
    per_layer = [linear(f"l{i}.{p}", 768, 768, 128) for i in range(12) for p in "qkvo"]
    per_layer += [linear(f"l{i}.ffn{j}", *dims, 128) for i in range(12)
                  for j, dims in enumerate([(768, 3072), (3072, 768)])]
    return shapes_only("bert-base", per_layer + [linear("pooler", 768, 768)])


def test_vgg16_by_hand():
    # convs: 1+5+5+9+18+36+36+72+144+144+144+144+144 = 902 blocks; fc6 196 x 32 = 6,272,
    # fc7 32 x 32 = 1,024, fc8 32 x 8 = 256: 8,454 (DESIGN.md: ~8,450).
    model = vgg16()
    counts = block_counts(model, HW)
    assert (counts["conv0"], counts["conv1"], counts["fc6"], counts["fc8"]) == (1, 5, 6272, 256)
    s = summarize_tiling(model, HW)
    assert (s.apu_rows, s.layers, s.weights) == (8454, 16, 138_344_128)
    assert s.segments == 13 + 11 + 2 + 1  # fc6: 6,272 blocks in 11 segments of at most 576; fc7: 2
    assert s.crossbars == 33_804  # conv0 uses 2 of its APU row's 4 crossbars, fc8 32 x 32 = 1,024 of 1,024
    assert s.write_s == pytest.approx(8454 / 576 * 768e-6)  # 11.27 ms: DESIGN.md's ~11.3 ms
    assert s.transfer_s == pytest.approx(138_344_128 / 19.2e9)  # 7.2 ms: the bandwidth does not bind
    assert s.write_bound_s == s.write_s
    windows = 2 * 224**2 + 2 * 112**2 + 3 * 56**2 + 3 * 28**2 + 3 * 14**2 + 11 + 2 + 1
    assert s.compute_s == pytest.approx(windows * 96e-9)  # 13.23 ms: DESIGN.md's ~13.2 ms


def test_bert_base_by_hand():
    # per encoder layer: 4 x 36 (768 x 768) + 2 x 144 (768 x 3072 and back) = 432; 12 layers + pooler 36.
    s = summarize_tiling(bert_base(), HW)
    assert (s.apu_rows, s.segments, s.weights) == (5220, 73, 85_524_480)
    assert s.write_s == pytest.approx(6.96e-3, rel=1e-3)  # DESIGN.md: ~7.0 ms
    assert s.compute_s == pytest.approx((72 * 128 + 1) * 96e-9)  # 0.88 ms: DESIGN.md's ~0.9 ms


def test_summary_rows_print():
    rows = dict(summarize_tiling(vgg16(), HW).rows())
    assert rows["blocks (APU rows)"] == "8,454 (14.7 chips)"
    assert rows["compute, no replication"] == "13.23 ms"
