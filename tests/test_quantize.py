"""INT8 quantization: quantized ops against integer references, the fixed-point requantization,
golden IR before/after the pass, round trip, determinism, and fidelity on the zoo."""
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.ir import OPS, Graph, Layer, Model, TensorType, Value, WeightRef, evaluate, parse_graph, print_graph
from arasc.ir.qops import MAX_SHIFT, fixed_point, fixed_points, rounding_shift, shared_fixed_point, softmax_table
from arasc.models.digits import load_digits_split
from arasc.passes import PassError, run_passes
from arasc.passes.quantize import Quantize, QuantizeError
from arasc.passes.shift_weights import ShiftWeights

from conftest import built, lowered

ZOO_SMALL = ["vgg16-small", "resnet50-small", "densenet161-small", "bert-base-small", "bert-large-small"]
MIN_COSINE = 0.99


def run_op(name, inputs, attrs, weights=None):
    """Run a quantized op on real tensors, checking the verifier's meta-tensor inference agrees."""
    opdef = OPS[name]
    attrs, weights = {**opdef.defaults, **attrs}, weights or {}
    out = opdef.fn(inputs, attrs, weights)
    meta = lambda t: torch.empty(t.shape, dtype=t.dtype, device="meta")  # noqa: E731
    inferred = opdef.fn([meta(t) for t in inputs], attrs, {k: meta(v) for k, v in weights.items()})
    assert (inferred.shape, inferred.dtype) == (out.shape, out.dtype)
    return out


def u8(rng, *shape):
    return torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))


def requant_reference(acc: int, multiplier: int, shift: int, out_zp: int, low: int = 0) -> int:
    """The stated rounding on Python integers: out_zp + floor(acc * m / 2^shift + 1/2), saturated."""
    return min(255, max(low, out_zp + math.floor(Fraction(acc * multiplier, 2**shift) + Fraction(1, 2))))


# ---- fixed-point requantization --------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(acc=st.integers(-2**31, 2**31), real=st.floats(2.0**-70, 2.0**29), fits_u8=st.booleans())
def test_fixed_point_requantization_matches_rational_rounding(acc, real, fits_u8):
    if fits_u8:  # the regime of real layers: |acc * real| within a few times the u8 range
        limit = min(2**31, math.ceil(1024 / real))
        acc = acc % (2 * limit + 1) - limit
    multiplier, shift = fixed_point(real)
    assert 1 <= shift <= MAX_SHIFT and multiplier < 2**31
    # full precision, except for degenerate multipliers (below 2^-22), which keep the largest shift
    assert 2**30 <= multiplier or (shift == MAX_SHIFT and real < 2.0**-22)
    got = int(rounding_shift(torch.tensor([acc]), multiplier, shift))
    fixed = Fraction(multiplier, 2**shift)
    # Exactly the stated rounding of the fixed-point product: round half up.
    assert got == math.floor(acc * fixed + Fraction(1, 2))
    # The multiplier is within half a unit of its last bit of the real one (relative 2^-31) ...
    assert abs(fixed - Fraction(real)) <= Fraction(1, 2**(shift + 1))
    # ... so the result is round_half_up(acc * real) unless acc * real lies that close to a tie.
    exact = acc * Fraction(real)
    distance_to_tie = abs(exact - math.floor(exact) - Fraction(1, 2))
    if distance_to_tie > abs(acc) * Fraction(1, 2**(shift + 1)):
        assert got == math.floor(exact + Fraction(1, 2))


@settings(max_examples=200, deadline=None)
@given(reals=st.lists(st.floats(-1e3, 1e3).filter(lambda r: abs(r) > 1e-6), min_size=1, max_size=4))
def test_shared_fixed_point_keeps_sign_and_precision(reals):
    multipliers, shift = shared_fixed_point(reals)
    assert 2**30 <= max(abs(m) for m in multipliers) < 2**31
    for m, r in zip(multipliers, reals, strict=True):
        assert abs(Fraction(m, 2**shift) - Fraction(r)) <= Fraction(1, 2**(shift + 1))


