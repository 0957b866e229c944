"""SmoothQuant with alpha chosen per value (arasc/passes/smoothing.py) and the row sample it is
chosen on (calibrate.Stats)."""
import numpy as np
import pytest
import torch

from arasc.passes.calibrate import SAMPLE_ROWS, Stats, channel_qparams
from arasc.passes.smoothing import ALPHAS, choose_alpha, smoothed_qparams


def as_held(weight, per_row=True):
    """uint8 weights decoded, with a scale and zero point per output row or one for the weight,
    each range widened to include 0 (the quantize pass's crossbar rule, docs/quantization.md)."""
    if per_row:
        p = channel_qparams(weight.min(1), weight.max(1))
        scale, zp = p.scale[:, None], p.zp[:, None]
    else:
        low, high = min(weight.min(), 0.0), max(weight.max(), 0.0)
        scale = (high - low) / 255 if high > low else 1.0
        zp = round(-low / scale)
    return (np.clip(np.round(weight / scale) + zp, 0, 255) - zp) * scale


def reference_errors(folds, readers, per_row=True):
    """The module docstring's criterion in plain float64, one alpha at a time: parameters from
    one fold's channel ranges, the other fold's rows coded with them and decoded; a linear
    reader multiplies them by its weight with the channel scales folded into the columns, then
    quantized; the error is the largest squared error of an output row over the mean squared
    exact row, summed over readers and over both directions."""
    errors = []
    for alpha in ALPHAS:
        total = 0.0
        for fit, test in (folds, folds[::-1]):
            p = smoothed_qparams(fit.min(0), fit.max(0), alpha)
            codes = np.clip(np.round(test / p.scale) + p.zp, 0, 255) - p.zp
            for weight in readers:
                if weight is None:
                    exact, approx = test, codes * p.scale
                else:
                    exact, approx = test @ weight.T, codes @ as_held(weight * p.scale, per_row).T
                signal = float(np.sum(exact * exact)) / len(exact)
                if signal > 0:
                    total += float(np.square(exact - approx).sum(axis=1).max()) / signal
        errors.append(total)
    return errors


def test_alpha_moves_between_one_scale_and_one_per_channel():
    # Channel ranges [0, 1] and [0, 100]: the tensor scale is 100/255.
    low, high = np.array([0.0, 0.0]), np.array([1.0, 100.0])
    assert np.allclose(smoothed_qparams(low, high, 0.0).scale, [100 / 255, 100 / 255])
    assert np.allclose(smoothed_qparams(low, high, 1.0).scale, [1 / 255, 100 / 255])
    # alpha 1/2: the small channel's scale is (100/255) * (1/100)^(1/2) = 10/255.
    assert np.allclose(smoothed_qparams(low, high, 0.5).scale, [10 / 255, 100 / 255])
    # Negative ranges: the zero point puts real 0 on a code.
    p = smoothed_qparams(np.array([-2.0, -50.0]), np.array([2.0, 50.0]), 1.0)
    assert p.zp.tolist() == [128, 128] and np.allclose(p.scale, [4 / 255, 100 / 255])


def test_equal_channels_choose_no_smoothing():
    # Every alpha gives the same codes when the channels have one range: the tie goes to alpha 0.
    rng = np.random.default_rng(0)
    rows = rng.uniform(-1, 1, (400, 16))
    rows[0], rows[1] = -1, -1     # both folds (even and odd rows) see the full range in every channel
    rows[2], rows[3] = 1, 1
    weight = rng.normal(size=(8, 16))
    assert choose_alpha((rows[0::2], rows[1::2]), [weight]) == 0.0


def test_an_outlier_channel_is_smoothed():
    # One channel 50x the others, read by a linear layer: one scale leaves the ordinary channels
    # about 5 codes, so some smoothing wins; and it is chosen from the grid.
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(600, 32))
    rows[:, 5] *= 50
    weight = rng.normal(size=(16, 32))
    alpha = choose_alpha((rows[0::2], rows[1::2]), [weight])
    assert alpha in ALPHAS and alpha > 0
    # A table reader (None) judges the decoded value itself: per channel is best there too.
    assert choose_alpha((rows[0::2], rows[1::2]), [None]) > 0


