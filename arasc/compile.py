"""The compiler driver: every stage of `arasc compile`, in order, one line each.

    capture        the model's graph with static shapes: torch.fx or torch.export (frontend/trace.py)
    lower          the layer IR (frontend/lower.py, docs/ir.md)
    quantize       INT8 weights and activations (passes/quantize.py, docs/quantization.md)
    shift-weights  weight-mean shifting (paper V-C, passes/shift_weights.py)
    center-offset  RAELLA's Center+Offset for differential cells (passes/center_offset.py, docs/adc.md; off by default)
    input-slicing  RAELLA's speculative input slices (passes/input_slicing.py, docs/adc.md; off by default)
    dynamic-precision  ReDy's dynamic activation precision, lossless (passes/dynamic_precision.py; off by default)
    weight-bits    SME's bit-sparsity: N-bit weights, whole top slices zero (passes/weight_bits.py; off by default)
    slice-sparsity SME's bit-sparsity per crossbar tile, GPTQ-compensated (passes/slice_sparsity.py; --squeeze-out lossy)
    squeeze-out    SME's squeeze-out of all-zero slice tiles, bit-sliced chips (passes/squeeze_out.py; off by default)
    weight-slicing RAELLA's adaptive weight slicing, per layer (passes/weight_slicing.py, docs/adc.md; off by default)
    tile           128x128 blocks on APU rows (passes/tile.py, docs/tiling.md)
    replication    copies of the slowest layers' blocks (paper V-B, schedule/replication.py), and the
                   layers that may compute on the blocks already written (packing, schedule/packing.py)
    schedule       rows bound to blocks and the write stream (paper IV, schedule/)
    banks          Gbuffer banks per layer (paper V-A, backend/bank_selection.py)
    emit           the `.aras` program and its weight file (backend/emit.py)

The options of every stage are one `CompileOptions` (options.py); `Stages` (stages.py) times
each stage and prints or dumps the IR after it. Only the current model is held: each pass's
result replaces its input, so the weights of earlier stages are freed as the compile moves on.

Writing is atomic: the weight file and the program text go to temporary names first and are
renamed into place only when both are complete, so a failure never leaves a half-written file."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .backend.emit import assemble, emit_compute, plan_banks, program_tensors
from .frontend import capture_model, lower
from .ir import Model
from .isa.atomic import check_output_path, write_atomically
from .isa.hardware import Hardware
from .isa.printer import print_program
from .isa.program import Program
from .isa.weights import weights_bytes
from .loader import Source
from .options import CompileOptions
from .passes.center_offset import CenterOffset
from .passes.dynamic_precision import DynamicPrecision
from .passes.input_slicing import InputSlicing
from .passes.quantize import Quantize
from .passes.shift_weights import ShiftWeights
from .passes.slice_sparsity import SliceSparsity
from .passes.squeeze_out import SqueezeOut
from .passes.tile import Tile
from .passes.weight_bits import WeightBits
from .passes.weight_slicing import WeightSlicing
from .schedule.aras import aras_schedule
from .schedule.naive import naive_schedule
from .schedule.packing import plan
from .stages import Stages

INPUT_PREFIX = "input:"  # example inputs travel in the weight file under this prefix


@dataclass
class Compiled:
    program: Program
    text: str
    weights: bytes
    model: Model  # the IR the program was emitted from: quantized, shifted, tiled


def compile_source(source: Source, hw: Hardware, weights_file: str, options: CompileOptions | None = None,
                   calibration: list[tuple] | None = None, stages: Stages | None = None) -> Compiled:
    """Compile a PyTorch model: every stage. `options`: default CompileOptions(); `calibration`: input
    tuples (default: the example inputs)."""
    options = options or CompileOptions()
    stages = stages or Stages()
    captured = stages.run("capture", capture_model, source.module, source.example_inputs,
                          source.capture_path(options.frontend))
    lowered = [stages.lower(lower, captured, source.name)]
    del captured
    return _compile_lowered(lowered, hw, calibration or [source.example_inputs], source.example_inputs, weights_file,
                            options, stages)


def compile_model(model: Model, hw: Hardware, calibration, example_inputs, weights_file: str,
                  options: CompileOptions | None = None, stages: Stages | None = None) -> Compiled:
    """Compile a lowered model: the stages after `lower`. `calibration`: input tuples, for quantize's
    activation ranges and for checking the weight center."""
    return _compile_lowered([model], hw, calibration, example_inputs, weights_file, options, stages)


def _compile_lowered(lowered: list[Model], hw: Hardware, calibration, example_inputs, weights_file: str,
                     options: CompileOptions | None, stages: Stages | None) -> Compiled:
    """compile_model's stages. The float model comes in a one-element list that quantize takes it
    out of: a caller that hands over its only reference (compile_source) has its float weights
    freed once they are quantized, instead of kept alive by an argument until the end."""
    options = options or CompileOptions()
    stages = stages or Stages()
    calibration = tuple(tuple(np.asarray(x) for x in inputs) for inputs in calibration)
    model = stages.ir_pass(Quantize(calibration=calibration, **options.quantization()), lowered.pop(), hw)
    return compile_quantized(model, hw, calibration, example_inputs, weights_file, options, stages)


def compile_quantized(model: Model, hw: Hardware, calibration, example_inputs, weights_file: str,
                      options: CompileOptions | None = None, stages: Stages | None = None) -> Compiled:
    """The stages after quantize, on a model the quantize pass made with these options (one
    quantization, several configurations of the later stages: benchmarks/sme.py)."""
    options = options or CompileOptions()
    stages = stages or Stages(_passes_done=["lower", "quantize"], _ensured={"traced", "quantized"})
    calibration = tuple(tuple(np.asarray(x) for x in inputs) for inputs in calibration)
    # Center+Offset moves every filter's codes to its own center: a common weight center would be undone.
    # Differential cells hold q - 128, near zero for symmetric codes: a common center of the codes would
    # move every offset by the same amount and saturate the ADC (docs/adc.md), so `auto` shifts nothing there.
    # Fewer weight bits empty the top slices, which a common center (88..168) would fill again.
    center = options.weight_center
    if options.center_offset == "on" or (hw.differential and center == "auto") or options.weight_bits != 8:
        center = None
    model = stages.ir_pass(ShiftWeights(center, calibration, method=options.weight_shift), model, hw)
    model = stages.ir_pass(CenterOffset(options.center_offset == "on"), model, hw)
    model = stages.ir_pass(InputSlicing(options.input_slice_bits), model, hw)
    model = stages.ir_pass(DynamicPrecision(options.dynamic_precision == "on"), model, hw)
    model = stages.ir_pass(WeightBits(options.weight_bits, options.weight_bits_budget, calibration,
                                      options.squeeze_out != "off"), model, hw)
    model = stages.ir_pass(SliceSparsity(options.squeeze_out == "lossy", options.squeeze_out_budget, calibration),
                           model, hw)
    model = stages.ir_pass(SqueezeOut(options.squeeze_out != "off"), model, hw)
    model = stages.ir_pass(WeightSlicing(options.weight_slice_bits, options.weight_slice_budget, calibration), model, hw)
    model = stages.ir_pass(Tile(), model, hw)
    copies, packed = stages.run("replication", _plan, model, hw, options)
    schedule = stages.run("schedule", _schedule, model, hw, options, copies, packed)
    banks = stages.run("banks", plan_banks, model, hw, options.banks)
    return stages.run("emit", _emit, model, hw, schedule, banks, example_inputs, weights_file)


def _plan(model: Model, hw: Hardware, options: CompileOptions) -> tuple[dict[str, int] | None, frozenset[str]]:
    """Adaptive replication and write-round packing apply to the ARAS scheduler only (the naive one
    never replicates, and waits for every write anyway)."""
    if options.scheduler != "aras":
        return None, frozenset()
    copies, packed = plan(model, hw, options.replication == "adaptive", options.packing == "adaptive")
    return copies if options.replication == "adaptive" else None, packed


def _schedule(model: Model, hw: Hardware, options: CompileOptions, copies: dict[str, int] | None,
              packed: frozenset[str]):
    if options.scheduler == "aras":
        return aras_schedule(model, hw, copies, packed)
    return naive_schedule(model, hw)


def _emit(model: Model, hw: Hardware, schedule, banks, example_inputs, weights_file: str) -> Compiled:
    compute = emit_compute(model, schedule.bindings, schedule.write_tokens.get, banks)
    model = with_segments(model, {layer: len(pieces) for layer, pieces in schedule.bindings.items()})
    tensors = program_tensors(model)
    for value, x in zip(model.graph.inputs, example_inputs, strict=True):
        tensors[INPUT_PREFIX + value.name] = np.ascontiguousarray(np.asarray(x))
    data = weights_bytes(tensors)
    program = assemble(model, hw, schedule.write, compute, weights_file, hashlib.sha256(data).hexdigest())
    return Compiled(program, print_program(program), data, model)


def with_segments(model: Model, counts: dict[str, int]) -> Model:
    """The model with each crossbar layer's `segments` attribute set to the pieces the scheduler
    computes it in (packing can cut a layer that fits the chip: schedule/aras.py)."""
    layers = tuple(dataclasses.replace(layer, attrs=tuple({**dict(layer.attrs), "segments": counts[layer.name]}.items()))
                   if layer.name in counts and layer.attr("segments") != counts[layer.name] else layer
                   for layer in model.graph.layers)
    return model.replace(graph=dataclasses.replace(model.graph, layers=layers))


def optimizations(compiled: Compiled) -> str:
    """One line on what the paper's replication (V-B) and weight shifting (V-C) did to this program."""
    copies = {}
    for instr in compiled.program.compute:
        if instr.opcode == "mvm":
            first, last = instr["blocks"]
            copies[instr["layer"]] = len(instr["rows"]) // (last - first + 1)
    replicated = {layer: n for layer, n in copies.items() if n > 1}
    layers = f"{len(replicated)} layer{'s' if len(replicated) > 1 else ''}"
    parts = [f"replication: {layers}, up to {max(replicated.values())} copies" if replicated
             else "replication: none"]
    meta = dict(compiled.model.graph.meta)
    parts.append(f"weight center: {meta['weight_center']} ({meta['weight_shift']})" if "weight_center" in meta
                 else "weight center: none")
    return "; ".join(parts)


def weights_name(program_path: str) -> str:
    return os.path.splitext(os.path.basename(program_path))[0] + ".arasw"


def output_paths(program_path: str, weights_file: str) -> tuple[str, str]:
    """(program, weight file) paths, checked writable before any compiling."""
    weights_path = os.path.join(os.path.dirname(os.path.abspath(program_path)), weights_file)
    for path in (program_path, weights_path):
        check_output_path(path, "-o")
    return program_path, weights_path


def write_compiled(compiled: Compiled, program_path: str) -> str:
    """Write the program and its weight file side by side, atomically (both or neither); return
    the weight path."""
    _, weights_path = output_paths(program_path, compiled.program.weights[0])
    write_atomically([(weights_path, lambda f: f.write(compiled.weights)),
                      (program_path, lambda f: f.write(compiled.text.encode()))], "-o")
    return weights_path