@settings(max_examples=300, deadline=None)
@given(reals=st.lists(st.one_of(st.floats(-2.0**20, 2.0**20).filter(lambda r: r != 0),
                                st.floats(2.0**-80, 2.0**-20),
                                st.integers(1, 2**31).map(lambda m: (2**31 - 0.5 * m / 2**31) / 2**31 * 3.0)),
                      min_size=1, max_size=20),
       bits=st.sampled_from([31, 29, 24]))
def test_fixed_points_are_fixed_point_of_each(reals, bits):
    """The vectorized form (per-channel multipliers) gives what the scalar one gives each entry,
    degenerate multipliers and mantissas that round up to 2^bits included."""
    multipliers, shifts = fixed_points(np.array(reals), bits)
    assert [(int(m), int(s)) for m, s in zip(multipliers, shifts, strict=True)] == [fixed_point(r, bits) for r in reals]


def test_fixed_points_raise_the_scalar_error():
    with pytest.raises(ValueError, match="fixed-point range"):
        fixed_points(np.array([0.5, 2.0**40]))
    with pytest.raises(ValueError, match="nonzero"):
        fixed_points(np.array([0.5, 0.0]))


def test_fixed_point_rejects_multipliers_out_of_range():
    with pytest.raises(ValueError, match="fixed-point range"):
        fixed_point(2.0**40)


def test_a_wide_crossbar_layer_requantizes_inside_int64():
    """The verifier bounds a crossbar layer's requantization by (4 K 255^2 + |bias|) m + 2^(shift+8)
    < 2^63. With K = 25,088 (VGG-16's classifier.0) a 31-bit multiplier passes or not by its
    mantissa, before and after weight-mean shifting's "fit" rescales it; the multipliers of 16
    output channels (one each) are all inside, after both."""
    from arasc.frontend import import_module
    from arasc.passes.shift_weights import channel_param, shifted

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 25088), torch.nn.ReLU(), torch.nn.Linear(25088, 16)).eval()
    calibration = tuple((torch.randn(4, 16).numpy(),) for _ in range(2))
    model = import_module(module, (torch.from_numpy(calibration[0][0]),), "wide")
    quantized = Quantize(calibration=calibration).run(model)
    refitted, _ = shifted(quantized, center=168, method="fit")
    for m in (quantized, refitted):
        layer = next(layer for layer in m.graph.layers if layer.name == "2")
        bias = int(np.abs(np.asarray(m.weights[layer.weight("bias").name], np.int64)).max())
        for multiplier, shift in zip(channel_param(m, layer, "multiplier"), channel_param(m, layer, "shift"), strict=True):
            assert (4 * 25088 * 255 * 255 + bias) * int(multiplier) + (256 << int(shift)) < 2**63, (multiplier, shift)
    assert not np.array_equal(channel_param(refitted, layer, "multiplier"), channel_param(quantized, layer, "multiplier"))


# ---- quantized ops against integer references ------------------------------------------------