def test_sample_rows_are_bounded_and_split_by_input():
    s = Stats()
    for index in range(10):
        s.add_sample(torch.full((1, 50, 4), float(index)), index, limit=SAMPLE_ROWS[0])
    rows = sum(len(r) for fold in s.folds for r in fold)
    assert SAMPLE_ROWS[0] // 2 < rows <= SAMPLE_ROWS[0]
    even, odd = s.sample()
    assert set(np.unique(even[:, 0])) == {0, 2, 4, 6, 8} and set(np.unique(odd[:, 0])) == {1, 3, 5, 7, 9}


def test_one_calibration_input_splits_its_rows():
    s = Stats()
    s.add_sample(torch.arange(20.0).reshape(10, 2), 0, limit=100)
    even, odd = s.sample()
    assert even[:, 0].tolist() == [0, 4, 8, 12, 16] and odd[:, 0].tolist() == [2, 6, 10, 14, 18]


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half"])
def test_smooth_option_is_checked(bad):
    from arasc.passes.quantize import Quantize, QuantizeError

    with pytest.raises(QuantizeError, match="smooth"):
        Quantize(calibration=((np.zeros(1),),), smooth=bad).run(None)


def test_too_few_rows_keep_one_scale():
    """A value with fewer rows per fold than MIN_FOLD_ROWS (a pooler's one token per input) gets
    the observer's one scale and zero point; with enough rows, its channels get their own."""
    from arasc.frontend import import_module
    from arasc.passes.quantize import MIN_FOLD_ROWS, Quantize

    torch.manual_seed(0)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.out = torch.nn.LayerNorm(8), torch.nn.Linear(8, 8)
            with torch.no_grad():
                self.norm.weight[2] = 20.0    # an outlier channel, which the linear layer weighs little
                self.out.weight[:, 2] *= 0.01

        def forward(self, x):   # the norm feeds an add too, so it is int16, narrowed for the linear layer
            h = self.norm(x)
            return h + self.out(h)

    module = Head().eval()
    for tokens, uniform in ((1, True), (4 * MIN_FOLD_ROWS, False)):
        calibration = tuple((torch.randn(1, tokens, 8).numpy(),) for _ in range(4))
        model = import_module(module, (torch.from_numpy(calibration[0][0]),), "head")
        q = Quantize(calibration=calibration).rewrite(model)
        p = q.params["norm.n"]
        assert p.per_channel != uniform, p
        if not uniform:
            assert np.ptp(p.scale) > 0, p.scale


def test_a_linear_layer_computes_with_the_weights_it_holds():
    """A linear layer reading per-channel codes q (scale s_k, zero point z_k) computes
    (Q - w_zp) w_scale (q - z) + b: the zero points' share goes through the held weights Q. Checked
    from the stored integers by float arithmetic on one unseen input; folding the zero points
    through the float weights instead leaves every output a constant (Q - W diag(s)) z off."""
    from arasc.compare import all_values
    from arasc.frontend import import_module
    from arasc.passes.quantize import MIN_FOLD_ROWS, Quantize

    torch.manual_seed(1)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.out = torch.nn.LayerNorm(32), torch.nn.Linear(32, 16)
            with torch.no_grad():
                self.norm.bias.add_(torch.linspace(-2, 2, 32))   # channel ranges off centre: zero points far from 0

        def forward(self, x):
            h = self.norm(x)
            return h[..., :16] + self.out(h)

    module = Block().eval()
    calibration = tuple((torch.randn(1, 4 * MIN_FOLD_ROWS, 32).numpy(),) for _ in range(4))
    model = import_module(module, (torch.from_numpy(calibration[0][0]),), "block")
    q = Quantize(calibration=calibration).rewrite(model)
    x = q.params["norm.n"]
    assert x.per_channel and np.ptp(x.zp) > 50, x
    linear = next(layer for layer in q.model.graph.layers if layer.name == "out")
    stored = {role: np.asarray(q.model.weights[ref.name]).astype(np.float64) for role, ref in linear.weights}
    attrs = dict(linear.attrs)
    w_zp = stored["w_zp"] if "w_zp" in stored else attrs["w_zp"]
    multiplier = stored["multiplier"] if "multiplier" in stored else attrs["multiplier"]
    shift = stored["shift"] if "shift" in stored else attrs["shift"]
    out = q.params["out"]
    w_scale = multiplier * 2.0 ** -np.asarray(shift) * out.scale    # the multiplier is s_w / s_out (x at scale 1)
    float_bias = module.out.bias.detach().numpy().astype(np.float64)
    held = (stored["weight"] - np.reshape(w_zp, (-1, 1))) * np.reshape(w_scale, (-1, 1))

    values = all_values(q.model, (torch.randn(1, 64, 32).numpy(),))
    codes = values["norm.n"].astype(np.float64) - x.zp
    expected = codes @ held.T + float_bias
    got = (values["out"].astype(np.float64) - out.zp) * out.scale
    assert np.abs(got - expected).max() <= 0.51 * out.scale + 1e-3 * np.abs(expected).max(), np.abs(got - expected).max()


