"""`arasc reproduce`: the paper's evaluation (section VII) in one command.

For each zoo model it compiles and times the four configurations of the paper's Figs. 13-15
(baseline, + adaptive bank selection, + adaptive replication, + partial weight reuse), the
`paper` profile, the same program with attention's products on the 64-lane SFU, and the
TPU-like accelerator of VII-E (arasc/tpu.py). Then docs/paper.md and its figures are written
from the measurements (arasc/paper_report.py). Each measurement is kept as JSON in the cache
folder, so `--reuse` rewrites the document without measuring again.

Two profiles (docs/paper.md compares them side by side):
- `default`: the default chip (isa/aras-default.toml) with every optimization; the paper's
  baseline is the same scheduler on isa/baseline-15x256k.toml, no bank ILP, no replication, no
  shifting.
- `paper`: isa/aras-paper.toml with `--replication none --weight-center 88`: the paper's
  absolute throughputs (VII-B) are arasc's without replication (issue 13), and the paper
  shifts every network's weights (V-C), where `auto` leaves some unshifted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .isa.atomic import write_atomically
from .isa.hardware import bundled_hardware, dumps_hardware, loads_hardware
from .options import CompileOptions

MODELS = ("vgg16", "resnet50", "densenet161", "bert-base", "bert-large")


@dataclass(frozen=True)
class Config:
    name: str
    hardware: str
    options: CompileOptions


CONFIGS = (
    Config("baseline", "baseline-15x256k", CompileOptions(banks="greedy", replication="none", weight_center=None)),
    Config("+bank selection", "aras-default", CompileOptions(replication="none", weight_center=None)),
    Config("+replication", "aras-default", CompileOptions(weight_center=None)),
    Config("+weight reuse", "aras-default", CompileOptions(weight_shift="clip")),
)
PAPER_PROFILE = Config("paper profile", "aras-paper", CompileOptions(replication="none", weight_center=88,
                                                                     weight_shift="clip"))
ALL = CONFIGS[-1].name   # the configuration with every optimization


def cache_folder(given: str | None) -> Path:
    """Where measurements and SCALE-Sim's environment live: --cache, or ~/.cache/arasc."""
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "arasc"


def on_sfu(hw):
    """The same chip with attention's products on the SFU's lanes (the [matmul] table)."""
    return loads_hardware(dumps_hardware(dataclasses.replace(hw, matmul=dataclasses.replace(hw.matmul, unit="sfu"))))


def measure(model_name: str, model, inputs, config: Config, outputs: bool) -> tuple[dict, object]:
    """Compile `model` under `config` and time its steady state (second inference)."""
    from .compile import compile_model, weights_name, write_compiled
    from .runtime.report import run_summary
    from .runtime.run import run_file

    hw = bundled_hardware(config.hardware)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{model_name}.aras"
        start = time.perf_counter()
        compiled = compile_model(model, hw, [inputs], inputs, weights_name(path), config.options)
        write_compiled(compiled, path)
        compile_s = time.perf_counter() - start
        center = dict(compiled.model.graph.meta).get("weight_center", "none")
        start = time.perf_counter()
        result = run_file(path, inferences=2, compute=outputs)
        run_s = time.perf_counter() - start
    record = run_summary(result)
    record.update(config=config.name, hardware=config.hardware, model=model_name, weight_center=center,
                  options=config.options.changed(), compile_seconds=compile_s, run_seconds=run_s,
                  mvm_segments=sum(1 for i in result.program.compute if i.opcode == "mvm"))
    return record, result


def extras(record: dict, result, hw) -> None:
    """On the all-optimizations program: attention on the 64-lane SFU, and the TPU-like chip."""
    from .runtime.report import run_summary
    from .runtime.run import execute, read_inputs
    from .tpu import simulate

    program, weights = result.program, result.machine.w
    sfu = execute(program, weights, on_sfu(hw), read_inputs(program, weights, None), machine=result.machine)
    s = run_summary(sfu)
    record["sfu_attention"] = {k: s[k] for k in ("inferences_per_second", "fraction_of_upper_bound",
                                                 "energy_joules", "activation_matmul")}
    tpu = simulate(program, hw)
    record["tpu"] = {"seconds": tpu.seconds, "inferences_per_second": 1 / tpu.seconds, "energy_joules": tpu.energy,
                     "layers": [dataclasses.asdict(layer) for layer in tpu.layers]}


