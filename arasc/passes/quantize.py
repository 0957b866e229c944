"""Quantize: float layer IR -> the INT8 integer pipeline of DESIGN.md section 3.

ARAS computes with INT8 weights and activations (paper Table II). This pass rewrites a traced
float model into the quantized op set of `arasc/ir/qops.py`, following the integer-only recipe
of Jacob et al. (CVPR 2018):

- activations uint8 with a zero point, from ranges an observer (`calibrate.py`: mse by default,
  percentile, minmax) picks from the float evaluator's statistics on calibration inputs;
- conv2d / linear weights asymmetric uint8 with a zero point per output channel (`weights=
  "channel"`, the default) or per layer (the paper's weight centers 88..168 live in [0, 255]),
  biases int32 at scale s_x * s_w, requantization by an int32 fixed-point multiplier and a
  shift, per output channel where the scales differ;
- the residual stream in int16 (`residual="wide"`, the default): the outputs of two-input adds,
  and of crossbar layers and layer norms that feed one, are `wide` int16 codes in the SFU;
  crossbar inputs stay 8-bit, read through a `qrequant` narrowing (trained transformers carry
  outlier channels there that one uint8 scale cannot hold: docs/quantization.md);
- uint8 values between linear layers and elementwise tables get a scale per group of channels
  along their last dimension (`channel_groups`, per-embedding-group quantization): a linear
  layer folds its input's channel scales into its weight columns and its zero points into its
  bias at compile time, so the crossbar sees one 8-bit input as before;
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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from ..ir import OPS, Graph, Layer, Model, TensorType, WeightRef
from ..ir.graph import NUMPY_DTYPES
from ..ir.qops import (
    MULTIPLIER_BITS,
    SOFTMAX_PROB_BITS,
    U8_MAX,
    crossbar_multiplier_bits,
    fixed_point,
    fixed_points,
    shared_fixed_point,
    softmax_table,
)
from .calibrate import (
    OBSERVERS,
    QParams,
    Stats,
    channel_qparams,
    choose_range,
    grouped_channel_ranges,
    observe,
    qparams,
    quantize_array,
    tensor_qparams,
    wide_qparams,
)
from .smoothing import choose_alpha, smoothed_qparams

INT32 = np.iinfo(np.int32)
IR_DTYPE = {np.dtype(numpy_dtype): name for name, numpy_dtype in NUMPY_DTYPES.items()}
ACC_LIMIT = 2**32  # |accumulator| below it keeps acc * multiplier (< 2^31) inside int64 (qops.rounding_shift)
LUT_OPS = ("gelu", "tanh", "sigmoid", "silu", "batchnorm", "clamp", "hardswish", "hardsigmoid", "pow")
DATA_OPS = ("reshape", "permute", "slice", "select", "maxpool2d", "expand")
# Ops whose quantized form clamps at out_zp, so a ReLU after them costs nothing.
FUSES_RELU = ("conv2d", "linear", "add", "sub") + LUT_OPS
WEIGHT_GRANULARITIES = ("channel", "tensor")
WEIGHT_ZERO_POINTS = ("auto", "asymmetric", "symmetric")
RESIDUALS = ("wide", "u8")
TABLE_INDEX_LEVELS = (1 << 12) - 1   # a table read from an int16 value has 4,096 entries (12-bit index)
# Rows of a value each calibration fold must have before smoothing trusts its per-channel ranges:
# a BERT pooler reads one token per input, and 5 calibration inputs gave it ranges that clipped.
MIN_FOLD_ROWS = 32
SYMMETRIC_ZP, SYMMETRIC_LEVELS = 128, 127   # symmetric weights: codes 128 +- 127



class QuantizeError(ValueError):
    pass


@dataclass(frozen=True)
class Quantize:
    """Float model -> INT8 model. `calibration`: input tuples (one array per graph input) whose
    activation statistics set the activation scales; the caller passes at least one (the zoo's
    example inputs when it has nothing better). The other fields choose the scheme
    (docs/quantization.md); the defaults are the most accurate on trained networks."""

    calibration: tuple[tuple, ...] = ()
    weights: str = "channel"        # weight scales per output channel, or per layer ("tensor")
    observer: str = "mse"           # how uint8 activation ranges are chosen: mse, percentile, minmax
    residual: str = "wide"          # the residual stream in int16 ("wide") or uint8
    channel_groups: int = 0         # scale groups of values between linear layers; 0: one scale per tensor
    smooth: float | str = "auto"    # SmoothQuant's alpha for values between linear layers: "auto", a number, 0 off
    weight_zero_point: str = "auto"  # asymmetric, symmetric (zero point 128), auto: symmetric on differential cells

    name: ClassVar[str] = "quantize"
    requires: ClassVar[tuple[str, ...]] = ("traced",)
    ensures: ClassVar[tuple[str, ...]] = ("quantized",)

    def run(self, model: Model, hw=None) -> Model:
        if not self.calibration:
            raise QuantizeError("quantize needs calibration inputs (a tuple of input tuples)")
        for option, value, allowed in (("weights", self.weights, WEIGHT_GRANULARITIES),
                                       ("weight_zero_point", self.weight_zero_point, WEIGHT_ZERO_POINTS),
                                       ("observer", self.observer, OBSERVERS), ("residual", self.residual, RESIDUALS)):
            if value not in allowed:
                raise QuantizeError(f"quantize: {option}={value!r}; choose from {', '.join(allowed)}")
        if self.smooth != "auto" and not (isinstance(self.smooth, (int, float)) and 0 <= self.smooth <= 1):
            raise QuantizeError(f"quantize: smooth={self.smooth!r}; choose auto or an alpha from 0 (off) to 1")
        return self.rewrite(model, hw)[0]

    def resolved_zero_point(self, hw) -> str:
        """`auto` for the target chip. Differential cell pairs hold a code q as its offset q - 128
        (docs/adc.md): with the zero point at 128 that offset is the real weight in steps, whose
        slices have random signs and sum to near zero on a bitline. An asymmetric zero point z
        adds z - 128 to every offset of the channel, the same sign on every row, and those sums
        saturate a 6-bit ADC (all-MiniLM-L6-v2's similarity Spearman 0.997 -> 0.06, docs/results.md)."""
        if self.weight_zero_point != "auto":
            return self.weight_zero_point
        return "symmetric" if hw is not None and hw.differential else "asymmetric"

    def rewrite(self, model: Model, hw=None) -> Quantized:
        """The quantized model, with the parameters of every value (`arasc compare` dequantizes with them),
        for the chip `hw` (None: one without differential cells)."""
        options = dataclasses.replace(self, weight_zero_point=self.resolved_zero_point(hw))
        sampled: set[str] = set()
        if self.smooth == "auto" and self.channel_groups == 0:   # choosing alpha needs rows of the values
            channels = _Rewriter.planned(model.graph, self).channels
            sampled = {*channels, *(relu for relu, producer in _relu_fusions(model.graph).items() if producer in channels)}
        stats = observe(model, self.calibration, histograms=self.observer != "minmax", sampled=sampled)
        rewriter = _Rewriter(model, stats, options)
        quantized = rewriter.run()
        params = dict(rewriter.params)
        params.update((relu, params[producer]) for relu, producer in rewriter.fused.items() if producer in params)
        return Quantized(quantized, params, dict(rewriter.fused))


class Quantized(NamedTuple):
    """A quantized model; `params` by value name (float names, a fused ReLU included); `sources`:
    the float values another quantized value stands for (a fused ReLU -> the layer it fused into)."""

    model: Model
    params: dict[str, QParams]
    sources: dict[str, str]


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


TRANSPARENT = ("reshape", "permute", "slice", "select", "expand")   # move codes: int16 in, int16 out


def _positive_scale(layer: Layer) -> bool:
    """Multiplication or division by a positive constant: only the scale changes (a relabelling)."""
    scalar = layer.attr("scalar")
    return (layer.op in ("mul", "div") and len(layer.inputs) == 1 and isinstance(scalar, (int, float))
            and not isinstance(scalar, bool) and scalar > 0)


def _relays(layer: Layer) -> bool:
    """Moves codes or relabels the scale: int16 in, int16 out."""
    return layer.op in TRANSPARENT or _positive_scale(layer)


def _reads_wide(layer: Layer) -> bool:
    """SFU forms that take int16 codes and make use of them: qadd (two-input add/sub), qmul,
    qmatmul, qlayernorm and qsoftmax (a longer exponent table)."""
    return (layer.op in ("add", "sub", "mul") and len(layer.inputs) == 2) or layer.op in ("matmul", "layernorm",
                                                                                          "softmax")


def _emits_wide(layer: Layer) -> bool:
    """Quantized forms that can write int16 codes: requantizing ones, and tables stored in int16."""
    return (layer.op in ("linear", "conv2d", "layernorm", "matmul", "softmax", "masked_softmax", "embedding", "const")
            or _reads_wide(layer))


def _elementwise_table(layer: Layer) -> bool:
    """Table ops that apply the same function to every element, so one table per channel works."""
    scalar_table = layer.op in ("add", "sub", "mul", "div") and len(layer.inputs) == 1 and not _positive_scale(layer)
    return (layer.op in LUT_OPS and layer.op != "batchnorm") or scalar_table


def _reads_channels(layer: Layer, value: str) -> bool:
    """Readers that absorb per-channel scales along the last dimension at compile time: a linear
    layer (into its weight columns) and an elementwise table (one table per channel)."""
    return (layer.op == "linear" and layer.inputs[0] == value) or _elementwise_table(layer)


@dataclass(frozen=True)
class _Plan:
    """Which values are int16 (`wide`) and which uint8 values get channel-group scales."""

    wide: frozenset[str]
    channels: frozenset[str]


def _plan(graph: Graph, fused: dict[str, str], residual: str, per_channel: bool) -> _Plan:
    users, layers = graph.users(), {layer.name: layer for layer in graph.layers}
    relu_of = {producer: relu for relu, producer in fused.items()}
    outputs = set(graph.outputs)

    def readers(name: str) -> list[Layer]:
        return [layers[u] for u in users.get(relu_of.get(name, name), [])]

    def is_output(name: str) -> bool:
        return relu_of.get(name, name) in outputs

    wide, channels = set(), set()
    if residual == "wide":
        # Backwards, so that a reader's decision is known: a value is int16 where some reader uses
        # int16 codes (directly, or through ops that only move codes or relabel the scale).
        for layer in reversed(graph.layers):
            if layer.name in fused or layer.type.dtype != "f32":
                continue
            if not (_relays(layer) or _emits_wide(layer)):
                continue
            if is_output(layer.name) or any(_reads_wide(r) or _elementwise_table(r) or (r.name in wide and _relays(r))
                                            for r in readers(layer.name)):
                wide.add(layer.name)
        # Forwards: a relay is int16 only where its input is.
        for layer in graph.layers:
            if layer.name in wide and _relays(layer):
                source = fused.get(layer.inputs[0], layer.inputs[0])
                if source not in wide:
                    wide.discard(layer.name)
    for layer in graph.layers:
        name = layer.name
        if not per_channel or name in fused or layer.type.dtype != "f32" or is_output(name):
            continue
        if not layer.type.shape or layer.type.shape[-1] < 2:
            continue
        wide_source = name in wide   # its narrowing feeds the readers that do not take int16
        if not (wide_source or layer.op == "linear" or _elementwise_table(layer)):
            continue
        narrow_readers = [r for r in readers(name)
                          if not (wide_source and (_reads_wide(r) or (r.name in wide and _relays(r))))]
        if narrow_readers and all(_reads_channels(r, name) for r in narrow_readers):
            channels.add(name)
    return _Plan(frozenset(wide), frozenset(channels))


def _quantized_type(layer: Layer, params: QParams) -> TensorType:
    return TensorType("i16" if params.wide else "u8", layer.type.shape)


class _Rewriter:
    """One walk over the layers in order; every float value gets QParams when it is produced."""

    def __init__(self, model: Model, stats: dict[str, Stats], options: Quantize):
        self.model, self.graph, self.stats, self.options = model, model.graph, stats, options
        self.fused = _relu_fusions(self.graph)
        self.relu_of = {producer: relu for relu, producer in self.fused.items()}
        self.plan = self.planned(self.graph, options)
        self.alias: dict[str, str] = dict(self.fused)    # value name -> name of the layer now defining it
        self.params: dict[str, QParams] = {}
        self.narrowed: dict[tuple[str, bool], str] = {}  # (int16 value, for a table) -> its narrowing
        self.layers: list[Layer] = []
        self.weights: dict[str, np.ndarray] = {}

    @staticmethod
    def planned(graph: Graph, options: Quantize) -> _Plan:
        per_channel = options.channel_groups > 0 or options.smooth != 0
        return _plan(graph, _relu_fusions(graph), options.residual, per_channel)

    def run(self) -> Model:
        for value in self.graph.inputs:
            if value.type.dtype == "f32":
                self._quantize_input(value)
        for layer in self.graph.layers:
            if layer.name in self.fused:
                continue
            inputs = tuple(self.alias.get(i, i) for i in layer.inputs)
            if not (_reads_wide(layer) or (layer.name in self.plan.wide and _relays(layer))):
                inputs = tuple(self._narrow(i, layer) for i in inputs)
            layer = Layer(layer.name, layer.op, inputs, layer.type, layer.attrs, layer.weights, layer.loc)
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

    def value_params(self, name: str) -> QParams:
        """The parameters the plan and the observer give a float value."""
        stats = self.stats[name]
        if name in self.plan.wide:
            return wide_qparams(stats.absmax())
        if self.per_channel(name):
            return self.channel_params(name, stats)
        return qparams(*choose_range(stats, self.options.observer))

    def per_channel(self, name: str) -> bool:
        """Whether the uint8 codes of `name` get scales per channel: the plan allows it and, for
        smoothing with alpha chosen per value, each fold of the row sample has MIN_FOLD_ROWS rows
        (fewer do not say what a channel's range is); otherwise one scale, as without the option."""
        if name not in self.plan.channels:
            return False
        if self.options.channel_groups > 0 or self.options.smooth != "auto":
            return True
        return min(len(fold) for fold in self.stats[self.relu_of.get(name, name)].sample()) >= MIN_FOLD_ROWS

    def channel_params(self, name: str, stats: Stats) -> QParams:
        """Scales per channel (last dimension) of the uint8 codes of `name`: by channel group when
        groups are asked for, else smoothed (SmoothQuant), alpha chosen per value ("auto")."""
        if self.options.channel_groups > 0:
            return channel_qparams(*grouped_channel_ranges(stats, self.options.channel_groups))
        alpha = self.options.smooth
        if alpha == "auto":
            alpha = choose_alpha(stats.sample(), self.channel_readers(name), self.options.weights == "channel")
        return smoothed_qparams(stats.channel_low, stats.channel_high, float(alpha))

    def channel_readers(self, name: str) -> list[np.ndarray | None]:
        """What reads the 8-bit codes of `name`, for choosing its smoothing: the float weight of
        each linear layer, None for each elementwise table (the plan allows no other reader)."""
        readers: list[np.ndarray | None] = []
        for layer in self.graph.layers:
            if layer.op == "linear" and layer.inputs[0] in (name, self.relu_of.get(name)):
                readers.append(np.asarray(self.model.weights[layer.weight("weight").name], np.float64))
            elif _elementwise_table(layer) and set(layer.inputs) & {name, self.relu_of.get(name)}:
                readers.append(None)
        return readers

    def output_params(self, layer: Layer) -> QParams:
        """From the statistics of the value, or of the ReLU fused into the layer."""
        params = self.value_params(layer.name)
        if layer.name in self.relu_of:
            relu = self.stats[self.relu_of[layer.name]]
            if params.wide:
                return wide_qparams(relu.absmax())
            if not params.per_channel:
                return qparams(*choose_range(relu, self.options.observer))
        return params

    def fused_relu(self, layer: Layer) -> dict:
        return {"relu": True} if layer.name in self.relu_of else {}

    def add_weight(self, name: str, array: np.ndarray) -> WeightRef:
        """Store a quantized tensor. A float tensor two layers share (tied embeddings and output
        projections) may quantize differently for each: the second copy gets its own name."""
        base, copy = name, 1
        while name in self.weights and not (self.weights[name].dtype == array.dtype
                                            and np.array_equal(self.weights[name], array)):
            name, copy = f"{base}.{copy}", copy + 1
        self.weights[name] = array
        return WeightRef(name, TensorType(IR_DTYPE[array.dtype], array.shape))

    def float_weight(self, layer: Layer, role: str) -> np.ndarray | None:
        ref = layer.weight(role)
        return None if ref is None else np.asarray(self.model.weights[ref.name])

    def emit(self, layer: Layer, op: str, params: QParams, attrs: dict, weights: dict | None = None) -> None:
        """The quantized layer replacing `layer`: same name, inputs and source line; u8 (or i16) output."""
        if params.wide and op not in ("embedding", "const") + TRANSPARENT:   # these keep their data's dtype
            if "wide" not in OPS[op].defaults:
                raise AssertionError(f"quantize planned int16 codes for %{layer.name}, which {op} cannot write")
            attrs = {**attrs, "wide": True}
        self.layers.append(Layer(layer.name, op, layer.inputs, _quantized_type(layer, params), attrs, weights or {},
                                 layer.loc))
        self.params[layer.name] = params

    def requant_params(self, owner: str, reals, out: QParams, dims: int,
                       bits: int = MULTIPLIER_BITS) -> tuple[dict, dict]:
        """Fixed-point multipliers of `bits` bits for `reals` (one per output channel, or one) and
        the output zero point: attributes when one serves every channel, else int32 weights of the
        same roles."""
        reals = np.broadcast_to(np.asarray(reals, np.float64), (dims,))
        zps = np.broadcast_to(np.asarray(out.zp, np.int64), (dims,))
        attrs, weights = {}, {}
        if np.all(reals == reals[0]):
            attrs["multiplier"], attrs["shift"] = fixed_point(float(reals[0]), bits)
        else:
            multipliers, shifts = fixed_points(reals, bits)
            weights["multiplier"] = self.add_weight(f"{owner}.multiplier", multipliers.astype(np.int32))
            weights["shift"] = self.add_weight(f"{owner}.shift", shifts.astype(np.int32))
        if np.all(zps == zps[0]):
            attrs["out_zp"] = int(zps[0])
        else:
            weights["out_zp"] = self.add_weight(f"{owner}.out_zp", zps.astype(np.int32))
        return attrs, weights

    def _narrow(self, name: str, reader: Layer) -> str:
        """The uint8 narrowing of an int16 value, for a reader that takes 8-bit codes."""
        params = self.params.get(name)
        if params is None or not params.wide:
            return name
        index = _elementwise_table(reader) and not self.per_channel(name)   # a table's wider index
        key = (name, index)
        if key not in self.narrowed:
            source = self.relu_of.get(name, name)
            narrow = f"{name}.t" if index else f"{name}.n"
            if index:
                out = qparams(*choose_range(self.stats[source], self.options.observer), levels=TABLE_INDEX_LEVELS)
            elif self.per_channel(name):
                out = self.channel_params(source, self.stats[source])
            else:
                out = qparams(*choose_range(self.stats[source], self.options.observer))
            shape = next(layer.type.shape for layer in self.layers if layer.name == name)
            attrs, weights = self.requant_params(narrow, params.scale / np.asarray(out.scale), out, shape[-1] if shape else 1)
            if index:
                attrs["levels"] = TABLE_INDEX_LEVELS
            self.layers.append(Layer(narrow, "qrequant", (name,), TensorType("i16" if index else "u8", shape),
                                     {"x_zp": 0, **attrs}, weights, reader.loc))
            self.params[narrow] = out
            self.narrowed[key] = narrow
        return self.narrowed[key]

    def _keep(self, layer: Layer) -> None:
        """An integer value (token ids and what is computed from them) stays as it is."""
        self.layers.append(layer)
        for _, ref in layer.weights:
            self.add_weight(ref.name, np.asarray(self.model.weights[ref.name]))

    def _quantize_input(self, value) -> None:
        stats = self.stats[value.name]
        params = qparams(stats.low, stats.high)
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

def _weight_params(weight: np.ndarray, per_channel: bool, zero_point: str = "asymmetric") -> QParams:
    """uint8 parameters of a crossbar layer's weights, per output channel (axis 0) or per layer.
    Asymmetric: each range widened to include 0, mapped onto 0..255. Symmetric: zero point 128,
    scale max|w| / 127, codes 1..255. An all-zero channel takes scale 1: any scale holds it exactly."""
    if not per_channel and zero_point == "asymmetric":
        return tensor_qparams(weight)
    rows = weight.reshape(weight.shape[0] if per_channel else 1, -1)
    if zero_point == "symmetric":
        largest = np.abs(rows).max(1)
        p = QParams(np.where(largest > 0, largest / SYMMETRIC_LEVELS, 1.0), np.full(len(rows), SYMMETRIC_ZP))
    else:
        p = channel_qparams(rows.min(1), rows.max(1))
    if not per_channel:
        return QParams(float(p.scale[0]), int(p.zp[0]))
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return QParams(p.scale.reshape(shape), p.zp.reshape(shape))


def _crossbar(rw: _Rewriter, layer: Layer) -> None:
    """conv2d / linear -> qconv2d / qlinear: u8 weights, i32 bias, fixed-point requantization.

    An input with a scale per channel (only a linear layer's, along its K dimension) folds into
    the layer: with x_k = s_k (q_k - z_k), W x = (W diag(s)) q - W diag(s) z, so the weight
    columns take s_k, the crossbar reads q at scale 1, zp 0, and the integer bias takes
    -(Q - w_zp) z, the zero points' share computed with the weights the crossbar holds: with the
    float W diag(s) instead, every output would carry the constant (Q - W diag(s)) z, a weight
    rounding error times zero points of up to 255 (it cost all-MiniLM-L6-v2 3-6 dB on V)."""
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    weight = rw.float_weight(layer, "weight").astype(np.float64)
    bias = rw.float_weight(layer, "bias")
    bias = None if bias is None else bias.astype(np.float64)
    x_scale, x_zp = (1.0, 0) if x.per_channel else (x.scale, x.zp)
    q_weight, w = _held_weight(weight, x, rw.options.weights == "channel", rw.options.weight_zero_point)
    n = weight.shape[0]
    w_scale = np.asarray(w.scale, np.float64).reshape(-1)
    weights = {"weight": rw.add_weight(layer.weight("weight").name, q_weight)}
    largest_bias = 0
    if bias is not None or x.per_channel:
        q_bias = np.zeros(n) if bias is None else np.round(bias / (x_scale * w_scale))
        if x.per_channel:   # (Q - w_zp) z = Q z - w_zp sum(z), Q z in float64: integers below 2^53, exact
            held_z = (q_weight.astype(np.float64) @ x.zp.astype(np.float64)).astype(np.int64)
            q_bias = q_bias - (held_z - np.asarray(w.zp, np.int64).reshape(-1) * int(x.zp.sum()))
        largest_bias = np.abs(q_bias).max()
        if largest_bias > INT32.max:
            if layer.weight("bias") is None:   # a bias made only of folded channel zero points
                raise rw.error(layer, "has a bias beyond int32 at scale s_x * s_w")
            return _crossbar_bias_apart(rw, layer)
        name = layer.weight("bias").name if layer.weight("bias") else f"{layer.name}.bias"
        weights["bias"] = rw.add_weight(name, np.broadcast_to(q_bias, (n,)).astype(np.int32))
    if weight[0].size * U8_MAX**2 + largest_bias >= ACC_LIMIT:
        raise rw.error(layer, f"has a window of {weight[0].size} weights: its accumulator may reach 2^32")
    attrs, requant = rw.requant_params(layer.name, x_scale * w_scale / np.asarray(out.scale, np.float64), out, n,
                                       crossbar_multiplier_bits(weight[0].size, int(largest_bias)))
    weights.update(requant)
    w_zp = np.asarray(w.zp).reshape(-1)
    if np.all(w_zp == w_zp[0]):
        attrs["w_zp"] = int(w_zp[0])
    else:
        weights["w_zp"] = rw.add_weight(f"{layer.name}.w_zp", w_zp.astype(np.int32))
    attrs = {**dict(layer.attrs), "x_zp": int(x_zp), **attrs, **rw.fused_relu(layer)}
    rw.emit(layer, "q" + layer.op, out, attrs, weights)


def _held_weight(weight: np.ndarray, x: QParams, per_channel: bool, zero_point: str) -> tuple[np.ndarray, QParams]:
    """The uint8 codes a crossbar holds of the float `weight` [N, ...] and their parameters; with
    per-channel input codes (x_k = s_k (q_k - z_k)) the columns take s_k first. A smoothed linear
    layer's weight with asymmetric codes per row goes through the alpha choice's numba kernel:
    the same codes (tests/test_smoothing.py), in one pass where numpy takes five over float64
    (BERT-Large's quantize pass, side by side: 10.1-10.4 s without, 8.7-9.1 s with)."""
    if x.per_channel and per_channel and zero_point == "asymmetric" and weight.ndim == 2:
        from .weight_codes import weight_codes

        centred, zp, scale, _ = weight_codes(weight, np.asarray(x.scale, np.float64)[None],
                                             np.asarray(x.zp, np.int64)[None], True)
        return centred[0].view(np.uint8) ^ np.uint8(128), QParams(scale[0].reshape(-1, 1), zp[0].reshape(-1, 1))
    if x.per_channel:
        weight = weight * x.scale
    w = _weight_params(weight, per_channel, zero_point)
    return quantize_array(weight, w), w


def _code_span(p: QParams) -> int:
    """The largest |q - zp| the codes of a value can take."""
    return (1 << 15) + abs(int(p.zp)) if p.wide else U8_MAX


def _crossbar_bias_apart(rw: _Rewriter, layer: Layer) -> None:
    """A degenerate layer whose bias is beyond int32 at scale s_x * s_w (GoogLeNet at random
    init: its last inputs are ~1e-11, so the output is the bias): the crossbars compute the
    product alone into `<name>.product`, and a qadd adds the bias as a u8 constant. The
    product's range follows from the calibrated output range: y = z + b puts z in
    [y_min - max(b), y_max - min(b)]."""
    bias = rw.float_weight(layer, "bias").astype(np.float64)
    low, high = rw.stats[layer.name].low, rw.stats[layer.name].high
    product = Layer(f"{layer.name}.product", layer.op, layer.inputs, layer.type, layer.attrs,
                    {"weight": layer.weight("weight")}, layer.loc)
    rw.stats[product.name] = Stats(low - bias.max(), high - bias.min())
    _crossbar(rw, product)
    channels = (-1,) + (1,) * (len(layer.type.shape) - 2) if layer.op == "conv2d" else (-1,)
    params = tensor_qparams(bias)
    ref = rw.add_weight(layer.weight("bias").name, quantize_array(bias.reshape(channels), params))
    constant = Layer(f"{layer.name}.bias", "const", (), TensorType("f32", ref.type.shape), {}, {}, layer.loc)
    rw.emit(constant, "const", params, {}, {"value": ref})
    _add(rw, Layer(layer.name, "add", (product.name, constant.name), layer.type, {}, {}, layer.loc))


def _matmul(rw: _Rewriter, layer: Layer) -> None:
    """qmatmul; with int16 operands the accumulator outgrows 2^32, so the multiplier gets fewer
    bits, keeping |acc| x m below 2^62 (qops.rounding_shift works in int64)."""
    (a, b), out = rw.input_params(layer), rw.output_params(layer)
    largest = _inner_dim(rw, layer) * _code_span(a) * _code_span(b)
    multiplier, shift = fixed_point(a.scale * b.scale / out.scale, bits=min(31, 62 - largest.bit_length()))
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


def _inner_dim(rw: _Rewriter, layer: Layer) -> int:
    """The summed dimension of a matmul: the last of its first (already quantized) operand."""
    return next(q.type.shape[-1] for q in rw.layers if q.name == layer.inputs[0])


def _mul(rw: _Rewriter, layer: Layer) -> None:
    if _positive_scale(layer):
        return _rescale(rw, layer)
    if len(layer.inputs) == 1:
        return _lut(rw, layer)
    if layer.op == "div":
        raise rw.error(layer, "divides two activations, which has no integer form here")
    (a, b), out = rw.input_params(layer), rw.output_params(layer)
    multiplier, shift = fixed_point(a.scale * b.scale / out.scale)
    rw.emit(layer, "qmul", out, {"zps": (a.zp, b.zp), "multiplier": multiplier, "shift": shift, "out_zp": out.zp})


def _rescale(rw: _Rewriter, layer: Layer) -> None:
    """x * c or x / c with c > 0: the same codes at scale s_x c (or s_x / c), no rounding. The
    layer stays as a `qrequant` with multiplier 1 (an exact copy), so that the value keeps a
    name and its scale; a compiler that fused it into the producer would save one SFU pass."""
    (x,) = rw.input_params(layer)
    c = float(layer.attr("scalar"))
    params = QParams(x.scale * c if layer.op == "mul" else x.scale / c, x.zp, x.wide)
    multiplier, shift = fixed_point(1.0)
    rw.emit(layer, "qrequant", params, {"x_zp": int(x.zp), "multiplier": multiplier, "shift": shift,
                                        "out_zp": int(x.zp)})


def _lut(rw: _Rewriter, layer: Layer) -> None:
    """Elementwise function of one u8 input -> 256-entry table, built by running the float op
    itself on the 256 dequantized codes, fused ReLU included. One table per channel where the
    input or the output has a scale per channel (last dimension) and for batchnorm (dimension 1)."""
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    codes = torch.arange(x.levels + 1, dtype=torch.float64)
    attrs = {}
    if x.per_channel or out.per_channel:
        channels = layer.type.shape[-1]
        scale = torch.as_tensor(np.broadcast_to(x.scale, (channels,)).copy()).reshape(-1, 1)
        zp = torch.as_tensor(np.broadcast_to(x.zp, (channels,)).astype(np.float64)).reshape(-1, 1)
        real = (codes - zp) * scale                                   # [C, 256]
        attrs["dim"] = -1
    else:
        real = (codes - x.zp) * x.scale
    if layer.op == "batchnorm":
        real = real.expand(1, layer.type.shape[1], x.levels + 1)    # [1, C, 256]: channels on dim 1
    opdef = OPS[layer.op]
    weights = {role: torch.from_numpy(rw.float_weight(layer, role)) for role, _ in layer.weights}
    y = opdef.fn([real], {**opdef.defaults, **dict(layer.attrs)}, weights).to(torch.float64)
    if layer.name in rw.relu_of:
        y = torch.relu(y)
    y = y.reshape(-1, x.levels + 1).numpy()
    if out.per_channel:
        table = quantize_array(y, QParams(out.scale.reshape(-1, 1), out.zp.reshape(-1, 1)))
    else:
        table = quantize_array(y, out)
    if table.shape[0] == 1:
        table = table[0]
    rw.emit(layer, "qlut", out, attrs, {"table": rw.add_weight(f"{layer.name}.table", table)})


def _relu(rw: _Rewriter, layer: Layer) -> None:
    (x,) = rw.input_params(layer)
    rw.emit(layer, "qrelu", x, {"zp": x.zp})


def _softmax(rw: _Rewriter, layer: Layer) -> None:
    (x,), out = rw.input_params(layer), rw.output_params(layer)
    multiplier, shift = fixed_point(2.0**-SOFTMAX_PROB_BITS / out.scale)
    table = rw.add_weight(f"{layer.name}.table", softmax_table(x.scale, x.wide).numpy())
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
    params = wide_qparams(float(np.abs(table).max())) if layer.name in rw.plan.wide else tensor_qparams(table)
    ref = rw.add_weight(layer.weight("table").name, quantize_array(table, params))
    rw.emit(layer, "embedding", params, {}, {"table": ref})


def _const(rw: _Rewriter, layer: Layer) -> None:
    value = rw.float_weight(layer, "value")
    params = wide_qparams(float(np.abs(value).max())) if layer.name in rw.plan.wide else tensor_qparams(value)
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
