"""Quantize: float layer IR -> the INT8 integer pipeline of DESIGN.md section 3.

ARAS computes with INT8 weights and activations (paper Table II). This pass rewrites a traced
float model into the quantized op set of `arasc/ir/qops.py`, following the integer-only recipe
of Jacob et al. (CVPR 2018):

- activations uint8 with a zero point, from min/max ranges observed by running the float
  evaluator on calibration inputs (`calibrate.py`);
- conv2d / linear weights per-layer asymmetric uint8 with a zero point (the paper's weight
  centers 88..168 live in [0, 255]), biases int32 at scale s_x * s_w, requantization by an int32
  fixed-point multiplier and a shift;
- ReLU fused into the layer before it when that layer has no other user (clamp at out_zp);
- non-linear elementwise functions, batch norms that could not fold and scalar arithmetic
  become 256-entry lookup tables; softmax and layer norm become `qsoftmax` / `qlayernorm`;
- float graph inputs enter through a `quantize` layer named `<input>.q`, every float output
  leaves through a `dequantize` layer named `<output>.dq`, so the model's interface stays f32.
  Integer inputs (token ids) stay integer.

The weight zero point `w_zp` stays an explicit attribute of `qconv2d` / `qlinear`: paper
section V-C shifts each layer's weights and compensates exactly through it (z' = z + shift),
which is a later pass. Layers keep their float names, so IR dumps before and after diff well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from ..ir import OPS, Graph, Layer, Model, TensorType, WeightRef
from ..ir.graph import NUMPY_DTYPES
from ..ir.qops import SOFTMAX_PROB_BITS, U8_MAX, fixed_point, shared_fixed_point, softmax_table
from .calibrate import QParams, observe_ranges, qparams, quantize_array, tensor_qparams

INT32 = np.iinfo(np.int32)
IR_DTYPE = {np.dtype(numpy_dtype): name for name, numpy_dtype in NUMPY_DTYPES.items()}
ACC_LIMIT = 2**32  # |accumulator| below it keeps acc * multiplier (< 2^31) inside int64 (qops.rounding_shift)
LUT_OPS = ("gelu", "tanh", "sigmoid", "silu", "batchnorm", "clamp", "hardswish", "hardsigmoid", "pow")
DATA_OPS = ("reshape", "permute", "slice", "select", "maxpool2d", "expand")
# Ops whose quantized form clamps at out_zp, so a ReLU after them costs nothing.
FUSES_RELU = ("conv2d", "linear", "add", "sub") + LUT_OPS


class QuantizeError(ValueError):
    pass


@dataclass(frozen=True)
class Quantize:
    """Float model -> INT8 model. `calibration`: input tuples (one array per graph input) whose
    activation ranges set the activation scales; the caller passes at least one (the zoo's
    example inputs when it has nothing better)."""

    calibration: tuple[tuple, ...] = ()

    name: ClassVar[str] = "quantize"
    requires: ClassVar[tuple[str, ...]] = ("traced",)
    ensures: ClassVar[tuple[str, ...]] = ("quantized",)

    def run(self, model: Model, hw=None) -> Model:
        if not self.calibration:
            raise QuantizeError("quantize needs calibration inputs (a tuple of input tuples)")
        return _Rewriter(model, observe_ranges(model, self.calibration)).run()


def _relu_fusions(graph: Graph) -> dict[str, str]:
    """relu layer -> the layer it fuses into: a producer in FUSES_RELU whose only user it is."""
    users, producers = graph.users(), {layer.name: layer for layer in graph.layers}
    fused = {}
    for layer in graph.layers:
        producer = producers.get(layer.inputs[0]) if layer.op == "relu" else None
        if (producer is not None and producer.op in FUSES_RELU and producer.type.dtype == "f32"
                and users[producer.name] == [layer.name] and producer.name not in graph.outputs):
            fused[layer.name] = producer.name
    return fused


def _u8(layer: Layer) -> TensorType:
    return TensorType("u8", layer.type.shape)


class _Rewriter:
    """One walk over the layers in order; every float value gets QParams when it is produced."""

    def __init__(self, model: Model, ranges: dict[str, tuple[float, float]]):
        self.model, self.graph, self.ranges = model, model.graph, ranges
        self.fused = _relu_fusions(self.graph)
        self.relu_of = {producer: relu for relu, producer in self.fused.items()}
        self.alias: dict[str, str] = dict(self.fused)    # value name -> name of the layer now defining it
        self.params: dict[str, QParams] = {}
        self.layers: list[Layer] = []
        self.weights: dict[str, np.ndarray] = {}

    def run(self) -> Model:
        for value in self.graph.inputs:
            if value.type.dtype == "f32":
                self._quantize_input(value)
        for layer in self.graph.layers:
            if layer.name in self.fused:
                continue
            layer = Layer(layer.name, layer.op, tuple(self.alias.get(i, i) for i in layer.inputs), layer.type,
                          layer.attrs, layer.weights, layer.loc)
            if layer.type.dtype != "f32":
                self._keep(layer)
            elif layer.op in HANDLERS:
                HANDLERS[layer.op](self, layer)
            else:
                raise self.error(layer, "has no quantized form")
        outputs = tuple(self._dequantize_output(name) for name in self.graph.outputs)
        graph = Graph(self.graph.name, self.graph.inputs, tuple(self.layers), outputs, self.graph.meta)
        return Model(graph, self.weights)

    # ---- bookkeeping ----

    def error(self, layer: Layer, message: str) -> QuantizeError:
        where = f" at {layer.loc}" if layer.loc else ""
        return QuantizeError(f"quantize: layer %{layer.name} ({layer.op}){where} {message}")

    def input_params(self, layer: Layer) -> list[QParams]:
        missing = [name for name in layer.inputs if name not in self.params]
        if missing:
            raise self.error(layer, f"reads {', '.join('%' + n for n in missing)}, which is not a quantized value")
        return [self.params[name] for name in layer.inputs]

    def output_params(self, layer: Layer) -> QParams:
        """From the calibrated range of the value, or of the ReLU fused into the layer."""
        return qparams(*self.ranges[self.relu_of.get(layer.name, layer.name)])

    def fused_relu(self, layer: Layer) -> dict:
        return {"relu": True} if layer.name in self.relu_of else {}

    def add_weight(self, name: str, array: np.ndarray) -> WeightRef:
        if name in self.weights and not np.array_equal(self.weights[name], array):
            raise QuantizeError(f"quantize: weight @{name} would need two different quantized values")
        self.weights[name] = array
        return WeightRef(name, TensorType(IR_DTYPE[array.dtype], array.shape))

    def float_weight(self, layer: Layer, role: str) -> np.ndarray | None:
        ref = layer.weight(role)
        return None if ref is None else np.asarray(self.model.weights[ref.name])

    def emit(self, layer: Layer, op: str, params: QParams, attrs: dict, weights: dict | None = None) -> None:
        """The quantized layer replacing `layer`: same name, inputs and source line; u8 output."""
        self.layers.append(Layer(layer.name, op, layer.inputs, _u8(layer), attrs, weights or {}, layer.loc))
        self.params[layer.name] = params

    def _keep(self, layer: Layer) -> None:
        """An integer value (token ids and what is computed from them) stays as it is."""
        self.layers.append(layer)
        for _, ref in layer.weights:
            self.add_weight(ref.name, np.asarray(self.model.weights[ref.name]))

    def _quantize_input(self, value) -> None:
        params = qparams(*self.ranges[value.name])
        name = f"{value.name}.q"
        self.layers.append(Layer(name, "quantize", (value.name,), TensorType("u8", value.type.shape),
                                 {"scale": params.scale, "zp": params.zp}))
        self.params[name] = params
        self.alias[value.name] = name

    def _dequantize_output(self, name: str) -> str:
        source = self.alias.get(name, name)
        if source not in self.params:
            return source
        dq = f"{name}.dq"
        if all(layer.name != dq for layer in self.layers):
            params = self.params[source]
            shape = next(layer.type.shape for layer in self.layers if layer.name == source)
            self.layers.append(Layer(dq, "dequantize", (source,), TensorType("f32", shape),
                                     {"scale": params.scale, "zp": params.zp}))
        return dq


# ---- handlers: one per float op, each emitting the quantized layer --------------------------

def _crossbar(rw: _Rewriter, layer: Layer) -> None:
    """conv2d / linear -> qconv2d / qlinear: u8 weights, i32 bias, fixed-point requantization."""
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    weight, bias = rw.float_weight(layer, "weight"), rw.float_weight(layer, "bias")
    w = tensor_qparams(weight)
    multiplier, shift = fixed_point(x.scale * w.scale / out.scale)
    weights = {"weight": rw.add_weight(layer.weight("weight").name, quantize_array(weight, w))}
    largest_bias = 0
    if bias is not None:
        q_bias = np.round(bias.astype(np.float64) / (x.scale * w.scale))
        largest_bias = np.abs(q_bias).max()
        if largest_bias > INT32.max:
            return _crossbar_bias_apart(rw, layer)
        weights["bias"] = rw.add_weight(layer.weight("bias").name, q_bias.astype(np.int32))
    if weight[0].size * U8_MAX**2 + largest_bias >= ACC_LIMIT:
        raise rw.error(layer, f"has a window of {weight[0].size} weights: its accumulator may reach 2^32")
    attrs = {**dict(layer.attrs), "x_zp": x.zp, "w_zp": w.zp, "out_zp": out.zp, "multiplier": multiplier,
             "shift": shift, **rw.fused_relu(layer)}
    rw.emit(layer, "q" + layer.op, out, attrs, weights)


def _crossbar_bias_apart(rw: _Rewriter, layer: Layer) -> None:
    """A degenerate layer whose bias is beyond int32 at scale s_x * s_w (GoogLeNet at random
    init: its last inputs are ~1e-11, so the output is the bias): the crossbars compute the
    product alone into `<name>.product`, and a qadd adds the bias as a u8 constant. The
    product's range follows from the calibrated output range: y = z + b puts z in
    [y_min - max(b), y_max - min(b)]."""
    bias = rw.float_weight(layer, "bias").astype(np.float64)
    low, high = rw.ranges[layer.name]
    product = Layer(f"{layer.name}.product", layer.op, layer.inputs, layer.type, layer.attrs,
                    {"weight": layer.weight("weight")}, layer.loc)
    rw.ranges[product.name] = (low - bias.max(), high - bias.min())
    _crossbar(rw, product)
    channels = (-1,) + (1,) * (len(layer.type.shape) - 2) if layer.op == "conv2d" else (-1,)
    params = tensor_qparams(bias)
    ref = rw.add_weight(layer.weight("bias").name, quantize_array(bias.reshape(channels), params))
    constant = Layer(f"{layer.name}.bias", "const", (), TensorType("f32", ref.type.shape), {}, {}, layer.loc)
    rw.emit(constant, "const", params, {}, {"value": ref})
    _add(rw, Layer(layer.name, "add", (product.name, constant.name), layer.type, {}, {}, layer.loc))


def _matmul(rw: _Rewriter, layer: Layer) -> None:
    (a, b), out = rw.input_params(layer), rw.output_params(layer)
    multiplier, shift = fixed_point(a.scale * b.scale / out.scale)
    rw.emit(layer, "qmatmul", out, {"a_zp": a.zp, "b_zp": b.zp, "out_zp": out.zp, "multiplier": multiplier,
                                    "shift": shift})


def _add(rw: _Rewriter, layer: Layer) -> None:
    if len(layer.inputs) == 1:
        return _lut(rw, layer)
    ins, out = rw.input_params(layer), rw.output_params(layer)
    signs = (1, -1) if layer.op == "sub" else (1, 1)
    multipliers, shift = shared_fixed_point([s * p.scale / out.scale for s, p in zip(signs, ins)])
    rw.emit(layer, "qadd", out, {"zps": tuple(p.zp for p in ins), "multipliers": multipliers, "shift": shift,
                                 "out_zp": out.zp, **rw.fused_relu(layer)})


def _mul(rw: _Rewriter, layer: Layer) -> None:
    if len(layer.inputs) == 1:
        return _lut(rw, layer)
    if layer.op == "div":
        raise rw.error(layer, "divides two activations, which has no integer form here")
    (a, b), out = rw.input_params(layer), rw.output_params(layer)
    multiplier, shift = fixed_point(a.scale * b.scale / out.scale)
    rw.emit(layer, "qmul", out, {"zps": (a.zp, b.zp), "multiplier": multiplier, "shift": shift, "out_zp": out.zp})


def _lut(rw: _Rewriter, layer: Layer) -> None:
    """Elementwise function of one u8 input -> 256-entry table, built by running the float op
    itself on the 256 dequantized codes (per channel for batchnorm), fused ReLU included."""
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    real = (torch.arange(U8_MAX + 1, dtype=torch.float64) - x.zp) * x.scale
    if layer.op == "batchnorm":
        real = real.expand(1, layer.type.shape[1], U8_MAX + 1)    # [1, C, 256]: channels on dim 1
    opdef = OPS[layer.op]
    weights = {role: torch.from_numpy(rw.float_weight(layer, role)) for role, _ in layer.weights}
    y = opdef.fn([real], {**opdef.defaults, **dict(layer.attrs)}, weights).to(torch.float64)
    if layer.name in rw.relu_of:
        y = torch.relu(y)
    table = quantize_array(y.reshape(-1, U8_MAX + 1).squeeze(0).numpy(), out)
    rw.emit(layer, "qlut", out, {}, {"table": rw.add_weight(f"{layer.name}.table", table)})


def _relu(rw: _Rewriter, layer: Layer) -> None:
    (x,) = rw.input_params(layer)
    rw.emit(layer, "qrelu", x, {"zp": x.zp})


def _softmax(rw: _Rewriter, layer: Layer) -> None:
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    multiplier, shift = fixed_point(2.0**-SOFTMAX_PROB_BITS / out.scale)
    table = rw.add_weight(f"{layer.name}.table", softmax_table(x.scale).numpy())
    rw.emit(layer, "qsoftmax", out, {"dim": layer.attr("dim"), "out_zp": out.zp, "multiplier": multiplier,
                                     "shift": shift}, {"table": table})


def _masked_softmax(rw: _Rewriter, layer: Layer) -> None:
    """As softmax; the bool mask (an integer-side value, kept as it is) picks the entries."""
    scores = layer.inputs[0]
    if scores not in rw.params:
        raise rw.error(layer, f"reads %{scores}, which is not a quantized value")
    x, out = rw.params[scores], rw.output_params(layer)
    multiplier, shift = fixed_point(2.0**-SOFTMAX_PROB_BITS / out.scale)
    table = rw.add_weight(f"{layer.name}.table", softmax_table(x.scale).numpy())
    rw.emit(layer, "qmasked_softmax", out, {"dim": layer.attr("dim"), "out_zp": out.zp, "multiplier": multiplier,
                                            "shift": shift}, {"table": table})


def _cast(rw: _Rewriter, layer: Layer) -> None:
    """An integer value turned float (a mask, a count) enters the u8 domain like a graph input."""
    params = rw.output_params(layer)
    rw.emit(layer, "quantize", params, {"scale": params.scale, "zp": params.zp})


def _layernorm(rw: _Rewriter, layer: Layer) -> None:
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    weights = {role: rw.add_weight(ref.name, np.asarray(rw.model.weights[ref.name])) for role, ref in layer.weights}
    attrs = {**dict(layer.attrs), "x_scale": x.scale, "x_zp": x.zp, "out_scale": out.scale, "out_zp": out.zp}
    rw.emit(layer, "qlayernorm", out, attrs, weights)


def _same_scale(op: str | None, zp_attr: bool = False) -> Callable[[_Rewriter, Layer], None]:
    """Ops whose output keeps the input's scale and zero point: data movement, max and averages."""
    def handle(rw: _Rewriter, layer: Layer) -> None:
        (x,) = rw.input_params(layer)
        attrs = {**dict(layer.attrs), **({"zp": x.zp} if zp_attr else {})}
        rw.emit(layer, op or layer.op, x, attrs)
    return handle


