"""The quantization schemes for trained networks (docs/quantization.md): per-channel weights,
observers, the int16 residual path with its narrowing, channel-group scales folded into linear
layers, and the per-layer error report. Goldens are derived by hand in the comments."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.compare import compare
from arasc.ir import Graph, Layer, Model, TensorType, Value, WeightRef, evaluate
from arasc.ir.qops import fixed_point
from arasc.passes.calibrate import BINS, Stats, choose_range, grouped_channel_ranges
from arasc.passes.quantize import Quantize
from arasc.runtime.sfu import SFU_OPS

from conftest import lowered

F32 = "f32"


def linear_model(weight, bias, inputs=2):
    w = np.asarray(weight, np.float32)
    graph = Graph("t", (Value("x", TensorType(F32, (1, inputs))),),
                  (Layer("fc", "linear", ("x",), TensorType(F32, (1, w.shape[0])), (),
                         (("weight", WeightRef("fc.w", TensorType(F32, w.shape))),
                          ("bias", WeightRef("fc.b", TensorType(F32, (w.shape[0],)))))),),
                  ("fc",))
    return Model(graph, {"fc.w": w, "fc.b": np.asarray(bias, np.float32)})


def test_per_channel_weights_by_hand():
    # Row 0 spans [-0.5, 1.0]: scale 1.5/255, zp round(0.5 / (1.5/255)) = 85, codes [255, 0].
    # Row 1 spans [0, 0.02] (widened to include 0): scale 0.02/255, zp 0, codes [255, 128]
    # (0.01 / (0.02/255) = 127.5 rounds half to even).
    model = linear_model([[1.0, -0.5], [0.02, 0.01]], [0.0, 0.0])
    x = np.array([[1.0, -1.0]], np.float32)     # calibration: x spans [-1, 1]
    q = Quantize(calibration=((x,),), observer="minmax", residual="u8").run(model)
    fc = q.graph.layer("fc")
    assert q.weights["fc.w"].tolist() == [[255, 0], [255, 128]]
    assert q.weights[fc.weight("w_zp").name].tolist() == [85, 0]
    # x: scale 2/255, zp round(1 / (2/255)) = 128 (127.5 half to even). Output [1.5, 0.01]: the
    # range [0, 1.5] (widened to 0) gives scale 1.5/255. Multiplier of channel c: s_x s_w[c] / s_y.
    s_x, s_y = 2 / 255, 1.5 / 255
    assert fc.attr("x_zp") == 128
    for c, s_w in enumerate((1.5 / 255, float(np.float32(0.02)) / 255)):     # the weights are float32
        m, shift = int(q.weights["fc.multiplier"][c]), int(q.weights["fc.shift"][c])
        assert (m, shift) == fixed_point(s_x * s_w / s_y)


def test_per_tensor_weights_keep_one_zero_point():
    model = linear_model([[1.0, -0.5], [0.02, 0.01]], [0.0, 0.0])
    x = np.array([[1.0, -1.0]], np.float32)
    fc = Quantize(calibration=((x,),), weights="tensor", residual="u8").run(model).graph.layer("fc")
    # one range [-0.5, 1.0] for the whole tensor: zp 85, one multiplier
    assert fc.attr("w_zp") == 85 and fc.weight("w_zp") is None and fc.weight("multiplier") is None


def stats_of(values: np.ndarray) -> Stats:
    s = Stats()
    s.add_range(torch.from_numpy(values))
    s.add_histogram(torch.from_numpy(values))
    return s


def fake_quant_error(values: np.ndarray, low: float, high: float) -> float:
    """Squared error of the uint8 grid on [low, high] over the raw values (not the histogram)."""
    step = (high - low) / 255
    codes = np.clip(np.round((values - low) / step), 0, 255)
    return float(((codes * step + low - values) ** 2).sum())


def test_observers_on_a_long_tail():
    # 10^6 values in [-1, 1] and one at 1000. min/max keeps 1000; the percentile cuts the top
    # 0.01 %, the outlier. Keeping it costs 10^6 x (1001/255)^2 / 12 = 1.28e6 of rounding
    # error, so the squared-error search clips it, and its range does better on the raw values
    # than the other two (the search sees only the histogram).
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(-1, 1, 1_000_000), [1000.0]])
    s = stats_of(values)
    assert choose_range(s, "minmax") == (s.low, 1000.0)
    low, high = choose_range(s, "percentile")
    assert high < 2.0 and low <= -0.9
    mse = choose_range(s, "mse")
    assert mse[1] < 1000.0
    errors = {name: fake_quant_error(values, *choose_range(s, name)) for name in ("mse", "percentile", "minmax")}
    assert errors["mse"] < errors["minmax"] and errors["mse"] < errors["percentile"]


def test_mse_keeps_a_lone_outlier_that_costs_more_clipped():
    # 10^4 values in [-1, 1] and one at 100: keeping it costs 10^4 x (101/255)^2 / 12 = 131 of
    # rounding error; clipping it anywhere below 88 costs more than 12^2: the search keeps it.
    rng = np.random.default_rng(0)
    s = stats_of(np.concatenate([rng.uniform(-1, 1, 10_000), [100.0]]))
    assert choose_range(s, "mse")[1] > 88.0


def test_mse_keeps_a_range_without_outliers():
    # Uniform values: clipping only adds error, so the search keeps the whole range.
    s = stats_of(np.linspace(-3.0, 5.0, 4001))
    assert choose_range(s, "mse") == (s.low, s.high)
    assert s.histogram.sum() == 4001 and len(s.histogram) == BINS


def test_channel_groups_take_their_group_envelope():
    # 8 channels whose ranges grow; 2 groups: the narrower half [0, 4) and the wider half [4, 8).
    s = Stats()
    s.add_range(torch.tensor([[-float(c + 1) for c in range(8)], [float(c + 1) for c in range(8)]]))
    low, high = grouped_channel_ranges(s, 2)
    assert high.tolist() == [4.0] * 4 + [8.0] * 4 and low.tolist() == [-4.0] * 4 + [-8.0] * 4


def residual_encoder():
    """x -> linear -> +x -> layernorm -> linear -> gelu -> linear -> +ln -> output, hidden 16."""
    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.norm = torch.nn.Linear(16, 16), torch.nn.LayerNorm(16)
            self.up, self.down = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)

        def forward(self, x):
            h = self.norm(x + self.proj(x))
            return h + self.down(torch.nn.functional.gelu(self.up(h)))

    module = Block().eval()
    with torch.no_grad():
        module.down.weight[3] *= 40      # an outlier channel in the residual stream, as trained BERTs have
    return module, (torch.randn(1, 8, 16),)


def test_plan_puts_the_residual_stream_in_int16():
    from arasc.frontend import import_module

    module, inputs = residual_encoder()
    model = import_module(module, inputs, "block")
    q = Quantize(calibration=(tuple(x.numpy() for x in inputs),), smooth=0).run(model)
    types = {layer.name: layer.type.dtype for layer in q.graph.layers}
    ops = {layer.name: layer.op for layer in q.graph.layers}
    # By hand: proj feeds the add (int16), the add feeds the norm (int16), the norm feeds the second
    # add (int16) and, narrowed, the up projection; down feeds the second add (int16); the output
    # add is a graph output (int16). up is int16 too: gelu's table reads it through a 12-bit index
    # (up.t, 4,096 entries); gelu's output stays uint8, a crossbar (down) reads it.
    wide = sorted(name for name, dtype in types.items() if dtype == "i16")
    assert wide == sorted(["proj", "add", "norm", "down", "add_1", "up", "up.t"])
    narrowings = [name for name, op in ops.items() if op == "qrequant"]
    assert narrowings == ["norm.n", "up.t"]
    assert q.graph.layer("up").inputs == ("norm.n",) and q.graph.layer("gelu").inputs == ("up.t",)
    assert q.graph.layer("up.t").attr("levels") == 4095
    assert q.graph.layer("norm.n").weight("multiplier") is None          # one scale without smoothing
    assert q.graph.layer("gelu").weight("table").type.shape == (4096,)
    assert types["gelu"] == "u8"
    # With channel groups, the narrowings of norm and up are per channel, and gelu has one
    # 256-entry table per channel instead of the 12-bit index.
    # The default (smoothing, alpha chosen per value) plans the same way as channel groups, given
    # enough calibration rows to choose on (64 tokens per fold here).
    calibration = tuple((torch.randn(1, 8, 16).numpy(),) for _ in range(16))
    for options in ({"channel_groups": 4}, {}):
        grouped = Quantize(calibration=calibration, **options).run(model).graph
        assert grouped.layer("norm.n").weight("multiplier") is not None
        assert grouped.layer("up.n").weight("out_zp") is not None and grouped.layer("gelu").inputs == ("up.n",)
        assert grouped.layer("gelu").weight("table").type.shape == (32, 256)


def test_residual_int16_beats_uint8_on_an_outlier_channel():
    from arasc.frontend import import_module
    from arasc.runtime.report import cosine

    module, inputs = residual_encoder()
    model = import_module(module, inputs, "block")
    calib = tuple((torch.randn(1, 8, 16).numpy(),) for _ in range(8))
    held_out = torch.randn(1, 8, 16)
    want = module(held_out).detach().numpy().ravel()
    scores = {}
    for residual in ("wide", "u8"):
        q = Quantize(calibration=calib, residual=residual).run(model)
        scores[residual] = cosine(want, evaluate(q, (held_out.numpy(),))[0].numpy().ravel())
    assert scores["wide"] > 0.999 and scores["wide"] > scores["u8"]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), per_channel=st.booleans())
def test_qrequant_reference_and_interpreter_agree_with_the_formula(seed, wide, per_channel):
    from arasc.ir import OPS

    rng = np.random.default_rng(seed)
    x = rng.integers(-2**15, 2**15, (2, 3, 5)).astype(np.int16)
    attrs = {"x_zp": int(rng.integers(-50, 50)), "wide": wide}
    weights = {}
    if per_channel:
        weights = {"multiplier": rng.integers(2**30, 2**31, 5).astype(np.int32),
                   "shift": rng.integers(20, 40, 5).astype(np.int32),
                   "out_zp": rng.integers(0, 256, 5).astype(np.int32)}
    else:
        attrs.update(multiplier=int(rng.integers(2**30, 2**31)), shift=int(rng.integers(20, 40)),
                     out_zp=int(rng.integers(0, 256)))
    opdef = OPS["qrequant"]
    reference = opdef.fn([torch.from_numpy(x)], {**opdef.defaults, **attrs},
                         {k: torch.from_numpy(v) for k, v in weights.items()}).numpy()
    interpreter = SFU_OPS["qrequant"]([x], attrs, weights)
    low, high = (-2**15, 2**15 - 1) if wide else (0, 255)
    for index in np.ndindex(x.shape):
        c = index[-1]
        m, s, zp = ((int(weights[k][c]) for k in ("multiplier", "shift", "out_zp")) if per_channel
                    else (attrs["multiplier"], attrs["shift"], attrs["out_zp"]))
        want = zp + math.floor(Fraction((int(x[index]) - attrs["x_zp"]) * m, 2**s) + Fraction(1, 2))
        assert reference[index] == interpreter[index] == min(high, max(low, want))
    assert reference.dtype == interpreter.dtype == (np.int16 if wide else np.uint8)


def test_compare_rows_and_the_jump():
    from arasc.compare import all_values, dequantize

    model = lowered("bert-base-small")
    rng = np.random.default_rng(1)
    ids = [(rng.integers(0, 1000, (1, 16)).astype(np.int64),) for _ in range(3)]
    quantized = Quantize(calibration=tuple(ids)).rewrite(model)
    values = [all_values(quantized.model, i) for i in ids]
    rows = compare(model, quantized.params, quantized.sources, values, ids)
    by_name = {row.layer: row for row in rows}
    # a data-movement op keeps the codes of its input: the same error as the layer before it
    reshape = next(layer for layer in model.graph.layers if layer.op == "reshape" and layer.inputs[0] in by_name)
    assert by_name[reshape.name].sqnr_db == pytest.approx(by_name[reshape.inputs[0]].sqnr_db)
    assert all(0.9 < row.cosine <= 1.0 + 1e-9 and 0 <= row.clipped < 0.05 for row in rows)
    assert sum(row.jump for row in rows) <= 1
    # the output layer's SQNR, recomputed from its definition over the three inputs
    out = model.graph.outputs[0]
    real = np.concatenate([all_values(model, i)[out].ravel() for i in ids]).astype(np.float64)
    approx = np.concatenate([dequantize(v[out], quantized.params[out]).ravel() for v in values])
    assert by_name[out].sqnr_db == pytest.approx(10 * math.log10((real ** 2).sum() / ((real - approx) ** 2).sum()))


def test_compare_command_writes_its_table_as_json(tmp_path):
    import json

    from arasc.cli import main

    path = tmp_path / "c.json"
    assert main(["compare", "digits-cnn", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["engine"] == "reference" and data["model"] == "digits-cnn"
    layers = [row["layer"] for row in data["layers"]]
    assert layers[-1] == "classifier" and all(0.99 < row["cosine"] <= 1.0 + 1e-9 for row in data["layers"])
