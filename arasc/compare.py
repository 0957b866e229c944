"""`arasc compare`: where a quantized program loses accuracy, layer by layer.

Runs the float IR and the integer program on the same inputs and compares every value the two
share: the float layer's output against the integer value that stands for it, dequantized with
the parameters the quantize pass gave it (per tensor, per channel group, uint8 or int16). The
integer side is the integer reference executor (`arasc.ir.evaluate`) or the interpreter-simulator
running the compiled `.aras` program, optionally with a finite ADC, so the error the chip adds
is located the same way (the role of torch.ao's Numeric Suite or AIMET's quant analyzer).

Figures per layer, accumulated over all the inputs: cosine and SQNR (dB) of the dequantized
value against float, the float range, the fraction of float values outside the range the codes
can represent (clipped), and the scale. The first layer whose SQNR falls by more than `JUMP_DB`
below the SQNR of its inputs is marked: that is where the error jumps.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .ir import Model, evaluate
from .passes.calibrate import QParams

JUMP_DB = 6.0   # one bit of signal-to-noise lost in a single layer


@dataclass
class _Sums:
    dot: float = 0.0
    float_sq: float = 0.0
    quant_sq: float = 0.0
    noise_sq: float = 0.0
    count: int = 0
    clipped: int = 0
    low: float = math.inf
    high: float = -math.inf

    def add(self, real: np.ndarray, approx: np.ndarray, low_limit: np.ndarray, high_limit: np.ndarray) -> None:
        self.dot += float(np.vdot(real, approx))
        self.float_sq += float(np.vdot(real, real))
        self.quant_sq += float(np.vdot(approx, approx))
        self.noise_sq += float(np.vdot(real - approx, real - approx))
        self.count += real.size
        self.clipped += int(((real < low_limit) | (real > high_limit)).sum())
        self.low, self.high = min(self.low, float(real.min())), max(self.high, float(real.max()))


@dataclass(frozen=True)
class Row:
    layer: str
    op: str
    dtype: str
    cosine: float
    sqnr_db: float
    low: float
    high: float
    clipped: float
    scale: str
    jump: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def dequantize(codes: np.ndarray, p: QParams) -> np.ndarray:
    return (codes.astype(np.float64) - p.zp) * p.scale


def _limits(p: QParams) -> tuple[np.ndarray, np.ndarray]:
    low, high = (-(1 << 15), (1 << 15) - 1) if p.wide else (0, 255)
    return (low - np.asarray(p.zp)) * p.scale, (high - np.asarray(p.zp)) * p.scale


def _scale_text(p: QParams) -> str:
    if not p.per_channel:
        return f"{float(p.scale):.4g}"
    return f"{np.min(p.scale):.3g}..{np.max(p.scale):.3g} ({len(np.unique(p.scale))} groups)"


def all_values(model: Model, inputs: Sequence) -> dict[str, np.ndarray]:
    """Every layer's value for one input tuple, by the integer or float reference executor."""
    graph = model.graph
    names = tuple(layer.name for layer in graph.layers)
    probe = model.replace(graph=dataclasses.replace(graph, outputs=names))
    return {name: value.numpy() for name, value in zip(names, evaluate(probe, tuple(inputs)), strict=True)}


def compare(float_model: Model, params: dict[str, QParams], sources: dict[str, str],
            integer_values: Sequence[dict[str, np.ndarray]], inputs: Sequence[Sequence]) -> list[Row]:
    """One row per float layer with a quantized counterpart. `integer_values[i]` holds the
    integer program's values (by quantized value name) on `inputs[i]`; `sources` maps a float
    value to the quantized value standing for it (a fused ReLU to its producer)."""
    if len(integer_values) != len(inputs):
        raise ValueError("one set of integer values per input tuple")
    fused = set(sources.values())   # a layer whose ReLU fused into it: its value is the ReLU's row
    layers = [layer for layer in float_model.graph.layers if layer.name in params and layer.name not in fused]
    sums = {layer.name: _Sums() for layer in layers}
    for values, inp in zip(integer_values, inputs, strict=True):
        real_values = all_values(float_model, inp)
        for layer in layers:
            source = sources.get(layer.name, layer.name)
            if source not in values:
                continue
            p = params[layer.name]
            real = real_values[layer.name].astype(np.float64)
            low, high = _limits(p)
            sums[layer.name].add(real, dequantize(np.asarray(values[source]), p), low, high)
    rows, sqnr = [], {}
    inputs_of = {layer.name: layer.inputs for layer in float_model.graph.layers}
    jumped = False
    for layer in layers:
        s = sums[layer.name]
        if s.count == 0:
            continue
        cosine = s.dot / math.sqrt(s.float_sq * s.quant_sq) if s.float_sq and s.quant_sq else float(s.noise_sq == 0)
        db = 10 * math.log10(s.float_sq / s.noise_sq) if s.noise_sq > 0 else math.inf
        sqnr[layer.name] = db
        before = [sqnr[i] for i in inputs_of[layer.name] if i in sqnr]
        jump = not jumped and bool(before) and min(before) - db > JUMP_DB
        jumped = jumped or jump
        p = params[layer.name]
        rows.append(Row(layer.name, layer.op, "i16" if p.wide else "u8", cosine, db, s.low, s.high,
                        s.clipped / s.count, _scale_text(p), jump))
    return rows