def random_case(rng, rows, channels, outputs):
    """Rows with a few outlier channels and channels that are never negative, and a weight."""
    x = rng.normal(size=(rows, channels)) * rng.lognormal(0, 1, channels)
    x[:, rng.choice(channels, 2, replace=False)] *= rng.uniform(5, 50)
    x[:, :3] = np.abs(x[:, :3])
    return x, rng.normal(size=(outputs, channels)) * rng.uniform(0.01, 1)


@pytest.mark.parametrize("per_row", [True, False])
def test_weight_codes_follow_the_quantize_pass(per_row):
    """The criterion's fused kernel makes, for each column scaling at once, the codes, zero points
    and scales that the quantize pass's own rule (`_weight_params`, `quantize_array`) gives the
    weight with its columns scaled."""
    from arasc.passes.calibrate import quantize_array
    from arasc.passes.quantize import _weight_params
    from arasc.passes.weight_codes import weight_codes

    rng = np.random.default_rng(3)
    for channels, outputs in ((16, 8), (70, 33), (384, 96)):
        _, weight = random_case(rng, 4, channels, outputs)
        weight[0] = np.abs(weight[0])     # a row with no negative weight: its range widens to 0
        weight[1] = 0.0                   # an all-zero row: scale 1
        column_scales = rng.lognormal(0, 1, (3, channels))
        x_zps = rng.integers(0, 256, (3, channels))
        centred, zp, scale, zp_term = weight_codes(weight, column_scales, x_zps, per_row)
        for scaling, (column_scale, x_zp) in enumerate(zip(column_scales, x_zps, strict=True)):
            scaled = weight * column_scale
            p = _weight_params(scaled, per_row)
            codes = quantize_array(scaled, p).astype(np.int64)
            assert np.array_equal(centred[scaling].astype(np.int64) + 128, codes)
            assert np.array_equal(zp[scaling], np.broadcast_to(np.asarray(p.zp).reshape(-1), (outputs,)))
            assert np.array_equal(scale[scaling], np.broadcast_to(np.asarray(p.scale).reshape(-1), (outputs,)))
            assert np.array_equal(zp_term[scaling], (codes - 128) @ (128 - x_zp))


@pytest.mark.parametrize("per_row", [True, False])
@pytest.mark.parametrize("block_bytes", [1 << 25, 7 * 64 * 5])
def test_choice_matches_the_plain_float64_criterion(per_row, block_bytes, monkeypatch):
    """The integer criterion chooses the alpha that the float64 statement of it chooses, and
    its errors agree with that statement's to rounding, on random values with outlier channels,
    several linear readers and tables; with blocks of a few weight rows (7 alphas x 64 channels x
    5 rows) a reader's error is summed over blocks too."""
    from arasc.passes import smoothing
    from arasc.passes.smoothing import alpha_errors

    monkeypatch.setattr(smoothing, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(4)
    chosen = set()
    for case in range(12):
        channels = int(rng.choice([8, 24, 64, 200]))
        x, weight = random_case(rng, int(rng.choice([40, 96, 300])), channels, int(rng.choice([8, 40])))
        readers = [weight, None, random_case(rng, 1, channels, 16)[1]][:1 + case % 3]
        folds = (x[0::2], x[1::2])
        want = reference_errors(folds, readers, per_row)
        got = alpha_errors(folds, readers, per_row)
        assert np.allclose(got, want, rtol=1e-9, atol=0), (got, want)
        alpha = choose_alpha(folds, readers, per_row)
        assert alpha == ALPHAS[int(np.argmin(want))]
        chosen.add(alpha)
    assert len(chosen) > 1, chosen    # the cases exercise the choice, not one answer