@pytest.mark.parametrize("stride, padding, dilation, groups, relu, bias", [
    ((1, 1), (1, 1), (1, 1), 1, False, True),
    ((2, 1), (0, 2), (1, 1), 1, True, False),
    ((1, 1), (2, 2), (2, 2), 2, False, True),
])
def test_qconv2d_matches_integer_reference(stride, padding, dilation, groups, relu, bias):
    rng = np.random.default_rng(0)
    x, w = u8(rng, 1, 4, 6, 5), u8(rng, 6, 4 // groups, 3, 3)
    b = torch.from_numpy(rng.integers(-5000, 5000, 6).astype(np.int32))
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, x_zp=117, w_zp=131, out_zp=90,
                 multiplier=1518500250, shift=40, relu=relu)
    out = run_op("qconv2d", [x], attrs, {"weight": w, "bias": b} if bias else {"weight": w})

    xp = np.pad(x.numpy().astype(np.int64), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2),
                constant_values=117)
    wn = w.numpy().astype(np.int64)
    per_group = 6 // groups
    for o, i, j in itertools.product(range(6), range(out.shape[2]), range(out.shape[3])):
        g = o // per_group
        window = xp[0, g * (4 // groups):(g + 1) * (4 // groups),
                    i * stride[0]:i * stride[0] + 2 * dilation[0] + 1:dilation[0],
                    j * stride[1]:j * stride[1] + 2 * dilation[1] + 1:dilation[1]]
        acc = int(((window - 117) * (wn[o] - 131)).sum()) + (int(b[o]) if bias else 0)
        assert int(out[0, o, i, j]) == requant_reference(acc, 1518500250, 40, 90, 90 if relu else 0)


def test_qlinear_and_qmatmul_match_integer_reference():
    rng = np.random.default_rng(1)
    x, w, b = u8(rng, 2, 3, 7), u8(rng, 5, 7), torch.from_numpy(rng.integers(-900, 900, 5).astype(np.int32))
    out = run_op("qlinear", [x], dict(x_zp=3, w_zp=200, out_zp=128, multiplier=1 << 30, shift=37),
                 {"weight": w, "bias": b})
    acc = (x.numpy().astype(np.int64) - 3) @ (w.numpy().astype(np.int64) - 200).T + b.numpy()
    expect = [requant_reference(int(v), 1 << 30, 37, 128) for v in acc.flat]
    assert out.flatten().tolist() == expect

    left, right = u8(rng, 2, 4, 7), u8(rng, 2, 7, 3)
    out = run_op("qmatmul", [left, right], dict(a_zp=0, b_zp=140, out_zp=10, multiplier=1234567890, shift=45))
    acc = left.numpy().astype(np.int64) @ (right.numpy().astype(np.int64) - 140)
    assert out.flatten().tolist() == [requant_reference(int(v), 1234567890, 45, 10) for v in acc.flat]


def test_qadd_qmul_qconcat_match_integer_reference():
    rng = np.random.default_rng(2)
    a, b = u8(rng, 2, 3, 4), u8(rng, 1, 3, 1)
    multipliers, shift = shared_fixed_point([0.7, -0.3])
    out = run_op("qadd", [a, b], dict(zps=(100, 7), multipliers=multipliers, shift=shift, out_zp=60, relu=True))
    acc = (a.numpy().astype(np.int64) - 100) * multipliers[0] + (b.numpy().astype(np.int64) - 7) * multipliers[1]
    assert out.flatten().tolist() == [requant_reference(int(v), 1, shift, 60, 60) for v in acc.flat]

    out = run_op("qmul", [a, b], dict(zps=(100, 7), multiplier=1 << 30, shift=38, out_zp=128))
    acc = (a.numpy().astype(np.int64) - 100) * (b.numpy().astype(np.int64) - 7)
    assert out.flatten().tolist() == [requant_reference(int(v), 1 << 30, 38, 128) for v in acc.flat]

    c = u8(rng, 2, 2, 4)
    multipliers, shift = shared_fixed_point([1.0, 0.5])
    out = run_op("qconcat", [a, c], dict(dim=1, zps=(100, 20), multipliers=multipliers, shift=shift, out_zp=100))
    assert torch.equal(out[:, :3], a)   # same scale and zero point: identity
    expect = [requant_reference(int(v) - 20, multipliers[1], shift, 100) for v in c.flatten()]
    assert out[:, 3:].flatten().tolist() == expect


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode, count_include_pad", [
    ((2, 2), (2, 2), (0, 0), False, True),
    ((3, 3), (2, 2), (1, 1), True, True),
    ((3, 2), (2, 1), (1, 1), True, False),
])
def test_qavgpool2d_is_the_rounded_float_average(kernel, stride, padding, ceil_mode, count_include_pad):
    x = u8(np.random.default_rng(3), 1, 2, 7, 6)
    zp = 77
    out = run_op("qavgpool2d", [x], dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                                         count_include_pad=count_include_pad, zp=zp))
    mean = F.avg_pool2d(x.double() - zp, kernel, stride, padding, ceil_mode, count_include_pad)
    # Averages of small integers: ties are exact halves, rounded up; nothing else is near one.
    assert torch.equal(out.long(), (torch.floor(mean + 0.5 + 1e-9) + zp).long())


def test_qadaptive_avgpool2d_and_qmean():
    x = u8(np.random.default_rng(4), 1, 3, 7, 5)
    out = run_op("qadaptive_avgpool2d", [x], dict(output_size=(3, 2)))
    assert torch.equal(out.long(), torch.floor(F.adaptive_avg_pool2d(x.double(), (3, 2)) + 0.5 + 1e-9).long())
    out = run_op("qmean", [x], dict(dims=(2, 3), keepdim=False))
    assert torch.equal(out.long(), torch.floor(x.double().mean((2, 3)) + 0.5 + 1e-9).long())