def outputs_cosine(a, b) -> float:
    from .runtime.report import cosine

    return min(cosine(x, y) for x, y in zip(a.outputs.values(), b.outputs.values(), strict=True))


def run_model(name: str, progress) -> list[dict]:
    """Every measurement of one zoo model."""
    from . import models
    from .frontend import import_module

    progress(f"{name}: building and capturing")
    module, inputs = models.get(name).build()
    model = import_module(module, inputs, name)
    del module
    records, results = [], {}
    for config in CONFIGS + (PAPER_PROFILE,):
        progress(f"{name}: {config.name}")
        keep_outputs = config.name in ("+replication", ALL)
        try:
            record, result = measure(name, model, inputs, config, keep_outputs)
            if config.name == ALL:
                extras(record, result, bundled_hardware(config.hardware))
        except Exception as err:  # noqa: BLE001 - a failed measurement is reported in the document, not hidden
            record, result = {"config": config.name, "model": name, "error": f"{type(err).__name__}: {err}"}, None
        if keep_outputs and result is not None:
            results[config.name] = result
        records.append(record)
        progress(None)
    if len(results) == 2:
        shifted = next(r for r in records if r["config"] == ALL)
        shifted["cosine_to_unshifted"] = outputs_cosine(results[ALL], results["+replication"])
    return records


def reproduce(models: tuple[str, ...], cache: Path, reuse: bool, out: str, figures: str, scalesim: bool,
              quiet: bool = False) -> float:
    """Measure (or reuse) every model, write `out` and the figures; return the seconds taken."""
    from .paper_report import write_paper

    start = time.perf_counter()
    results_dir = cache / "reproduce"
    results_dir.mkdir(parents=True, exist_ok=True)
    todo = [m for m in models if not (reuse and (results_dir / f"{m}.json").exists())]
    steps = len(todo) * (len(CONFIGS) + 1)
    with _Bar(steps, quiet) as bar:
        for name in todo:
            records = run_model(name, bar.update)
            data = (json.dumps(records, indent=1, default=float) + "\n").encode()
            write_atomically([(str(results_dir / f"{name}.json"), partial(_write, data))], "--cache")
    measured = {m: json.loads((results_dir / f"{m}.json").read_text()) for m in models}
    check = None
    if scalesim:
        from .paper_report import complete
        from .scalesim_check import ScaleSimError, cross_check

        try:
            check = cross_check(cache, complete(measured))
        except ScaleSimError as err:   # the document says so; the measurements still count
            check = {"error": str(err)}
    seconds = time.perf_counter() - start
    write_paper(measured, out, figures, check, (seconds, len(todo)) if todo else None)
    return seconds


def _write(data: bytes, f) -> None:
    f.write(data)


class _Bar:
    """A progress bar over the compiles and runs, on stdout: the CLI collects stderr while a command
    runs (arasc/cli.py), and this bar is the command's output. A line per step when stdout is not
    a terminal (a log)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.done = total, quiet, 0
        self.rich: Any = None

    def __enter__(self):
        if not self.quiet and sys.stdout.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console())
            self.rich.__enter__()
            self.task = self.rich.add_task("reproduce", total=self.total)
        return self

    def update(self, label: str | None) -> None:
        """`label`: a step begins; None: the step ended."""
        if label is None:
            self.done += 1
            if self.rich is not None:
                self.rich.update(self.task, advance=1)
            return
        if self.rich is not None:
            self.rich.update(self.task, description=label)
        elif not self.quiet:
            print(f"[{self.done}/{self.total}] {label}", flush=True)

    def __exit__(self, *exc):
        if self.rich is not None:
            self.rich.__exit__(*exc)
