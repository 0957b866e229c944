"""The compiler driver, top to bottom: frontend model -> passes -> schedule -> `.aras` program.

    quantize (INT8, DESIGN.md 3) -> tile (128x128 blocks) -> schedule (paper IV, with adaptive
    replication V-B) -> emit, with Gbuffer banks chosen per layer (paper V-A)

Writing is atomic: the weight file and the program text go to temporary names first and are
renamed into place only when both are complete, so a failure never leaves a half-written file."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .backend.emit import assemble, emit_compute, program_tensors
from .ir import Model
from .isa.atomic import check_output_path, write_atomically
from .isa.hardware import Hardware
from .isa.printer import print_program
from .isa.program import Program
from .isa.weights import weights_bytes
from .passes import Stage, default_pipeline, run_pipeline
from .schedule.aras import aras_schedule
from .schedule.naive import naive_schedule
from .schedule.replication import replication_factors

SCHEDULERS = {"naive": naive_schedule, "aras": aras_schedule}
INPUT_PREFIX = "input:"  # example inputs travel in the weight file under this prefix


@dataclass
class Compiled:
    program: Program
    text: str
    weights: bytes
    stages: list[Stage]


def compile_model(model: Model, hw: Hardware, calibration, example_inputs, weights_file: str,
                  scheduler: str = "aras", banks: str = "ilp", replication: str = "adaptive",
                  weight_center: int | str | None = "auto", weight_shift: str = "fit",
                  quantization: dict | None = None) -> Compiled:
    """`replication` "adaptive" (paper V-B) or "none"; the naive scheduler never replicates.
    `weight_center` a code, "auto" or None, and `weight_shift` "fit" or "clip": weight-mean
    shifting (paper V-C, arasc/passes/shift_weights.py). `quantization`: the options of the
    quantize pass (arasc/passes/quantize.py), its defaults where absent."""
    stages = run_pipeline(model, hw, default_pipeline(calibration, weight_center, weight_shift, quantization))
    final = stages[-1].model
    if scheduler == "aras":
        schedule = aras_schedule(final, hw, replication_factors(final, hw) if replication == "adaptive" else None)
    else:
        schedule = SCHEDULERS[scheduler](final, hw)
    compute = emit_compute(final, hw, schedule.bindings, schedule.write_tokens.get, banks)
    tensors = program_tensors(final)
    for value, x in zip(final.graph.inputs, example_inputs):
        tensors[INPUT_PREFIX + value.name] = np.ascontiguousarray(np.asarray(x))
    data = weights_bytes(tensors)
    program = assemble(final, hw, schedule.write, compute, weights_file, hashlib.sha256(data).hexdigest())
    return Compiled(program, print_program(program), data, stages)


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
    meta = dict(compiled.stages[-1].model.graph.meta)
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
