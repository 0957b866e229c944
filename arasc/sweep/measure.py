"""One sweep point, as a task: build its chip, compile its program (or take it from the cache),
time the steady state, and score it on a data set where the spec asks; return its table row.

The figures are those `arasc run --report` gives (runtime/timing.py `summary`): the second of two
inferences on one chip, timing only (activations change no time, energy or write), so that write
pulses count against the cells the first inference left (paper VII-D). Accuracy runs the program
on the data set with the outputs computed (arasc/evaluate.py), with an ideal ADC or the chip's.

A worker process keeps the last two models it captured and lowered: points are ordered by model,
so a worker rarely captures a model twice."""
from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import HARDWARE, PROGRAM, ProgramCache, program_key
from .runner import error_text

FIGURES = ("inferences_per_second", "energy_per_inference_j", "energy_write_j", "energy_compute_j",
           "energy_static_j", "energy_memory_j", "adc_conversions", "write_pulses", "cells_written", "cells_skipped",
           "blocks_written", "peak_blocks_writing", "fraction_of_upper_bound", "upper_bound_inferences_per_second",
           "cycles", "lifespan_years", "most_writes_per_row", "weight_center", "compile_seconds", "run_seconds",
           "program_cached", "worker")
ACCURACY = ("accuracy_samples", "top1", "top5", "cosine_mean", "cosine_min", "accuracy_seconds")


@dataclass(frozen=True)
class Job:
    """What every point of one sweep shares; shipped to the workers once."""

    base_hardware: Any  # Hardware
    kinds: dict[str, str]  # axis name -> "model", "hardware" or "option"
    calibration: dict[str, np.ndarray]  # model -> samples, one per row
    calibration_digests: dict[str, str | None]
    datasets: dict[str, Any]  # model -> evaluate.Dataset
    adc: str  # "ideal" or "chip"
    cache_folder: str


def measure_point(point_id: str, values: tuple, job: Job) -> dict[str, Any]:
    """The point's row: status "ok" and its figures, or status "failed" and the error."""
    row: dict[str, Any] = {"point_id": point_id, **dict(values)}
    try:
        row.update(measure(dict(values), job))
        row["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - a failed point is a row of the table, not the end of the sweep
        row.update(status="failed", error=error_text(err))
    return row


def measure(values: dict[str, Any], job: Job) -> dict[str, Any]:
    from ..options import CompileOptions
    from ..runtime.report import run_summary
    from ..runtime.run import load_program, read_inputs, run_loaded
    from .spec import with_fields

    model = values["model"]
    hw = with_fields(job.base_hardware, {k: v for k, v in values.items() if job.kinds[k] == "hardware"})
    options = CompileOptions(**{k: v for k, v in values.items() if job.kinds[k] == "option"})
    key = program_key(model, _hardware_text(hw), options, job.calibration_digests.get(model))
    start = time.perf_counter()
    entry, compiled_now = ProgramCache(job.cache_folder).get_or_compile(
        key, functools.partial(_compile_into, model, hw, options, job.calibration.get(model)))
    compile_seconds = time.perf_counter() - start if compiled_now else 0.0
    start = time.perf_counter()
    path = str(entry / PROGRAM)
    program, weights, chip = load_program(path, str(entry / HARDWARE))
    result = run_loaded(program, weights, chip, read_inputs(program, weights, None), path, None, inferences=2,
                        compute=False)
    s = run_summary(result)
    e = s["energy_joules"]
    row = {"inferences_per_second": s["inferences_per_second"], "energy_per_inference_j": e["total"],
           "energy_write_j": e["write"], "energy_compute_j": e["compute"], "energy_static_j": e["static"],
           "energy_memory_j": e["memory"], "adc_conversions": s["adc"]["conversions"],
           **{k: s[k] for k in ("write_pulses", "cells_written", "cells_skipped", "blocks_written",
                                "peak_blocks_writing", "fraction_of_upper_bound",
                                "upper_bound_inferences_per_second", "cycles", "lifespan_years",
                                "most_writes_per_row")},
           "weight_center": ProgramCache.meta(entry)["weight_center"], "compile_seconds": compile_seconds,
           "run_seconds": time.perf_counter() - start, "program_cached": not compiled_now,
           "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if model in job.datasets:
        row.update(accuracy(program, weights, chip, job.datasets[model], job.adc))
    return row


def accuracy(program, weights, hw, dataset, adc: str) -> dict[str, Any]:
    from ..evaluate import check_outputs, metrics, run_samples

    start = time.perf_counter()
    check_outputs(dataset, program.outputs[0].type.shape)
    outputs = run_samples(program, weights, hw, dataset.inputs, 0, dataset.size,
                          hw.crossbar.adc_bits if adc == "chip" else None)
    return {"accuracy_samples": dataset.size, **metrics(outputs, dataset),
            "accuracy_seconds": time.perf_counter() - start}


def _hardware_text(hw) -> str:
    from ..isa.hardware import dumps_hardware

    return dumps_hardware(hw)


@functools.lru_cache(maxsize=2)
def _lowered(model: str):
    """(source, layer IR) of a MODEL argument, kept per worker process."""
    from ..frontend import capture_model, lower
    from ..loader import load_source

    source = load_source(model)
    return source, lower(capture_model(source.module, source.example_inputs, source.capture_path("auto")),
                         source.name)


def _compile_into(model: str, hw, options, samples: np.ndarray | None, folder: Path) -> dict:
    from ..compile import compile_model, compile_source, weights_name, write_compiled
    from ..loader import load_source

    path = str(folder / PROGRAM)
    if options.frontend == "auto":
        source, lowered = _lowered(model)
        compiled = compile_model(lowered, hw, _calibration(source.example_inputs, samples), source.example_inputs,
                                 weights_name(path), options)
    else:
        source = load_source(model)
        compiled = compile_source(source, hw, weights_name(path), options,
                                  _calibration(source.example_inputs, samples))
    write_compiled(compiled, path)
    (folder / HARDWARE).write_text(_hardware_text(hw))
    return {"weight_center": dict(compiled.model.graph.meta).get("weight_center", "none")}


def _calibration(example_inputs: tuple, samples: np.ndarray | None) -> list[tuple]:
    """The spec's calibration samples in batches of the traced batch size (as `--calib` gives them),
    or the example inputs."""
    if samples is None:
        return [tuple(example_inputs)]
    if len(example_inputs) != 1:
        raise ValueError(f"the model takes {len(example_inputs)} inputs; a calibration file holds one")
    shape = tuple(example_inputs[0].shape)
    batch = shape[0]
    if samples.ndim != len(shape) or tuple(samples.shape[1:]) != shape[1:] or len(samples) < batch:
        raise ValueError(f"calibration samples of shape {list(samples.shape)}, expected [N, "
                         f"{', '.join(map(str, shape[1:]))}] with N >= {batch} (the traced batch size)")
    samples = np.asarray(samples, dtype=np.asarray(example_inputs[0]).dtype)
    return [(samples[i:i + batch],) for i in range(0, len(samples) - batch + 1, batch)]
