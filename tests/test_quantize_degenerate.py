"""Layers that are degenerate after quantization (GoogLeNet at random init: inputs ~1e-11, a
fixed-point multiplier of ~1e-13 and a bias beyond int32 at scale s_x * s_w; zero ranges)
quantize exactly instead of stopping the compiler."""
import math
from fractions import Fraction

import pytest
import torch
import torch.nn as nn

from arasc.frontend import import_module
from arasc.ir import evaluate
from arasc.ir.qops import MAX_SHIFT, fixed_point, rounding_shift
from arasc.passes.quantize import Quantize


def test_tiny_multiplier_keeps_the_largest_shift_and_rounds_like_the_real_product():
    real = 5.5e-14  # GoogLeNet's, from the issue
    multiplier, shift = fixed_point(real)
    assert shift == MAX_SHIFT and multiplier == round(real * 2**MAX_SHIFT)
    for acc in (0, 1, -1, 12345, -(2**31), 2**31 - 1, 2**40 // 3):
        got = int(rounding_shift(torch.tensor([acc]), multiplier, shift))
        assert got == math.floor(acc * Fraction(real) + Fraction(1, 2))


class Vanishing(nn.Module):
    """The last layers of GoogLeNet at its own init: inputs of ~1e-11, so the output is the bias."""

    def __init__(self, conv: bool):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Conv2d(4, 6, 3, padding=1) if conv else nn.Linear(16, 6)
        nn.init.uniform_(self.layer.bias, -0.03, 0.03)

    def forward(self, x):
        return self.layer(torch.relu(x) * 1e-11)


@pytest.mark.parametrize("conv", [False, True])
def test_bias_beyond_int32_goes_apart_and_the_output_is_exact(conv):
    module = Vanishing(conv).eval()
    x = torch.randn((1, 4, 5, 5) if conv else (2, 16), generator=torch.Generator().manual_seed(1))
    model = Quantize(((x,),), weights="tensor", residual="u8").run(import_module(module, (x,)))  # one shift attr
    ops = {layer.name: layer.op for layer in model.graph.layers}
    assert ops["layer.product"] == ("qconv2d" if conv else "qlinear") and ops["layer.bias"] == "const"
    assert ops["layer"] == "qadd"
    product = next(layer for layer in model.graph.layers if layer.name == "layer.product")
    assert product.attr("shift") == MAX_SHIFT
    (got,) = evaluate(model, (x,))
    with torch.no_grad():
        expected = module(x)
    out = next(layer for layer in model.graph.layers if layer.name == "layer.dq")
    # the bias is quantized once (its own scale) and requantized once (the output's): one code each
    assert (got - expected).abs().max() <= out.attr("scale") * 1.01 + float(expected.abs().max()) / 255


def test_all_zero_layer_quantizes_to_exact_zeros():
    module = nn.Linear(8, 4).eval()
    with torch.no_grad():
        module.weight.zero_()
        module.bias.zero_()
    x = torch.randn(3, 8)
    model = Quantize(((x,),)).run(import_module(module, (x,)))
    (got,) = evaluate(model, (x,))
    assert torch.equal(got, torch.zeros(3, 4))