def test_qlut_global_and_per_channel():
    rng = np.random.default_rng(5)
    x, table = u8(rng, 2, 3, 4), u8(rng, 256)
    assert torch.equal(run_op("qlut", [x], {}, {"table": table}), table[x.long()])
    tables = u8(rng, 3, 256)
    out = run_op("qlut", [x], {}, {"table": tables})
    for c in range(3):
        assert torch.equal(out[:, c], tables[c][x[:, c].long()])


def test_qrelu_clamps_at_zero_point():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(run_op("qrelu", [x], {"zp": 90}), x.clamp_min(90))


def test_qsoftmax_is_within_one_step_of_float_softmax():
    rng = np.random.default_rng(6)
    x, x_scale, out_scale = u8(rng, 2, 4, 9), 0.05, 1 / 255
    multiplier, shift = fixed_point(2.0**-31 / out_scale)
    out = run_op("qsoftmax", [x], dict(dim=2, out_zp=0, multiplier=multiplier, shift=shift),
                 {"table": softmax_table(x_scale)})
    expect = torch.softmax((x.double() - 128) * x_scale, dim=2)
    assert (out.double() * out_scale - expect).abs().max() <= out_scale


def test_qlayernorm_is_within_one_step_of_float_layernorm():
    rng = np.random.default_rng(7)
    x = u8(rng, 2, 5, 16)
    gamma, beta = torch.linspace(0.5, 1.5, 16), torch.linspace(-0.2, 0.2, 16)
    attrs = dict(ndim=1, eps=1e-5, x_scale=0.03, x_zp=120, out_scale=0.02, out_zp=128)
    out = run_op("qlayernorm", [x], attrs, {"weight": gamma, "bias": beta})
    expect = F.layer_norm((x.double() - 120) * 0.03, (16,), gamma.double(), beta.double(), 1e-5)
    expect = expect.clamp(-128 * 0.02, 127 * 0.02)  # what u8 at this scale can hold
    assert ((out.double() - 128) * 0.02 - expect).abs().max() <= 0.5 * 0.02 + 1e-9


def test_quantize_and_dequantize_round_trip_the_grid():
    codes = torch.arange(256, dtype=torch.uint8)
    real = run_op("dequantize", [codes], dict(scale=0.0625, zp=100))
    assert torch.equal(run_op("quantize", [real], dict(scale=0.0625, zp=100)), codes)
    assert run_op("quantize", [torch.tensor([1e9, -1e9, 0.03125])], dict(scale=0.0625, zp=100)).tolist() == \
        [255, 0, 100]  # saturates; 0.5 rounds half to even


# ---- the pass on a tiny graph: golden IR before and after ------------------------------------

def f32(*shape):
    return TensorType("f32", shape)


def tiny_model():
    """Weights and input on a dyadic grid, so every float result and range is exact on any machine."""
    conv = Layer("conv", "conv2d", ("x",), f32(1, 3, 4, 4),
                 {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1},
                 {"weight": WeightRef("conv.weight", f32(3, 2, 3, 3)), "bias": WeightRef("conv.bias", f32(3))})
    relu = Layer("relu", "relu", ("conv",), f32(1, 3, 4, 4))
    pool = Layer("pool", "adaptive_avgpool2d", ("relu",), f32(1, 3, 1, 1), {"output_size": (1, 1)})
    flat = Layer("flat", "reshape", ("pool",), f32(1, 3), {"shape": (1, 3)})
    fc = Layer("fc", "linear", ("flat",), f32(1, 2), weights={"weight": WeightRef("fc.weight", f32(2, 3)),
                                                              "bias": WeightRef("fc.bias", f32(2))})
    half = Layer("half", "mul", ("fc",), f32(1, 2), {"scalar": 0.5})
    graph = Graph("tiny", (Value("x", f32(1, 2, 4, 4)),), (conv, relu, pool, flat, fc, half), ("half",))
    grid = lambda n, step: np.arange(n, dtype=np.float32) % 9 * step - 4 * step  # noqa: E731
    weights = {"conv.weight": grid(54, 0.25).reshape(3, 2, 3, 3), "conv.bias": np.array([0.5, -1, 0], np.float32),
               "fc.weight": np.array([[1, -1, 0.5], [-0.5, 0.25, 1]], np.float32),
               "fc.bias": np.array([0.25, -0.25], np.float32)}
    return Model(graph, weights), (grid(32, 0.125).reshape(1, 2, 4, 4),)