def interpreter_values(program, weights, hw, inputs: Sequence, adc_bits: int | None = None) -> dict[str, np.ndarray]:
    """Every value the interpreter-simulator leaves in the Gbuffer for one input tuple."""
    from .runtime.run import execute

    ports = {port.name: np.asarray(x) for port, x in zip(program.inputs, inputs, strict=True)}
    result = execute(program, weights, hw, ports, adc_bits=adc_bits)
    return dict(result.machine.values)




@dataclass(frozen=True)
class AdcRow:
    """What the finite ADC did in one crossbar layer, over all the inputs, against the same
    program with an ideal ADC: the bits of its weight slices (the chip's cells, or the layer's
    `weight_slice_bits`), samples emulated (columns that hold weights), conversions charged
    (every bitline, or differential pair, of a used crossbar per input step), clipped samples,
    single-bit steps rerun by speculation's recoveries; the fraction of the layer's output codes
    that differ, their mean |difference|, and the lowest cosine over the inputs of the codes
    (less the ideal output's mean) against the ideal ones."""

    layer: str
    slice_bits: int = 0
    samples: int = 0
    conversions: int = 0
    clipped: int = 0
    rerun_steps: int = 0
    codes_changed: float = 0.0
    mean_code_error: float = 0.0
    output_cosine: float = 1.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def adc_rows(program, weights, hw, inputs: Sequence, adc_bits: int) -> list[AdcRow]:
    """Per crossbar layer, in program order: the ADC's figures on `inputs` (see AdcRow)."""
    from .isa.tiling import layer_hardware
    from .runtime.run import execute

    rows = {layer.name: AdcRow(layer.name, layer_hardware(hw, layer).crossbar.cell_bits) for layer in program.layers}
    outputs = {instr["layer"]: instr["out"] for instr in program.compute if instr.opcode == "mvm"}
    sizes = dict.fromkeys(rows, 0)
    for x in inputs:
        ports = {port.name: np.asarray(v) for port, v in zip(program.inputs, x, strict=True)}
        ideal = execute(program, weights, hw, ports)
        finite = execute(program, weights, hw, ports, adc_bits=adc_bits)
        for name, row in rows.items():
            samples, clipped = finite.machine.adc_layers.get(name, (0, 0))
            conversions, rerun = finite.timing.layer_adc.get(name, (0, 0))
            want = ideal.machine.values[outputs[name]].astype(np.float64)
            got = finite.machine.values[outputs[name]].astype(np.float64)
            want_c, got_c = want - want.mean(), got - want.mean()
            norms = float(np.linalg.norm(want_c) * np.linalg.norm(got_c))
            cosine = float(np.vdot(want_c, got_c)) / norms if norms else float(np.array_equal(want, got))
            rows[name] = dataclasses.replace(
                row, samples=row.samples + samples, conversions=row.conversions + conversions,
                clipped=row.clipped + clipped, rerun_steps=row.rerun_steps + rerun,
                codes_changed=row.codes_changed + float(np.count_nonzero(got != want)),
                mean_code_error=row.mean_code_error + float(np.abs(got - want).sum()),
                output_cosine=min(row.output_cosine, cosine))
            sizes[name] += want.size
    return [dataclasses.replace(row, codes_changed=row.codes_changed / max(sizes[name], 1),
                                mean_code_error=row.mean_code_error / max(sizes[name], 1))
            for name, row in rows.items()]