def _concat(rw: _Rewriter, layer: Layer) -> None:
    ins = rw.input_params(layer)
    if len(set(ins)) == 1:
        return rw.emit(layer, "concat", ins[0], dict(layer.attrs))
    out = rw.output_params(layer)
    multipliers, shift = shared_fixed_point([p.scale / out.scale for p in ins])
    rw.emit(layer, "qconcat", out, {"dim": layer.attr("dim"), "zps": tuple(p.zp for p in ins),
                                    "multipliers": multipliers, "shift": shift, "out_zp": out.zp})


def _embedding(rw: _Rewriter, layer: Layer) -> None:
    """The table quantizes with its own min/max: any row can be looked up, seen in calibration or not."""
    table = rw.float_weight(layer, "table")
    params = tensor_qparams(table)
    ref = rw.add_weight(layer.weight("table").name, quantize_array(table, params))
    rw.emit(layer, "embedding", params, {}, {"table": ref})


def _const(rw: _Rewriter, layer: Layer) -> None:
    value = rw.float_weight(layer, "value")
    params = tensor_qparams(value)
    rw.emit(layer, "const", params, {}, {"value": rw.add_weight(layer.weight("value").name,
                                                                 quantize_array(value, params))})


HANDLERS: dict[str, Callable[[_Rewriter, Layer], None]] = {
    "conv2d": _crossbar, "linear": _crossbar, "matmul": _matmul,
    "add": _add, "sub": _add, "mul": _mul, "div": _mul,
    **{op: _lut for op in LUT_OPS},
    "relu": _relu, "softmax": _softmax, "layernorm": _layernorm,
    **{op: _same_scale(None) for op in DATA_OPS},
    "avgpool2d": _same_scale("qavgpool2d", zp_attr=True),
    "adaptive_avgpool2d": _same_scale("qadaptive_avgpool2d"),
    "mean": _same_scale("qmean"),
    "concat": _concat, "embedding": _embedding, "const": _const,
    "masked_softmax": _masked_softmax, "cast": _cast,
}