TINY_BEFORE = '''graph tiny
  input %x : f32[1,2,4,4]
  %conv = conv2d(%x) {dilation=[1, 1], groups=1, padding=[1, 1], stride=[1, 1]} [bias=@conv.bias : f32[3], weight=@conv.weight : f32[3,2,3,3]] : f32[1,3,4,4]
  %relu = relu(%conv) : f32[1,3,4,4]
  %pool = adaptive_avgpool2d(%relu) {output_size=[1, 1]} : f32[1,3,1,1]
  %flat = reshape(%pool) {shape=[1, 3]} : f32[1,3]
  %fc = linear(%flat) [bias=@fc.bias : f32[2], weight=@fc.weight : f32[2,3]] : f32[1,2]
  %half = mul(%fc) {scalar=0.5} : f32[1,2]
  output %half
end
'''

def by_hand_qparams(low, high):
    """docs/quantization.md: uint8 covering [low, high] widened to include 0; real = scale (q - zp)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255
    return scale, round(-low / scale)


def by_hand_q31(real):
    """(m, shift) with m * 2^-shift = real to 31 significant bits: the least shift with m >= 2^30."""
    shift = 0
    while real * 2**shift < 2**30:
        shift += 1
    return round(real * 2**shift), shift


def tiny_after_by_hand():
    """The quantized tiny model's IR, derived from the float model run in PyTorch eager (not through
    arasc's evaluator) and the rules of docs/quantization.md: min/max ranges, per-tensor weights,
    relu fused into the conv (output zero point 0), requantization multiplier s_x s_w / s_out."""
    model, (x,) = tiny_model()
    w = {name: torch.from_numpy(array) for name, array in model.weights.items()}
    conv = torch.relu(F.conv2d(torch.from_numpy(x), w["conv.weight"], w["conv.bias"], padding=1))
    pool = conv.mean(dim=(2, 3))
    fc = F.linear(pool, w["fc.weight"], w["fc.bias"])
    half = fc * 0.5
    s_x, z_x = by_hand_qparams(float(x.min()), float(x.max()))
    s_cw, z_cw = by_hand_qparams(-1.0, 1.0)     # the conv weights are the grid -1 .. 1 in steps of 1/4
    s_conv, z_conv = by_hand_qparams(0.0, float(conv.max()))
    s_fw, z_fw = by_hand_qparams(-1.0, 1.0)     # fc.weight spans -1 .. 1 as well
    s_fc, z_fc = by_hand_qparams(float(fc.min()), float(fc.max()))
    s_half, z_half = by_hand_qparams(float(half.min()), float(half.max()))
    m_conv, shift_conv = by_hand_q31(s_x * s_cw / s_conv)
    m_fc, shift_fc = by_hand_q31(s_conv * s_fw / s_fc)  # the average pool keeps the conv's scale
    m_half, shift_half = by_hand_q31(0.5 * s_fc / s_half)  # a multiply by a constant is a requantization
    assert (z_x, z_cw, z_conv, z_fw) == (128, 128, 0, 128)  # 127.5 rounds half to even
    text = f"""graph tiny
  input %x : f32[1,2,4,4]
  %x.q = quantize(%x) {{scale={s_x!r}, zp={z_x}}} : u8[1,2,4,4]
  %conv = qconv2d(%x.q) {{dilation=[1, 1], groups=1, multiplier={m_conv}, out_zp={z_conv}, padding=[1, 1], relu=true, shift={shift_conv}, stride=[1, 1], w_zp={z_cw}, x_zp={z_x}}} [bias=@conv.bias : i32[3], weight=@conv.weight : u8[3,2,3,3]] : u8[1,3,4,4]
  %pool = qadaptive_avgpool2d(%conv) {{output_size=[1, 1]}} : u8[1,3,1,1]
  %flat = reshape(%pool) {{shape=[1, 3]}} : u8[1,3]
  %fc = qlinear(%flat) {{multiplier={m_fc}, out_zp={z_fc}, shift={shift_fc}, w_zp={z_fw}, x_zp={z_conv}}} [bias=@fc.bias : i32[2], weight=@fc.weight : u8[2,3]] : u8[1,2]
  %half = qrequant(%fc) {{multiplier={m_half}, out_zp={z_half}, shift={shift_half}, x_zp={z_fc}}} : u8[1,2]
  %half.dq = dequantize(%half) {{scale={s_half!r}, zp={z_half}}} : f32[1,2]
  output %half.dq
end
"""
    fc_codes = [[min(255, max(0, round(v / s_fw) + z_fw)) for v in row] for row in model.weights["fc.weight"].tolist()]
    fc_bias = [round(b / (s_conv * s_fw)) for b in model.weights["fc.bias"].tolist()]
    return text, fc_codes, fc_bias


PER_TENSOR = {"weights": "tensor", "observer": "minmax", "residual": "u8"}   # the per-layer uint8 scheme


def test_golden_ir_before_and_after_quantize():
    # half = fc * 0.5 keeps fc's codes: multiplier 2^30 / 2^30 = 1 and fc's zero point 56, at
    # half fc's scale, 0.0048177083333333336 / 2.
    model, inputs = tiny_model()
    assert print_graph(model.graph) == TINY_BEFORE
    quantized = Quantize((inputs,), **PER_TENSOR).run(model)
    after, fc_codes, fc_bias = tiny_after_by_hand()
    assert print_graph(quantized.graph) == after
    assert quantized.weights["fc.weight"].tolist() == fc_codes == [[255, 0, 192], [64, 160, 255]]
    assert quantized.weights["fc.bias"].tolist() == fc_bias
    assert parse_graph(after) == quantized.graph
    (expected,), (got,) = evaluate(model, inputs), evaluate(quantized, inputs)
    assert torch.allclose(got, expected, atol=2 * 0.0039)


def test_runs_in_the_pipeline_and_checks_its_options():
    model, inputs = tiny_model()
    assert run_passes(model, None, [Quantize((inputs,))]).graph == Quantize((inputs,)).run(model).graph
    with pytest.raises(PassError, match=r"shift-weights requires \['quantized'\].*\(lower\)"):
        run_passes(model, None, [ShiftWeights(None)])
    with pytest.raises(QuantizeError, match="calibration inputs"):
        Quantize().run(model, None)


def test_unsupported_layer_is_named():
    x = Value("x", f32(2))
    graph = Graph("g", (x,), (Layer("ratio", "div", ("x", "x"), f32(2)),), ("ratio",))
    with pytest.raises(QuantizeError, match=r"%ratio \(div\) divides two activations"):
        Quantize(((np.ones(2, np.float32),),)).run(Model(graph, {}))


# ---- zoo models: round trip, determinism, fidelity ---------------------------------------------

def random_like(x: torch.Tensor, gen: torch.Generator, vocab: int) -> torch.Tensor:
    if x.dtype == torch.int64:
        return torch.randint(0, vocab, x.shape, generator=gen)
    return torch.randn(x.shape, generator=gen)


def zoo_inputs(name, count):
    """The example inputs, then `count` seeded random inputs of the same kind (token ids for BERT)."""
    module, example = built(name)
    vocab = module.config.vocab_size if hasattr(module, "config") else 0
    gen = torch.Generator().manual_seed(1)
    return [tuple(example)] + [tuple(random_like(x, gen, vocab) for x in example) for _ in range(count)]


def quantized(name):
    return Quantize(tuple(zoo_inputs(name, 4))).run(lowered(name))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("name", ZOO_SMALL)
def test_integer_model_tracks_pytorch_float(name):
    module, _ = built(name)
    model = quantized(name)
    held_out = zoo_inputs(name, 5)[-1]  # not among the calibration inputs
    for inputs in (zoo_inputs(name, 0)[0], held_out):
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = evaluate(model, inputs)
        assert all(g.dtype == torch.float32 for g in got)
        cosines = [cosine(g, e) for g, e in zip(got, expected, strict=True)]
        which = "held-out" if inputs is held_out else "example"
        print(f"{name} {which}: cosine {', '.join(f'{c:.5f}' for c in cosines)}")
        assert min(cosines) >= MIN_COSINE, cosines


def test_digits_accuracy_survives_quantization():
    module, (example,) = built("digits-cnn")
    x_train, _, x_test, y_test = load_digits_split()
    batch = example.shape[0]  # the traced graph has a fixed batch
    calibration = tuple((x_train[i:i + batch],) for i in range(0, 128, batch))
    model = Quantize(calibration).run(lowered("digits-cnn"))
    logits = torch.cat([evaluate(model, (x_test[i:i + batch],))[0] for i in range(0, len(x_test), batch)])
    with torch.no_grad():
        float_accuracy = (module(x_test).argmax(1) == y_test).double().mean().item()
    int_accuracy = (logits.argmax(1) == y_test).double().mean().item()
    print(f"digits-cnn test accuracy: float {float_accuracy:.2%}, integer {int_accuracy:.2%}")
    assert float_accuracy > 0.95
    assert abs(int_accuracy - float_accuracy) <= 0.005, (float_accuracy, int_accuracy)


@pytest.mark.parametrize("name", ["bert-base-small", "densenet161-small"])
def test_quantized_zoo_model_round_trips_and_is_deterministic(name):
    first, second = quantized(name), quantized(name)
    text = print_graph(first.graph)
    assert parse_graph(text) == first.graph
    assert text == print_graph(second.graph)
    assert first.weights.keys() == second.weights.keys()
    for key, array in first.weights.items():
        assert array.dtype == second.weights[key].dtype and np.array_equal(array, second.weights[key]), key
    crossbar = [layer for layer in first.graph.layers if OPS[layer.op].kind == "mvm"]
    assert crossbar and all(first.weights[layer.weight("weight").name].dtype == np.uint8 for layer in crossbar)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), channels=st.sampled_from([1, 3, 113, 114, 300]),
       kernel=st.sampled_from([(1, 1), (3, 3), (7, 7), (1, 33)]), groups=st.sampled_from([1, 3]),
       stride=st.sampled_from([(1, 1), (2, 1)]), extreme=st.booleans())
def test_conv_products_in_float32_chunks_equal_the_float64_convolution(seed, channels, kernel, groups, stride,
                                                                      extreme):
    # the second implementation is the plain float64 convolution of the codes, exact below 2^53
    from arasc.ir.qops import _conv_products

    rng = np.random.default_rng(seed)
    values = np.array([0, 255], np.uint8) if extreme else np.arange(256).astype(np.uint8)
    x = torch.from_numpy(rng.choice(values, (1, channels * groups, 9, 40))).to(torch.float32)   # as _qconv2d pads it
    w = torch.from_numpy(rng.choice(values, (2 * groups, channels) + kernel))
    conv = lambda inp, kernel, g: F.conv2d(inp, kernel, None, stride, 0, (1, 1), g)  # noqa: E731
    ones = torch.ones((groups, 1) + kernel, dtype=torch.float64)
    group_sums = x.to(torch.float64).reshape(1, groups, channels, 9, 40).sum(2)
    x_sum = conv(group_sums, ones, groups).to(torch.int64).repeat_interleave(2, dim=1)
    w_sum = w.to(torch.int64).sum((1, 2, 3)).reshape(1, -1, 1, 1)
    want = conv(x.to(torch.float64), w.to(torch.float64), groups).to(torch.int64)
    assert torch.equal(_conv_products(x, w, conv, groups, x_sum, w_sum), want)


def test_conv_products_hold_the_largest_sums_float32_can():
    # Codes 0 centre to -128, so each product is 2^14 and a chunk of 1,024 reaches 2^24, float32's
    # last exact integer; one product of codes 1 (127^2, odd) makes any longer sum inexact.
    from arasc.ir.qops import _conv_products

    for channels in (1024, 1025, 2048 + 7):
        x, w = torch.zeros((1, channels, 2, 2)), torch.zeros((3, channels, 1, 1), dtype=torch.uint8)
        x[:, 0], w[:, 0] = 1, 1
        conv = lambda inp, kernel, g: F.conv2d(inp, kernel, None, (1, 1), 0, (1, 1), g)  # noqa: E731
        ones = torch.ones((1, 3, 2, 2), dtype=torch.int64)   # sum(q_x) per window, sum(q_w) per channel: 1
        assert torch.equal(_conv_products(x, w, conv, 1, ones, ones[:, :, :1, :1]), ones)   # sum(q_x q_w) = 1 x 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), conv=st.booleans(), batch=st.sampled_from([1, 3]), k=st.integers(1, 300),
       n=st.integers(1, 40), extreme=st.booleans(), per_channel=st.booleans(), relu=st.booleans(),
       wide=st.booleans(), bias=st.booleans())
def test_int8_crossbar_layers_equal_their_int64_statement(seed, conv, batch, k, n, extreme, per_channel, relu, wide,
                                                          bias):
    # The second implementation is each op's plain int64 statement (its fallback where torch's
    # int8 GEMM is not exact): products in float64, zero-point terms and requantization in int64.
    from arasc.ir import qops

    rng = np.random.default_rng(seed)
    values = np.array([0, 255], np.uint8) if extreme else np.arange(256).astype(np.uint8)
    if conv:
        channels, kernel = 1 + k % 7, [(1, 1), (3, 3), (2, 5)][k % 3]
        x = torch.from_numpy(rng.choice(values, (batch, channels, 7, 9)))   # wide enough for a dilated 2x5 kernel
        w = {"weight": torch.from_numpy(rng.choice(values, (n, channels) + kernel))}
        attrs = dict(stride=(1 + k % 2, 1), padding=(k % 3, 1), dilation=(1, 1 + k % 2), groups=1)
    else:
        x = torch.from_numpy(rng.choice(values, (batch, 5, k)))
        w = {"weight": torch.from_numpy(rng.choice(values, (n, k)))}
        attrs = {}
    largest = int(rng.integers(0, 1 << 20)) if bias else 0
    if bias:
        w["bias"] = torch.from_numpy(rng.integers(-largest, largest + 1, n).astype(np.int32))
    bits = qops.crossbar_multiplier_bits(math.prod(w["weight"].shape[1:]), largest)
    params = {"w_zp": rng.integers(0, 256, n), "out_zp": rng.integers(0, 256, n),
              "multiplier": rng.integers(1 << (bits - 1), 1 << bits, n), "shift": rng.integers(20, 45, n)}
    for name, value in params.items():
        if per_channel:
            w[name] = torch.from_numpy(value.astype(np.int32))
        else:
            attrs[name] = int(value[0])
    attrs.update(x_zp=int(rng.choice(values)), relu=relu, wide=wide)
    op = "qconv2d" if conv else "qlinear"
    fast = run_op(op, [x], attrs, w)
    assert qops._int8_products_apply(x, w["weight"], 1)   # the test ran the int8 path
    original = qops._int8_products_apply
    try:
        qops._int8_products_apply = lambda *args: False
        reference = run_op(op, [x], attrs, w)
    finally:
        qops._int8_products_apply = original
    assert fast.dtype == reference.dtype and torch.equal(fast, reference)


@pytest.mark.parametrize("wide", [False, True])
def test_quantize_array_is_the_plain_formula(wide):
    """quantize_array works in place on one float64 temporary; its codes are the plain statement's:
    round_half_even(x / scale) + zp, saturated, for float32 and float64 input, per-tensor and
    per-channel parameters (rows or last dimension)."""
    from arasc.passes.calibrate import QParams, quantize_array

    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 40)) * 50
    x[0, :4] = [0.5, 1.5, 2.5, -0.5]     # ties: half to even
    lo, hi, dtype = (-(1 << 15), (1 << 15) - 1, np.int16) if wide else (0, 255, np.uint8)
    for params in (QParams(1.0, 0 if wide else 3, wide), QParams(0.7, 0 if wide else 128, wide),
                   QParams(rng.uniform(0.1, 2, 40), np.zeros(40, np.int64) if wide else rng.integers(0, 256, 40), wide),
                   QParams(rng.uniform(0.1, 2, (6, 1)), np.zeros((6, 1), np.int64) if wide else rng.integers(0, 256, (6, 1)),
                           wide)):
        for array in (x, x.astype(np.float32)):
            want = np.clip(np.round(array.astype(np.float64) / params.scale) + params.zp, lo, hi).astype(dtype)
            got = quantize_array(array, params)
            assert got.dtype == dtype and np.array_equal(got, want)
