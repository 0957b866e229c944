"""The sweep spec: a TOML file naming models, hardware fields and compile options to vary.

    models = ["digits-cnn", "resnet50-small"]     # zoo names or path/to/file.py:factory
    seed = 0                                      # for --samples (default 0)
    sampling = "latin-hypercube"                  # or "random": how --samples N draws (default LHS)

    [hardware]
    base = "aras-default"                         # a bundled chip or a file beside the spec (default aras-default)
    chip.pes = [8, 16, 32, 96]                    # a list: one axis of the sweep
    memory.bandwidth_bytes_per_s = {from = 4e9, to = 32e9, steps = 4, scale = "log"}   # a range
    gbuffer.banks_bytes = [[65536], [65536, 1048576]]   # an array field: a list of arrays
    crossbar.adc_bits = 6                         # one value: fixed for every point

    [options]                                     # CompileOptions fields (arasc/options.py), as the flags spell them
    replication = ["adaptive", "none"]
    weight_center = "none"

    [calibration]                                 # optional: calibration inputs per model (--calib)
    digits-cnn = "digits-calib.npy"

    [accuracy]                                    # optional: a dataset per model (arasc evaluate's format)
    datasets = {digits-cnn = "digits-test.npz"}
    adc = "ideal"                                 # or "chip": model the point's crossbar.adc_bits

Hardware fields are the hardware file's (isa/hardware.py, docs/hardware.md), checked with its own
rules; options are CompileOptions fields, checked with the flags' parsers. Every error is one
paragraph naming the spec file and the field (SweepSpecError, exit 2)."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from typing import Any

from ..isa.hardware import (
    BUNDLED_HARDWARE,
    Hardware,
    HardwareConfigError,
    bundled_hardware,
    dumps_hardware,
    load_hardware,
    loads_hardware,
)
from ..options import CompileOptions

SAMPLINGS = ("latin-hypercube", "random")
ADC_MODES = ("ideal", "chip")
TOP_LEVEL = ("models", "seed", "sampling", "hardware", "options", "calibration", "accuracy")


class SweepSpecError(ValueError):
    """A spec that cannot be swept: `<spec>: <field>: problem`, one paragraph, exit 2."""


@dataclass(frozen=True)
class Axis:
    """One thing the sweep varies (or fixes, with one value): a model, a hardware field ("chip.pes")
    or a compile option ("replication"). Either a list of `values`, or a range `low`..`high` that a
    grid cuts into `steps` (linear or log) and sampling draws from continuously."""

    name: str
    kind: str  # "model", "hardware" or "option"
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    steps: int = 0
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return not self.values

    def grid(self) -> tuple:
        """The values a full product takes; a range needs `steps`."""
        if self.values:
            return self.values
        if self.steps == 1:
            return (self.number(self.low),)
        cut = [self._at_fraction(i / (self.steps - 1)) for i in range(self.steps)]
        return tuple(dict.fromkeys(cut))  # integer rounding can make two steps one

    def at(self, u: float) -> Any:
        """The value at u in [0, 1): a list is cut into equal strata, a range is continuous."""
        if self.values:
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        return self._at_fraction(u)

    def _at_fraction(self, u: float) -> Any:
        if self.log:
            return self.number(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return self.number(self.low + u * (self.high - self.low))

    def number(self, x: float) -> Any:
        return int(round(x)) if self.integer else float(x)


@dataclass(frozen=True)
class Spec:
    path: str
    base_hardware: Hardware
    base_name: str
    axes: tuple[Axis, ...]  # the models first, then hardware fields, then options
    calibration: dict[str, str]  # model -> .npy path
    datasets: dict[str, str]  # model -> dataset path (.npz or folder)
    adc: str
    seed: int
    sampling: str

    @property
    def swept(self) -> tuple[Axis, ...]:
        """The axes with more than one value (or a range)."""
        return tuple(a for a in self.axes if a.is_range or len(a.values) > 1)


def load_spec(path: str) -> Spec:
    """Read and check a spec file."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as err:
        raise SweepSpecError(f"{path}: cannot read the sweep spec ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepSpecError(f"{path}: TOML syntax error: {err}") from None
    return parse_spec(document, path)


def parse_spec(document: dict, path: str) -> Spec:
    folder = os.path.dirname(os.path.abspath(path))

    def fail(field: str, problem: str) -> SweepSpecError:
        return SweepSpecError(f"{path}: {field}: {problem}")

    for key in document:
        if key not in TOP_LEVEL:
            raise fail(key, f"unknown key; a spec has {', '.join(TOP_LEVEL)}")
    models = document.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
        raise fail("models", "expected a non-empty list of model names (zoo names, see `arasc models`, or "
                   "path/to/file.py:factory)")
    models = [_model_path(m, folder) for m in models]
    for model in models:
        _check_model(model, fail)
    if len(set(models)) != len(models):
        raise fail("models", "a model is listed twice")
    seed = document.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise fail("seed", f"expected an integer >= 0, got {seed!r}")
    sampling = document.get("sampling", SAMPLINGS[0])
    if sampling not in SAMPLINGS:
        raise fail("sampling", f"{sampling!r}; allowed: {', '.join(SAMPLINGS)}")

    hardware = _table(document, "hardware", fail)
    base_name, base = _base_hardware(hardware.get("base", "aras-default"), folder, fail)
    axes = [Axis("model", "model", tuple(models))]
    axes += _hardware_axes(hardware, base, fail)
    axes += _option_axes(_table(document, "options", fail), fail)

    calibration = {model: _npy(_file(value, folder, fail, f"[calibration] {model}"), fail, f"[calibration] {model}")
                   for model, value in _table(document, "calibration", fail).items()}
    accuracy = _table(document, "accuracy", fail)
    for key in accuracy:
        if key not in ("datasets", "adc"):
            raise fail(f"[accuracy] {key}", "unknown key; [accuracy] has datasets and adc")
    datasets_table = accuracy.get("datasets", {})
    if not isinstance(datasets_table, dict):
        raise fail("[accuracy] datasets", "expected a table of model = dataset path")
    datasets = {model: _file(value, folder, fail, f"[accuracy] datasets.{model}", folder_ok=True)
                for model, value in datasets_table.items()}
    for table, given in (("[calibration]", calibration), ("[accuracy] datasets", datasets)):
        for model in given:
            if _model_path(model, folder) not in models:
                raise fail(f"{table} {model}", "not one of the spec's models")
    calibration = {_model_path(m, folder): p for m, p in calibration.items()}
    datasets = {_model_path(m, folder): p for m, p in datasets.items()}
    adc = accuracy.get("adc", "ideal")
    if adc not in ADC_MODES:
        raise fail("[accuracy] adc", f"{adc!r}; allowed: ideal (no ADC error), chip (the point's "
                   f"crossbar.adc_bits)")
    return Spec(path, base, base_name, tuple(axes), calibration, datasets, adc, seed, sampling)


def _model_path(model: str, folder: str) -> str:
    """A file model relative to the spec's folder; zoo names as they are."""
    file, sep, rest = model.partition(":")
    if file.endswith((".py", ".pt2", ".onnx")) and not os.path.isabs(file):
        return os.path.join(folder, file) + sep + rest
    return model


def _check_model(model: str, fail) -> None:
    """A zoo name, or a model file that exists (what it holds is checked when a point loads it)."""
    file = model.partition(":")[0]
    if file.endswith((".py", ".pt2", ".onnx")):
        if not os.path.isfile(file):
            raise fail("models", f"{file}: no such file")
        return
    from .. import models as zoo

    if model not in zoo.ZOO:
        raise fail("models", f"{model!r}: not a zoo model (see `arasc models`) nor path/to/file.py:factory, a .pt2 "
                   f"or an .onnx file")


def _table(document: dict, name: str, fail) -> dict:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise fail(name, f"expected a table [{name}]")
    return value


def _file(value: Any, folder: str, fail, field: str, folder_ok: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise fail(field, "expected a file path")
    path = value if os.path.isabs(value) else os.path.join(folder, value)
    if not (os.path.isfile(path) or (folder_ok and os.path.isdir(path))):
        raise fail(field, f"{path}: no such file")
    return path


def _npy(path: str, fail, field: str) -> str:
    """A calibration file: an .npy of numbers, one sample per row (its header is read, not its data)."""
    import numpy as np

    try:
        samples = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy raises many kinds on a damaged file
        raise fail(field, f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from None
    if not isinstance(samples, np.ndarray) or samples.dtype.kind not in "fiub" or samples.ndim < 1:
        raise fail(field, f"{path}: not an .npy array of numbers, one sample per row")
    return path


def _base_hardware(value: Any, folder: str, fail) -> tuple[str, Hardware]:
    if not isinstance(value, str):
        raise fail("[hardware] base", "expected a bundled chip's name or a hardware file")
    path = value if os.path.isabs(value) else os.path.join(folder, value)
    try:
        if value in BUNDLED_HARDWARE and not os.path.exists(path):
            return value, bundled_hardware(value)
        if not os.path.isfile(path):
            raise fail("[hardware] base", f"{value}: neither a bundled chip ({', '.join(BUNDLED_HARDWARE)}) nor a "
                       f"file")
        return path, load_hardware(path)
    except HardwareConfigError as err:
        raise fail("[hardware] base", str(err)) from None


def _hardware_axes(hardware: dict, base: Hardware, fail) -> list[Axis]:
    axes = []
    tables = {f.name: f.type for f in dataclasses.fields(Hardware)}
    for table, fields_given in hardware.items():
        if table == "base":
            continue
        if table not in tables:
            raise fail(f"[hardware] {table}", f"no such table in a hardware file; the tables: {', '.join(tables)}")
        if not isinstance(fields_given, dict):
            raise fail(f"[hardware] {table}", f"expected fields of [{table}], e.g. {table}.FIELD = [...]")
        section = getattr(base, table)
        known = {f.name: f for f in dataclasses.fields(section)}
        for name, given in fields_given.items():
            field = f"[hardware] {table}.{name}"
            if name not in known:
                raise fail(field, f"no such field of [{table}]; its fields: {', '.join(known)}")
            axis = _hardware_axis(f"{table}.{name}", known[name].metadata["rule"].kind, given, fail, field)
            for value in axis.values or (axis.number(axis.low), axis.number(axis.high)):
                check_hardware_value(base, axis.name, value, fail, field)
            axes.append(axis)
    return axes


def _hardware_axis(name: str, kind: type, given: Any, fail, field: str) -> Axis:
    if isinstance(given, dict):
        return _range_axis(name, kind, given, fail, field)
    is_list_of_values = isinstance(given, list) and (kind is not tuple or all(isinstance(v, list) for v in given))
    values = given if is_list_of_values else [given]
    if not values:
        raise fail(field, "an empty list: give at least one value")
    converted = []
    for value in values:
        number = _as_kind(kind, value)
        if number is None:
            raise fail(field, f"{value!r} is not {_KIND_NAMES[kind]}")
        converted.append(number)
    if len(set(converted)) != len(converted):
        raise fail(field, "a value is listed twice")
    return Axis(name, "hardware", tuple(converted))


def _range_axis(name: str, kind: type, given: dict, fail, field: str) -> Axis:
    if kind not in (int, float):
        raise fail(field, "a range ({from, to, steps}) needs a numeric field; give a list of values")
    for key in given:
        if key not in ("from", "to", "steps", "scale"):
            raise fail(field, f"unknown range key {key!r}; a range has from, to, steps (for a grid) and scale "
                       f"(linear or log)")
    low, high = _as_kind(kind, given.get("from")), _as_kind(kind, given.get("to"))
    steps, scale = given.get("steps", 0), given.get("scale", "linear")
    if low is None or high is None or not low < high:
        raise fail(field, f"a range needs {_KIND_NAMES[kind]} from < to")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise fail(field, f"steps: expected an integer >= 1 (0 or absent: sampled with --samples only), got {steps!r}")
    if scale not in ("linear", "log") or (scale == "log" and low <= 0):
        raise fail(field, f"scale: {scale!r}; allowed: linear, log (with from > 0)")
    return Axis(name, "hardware", (), float(low), float(high), steps, scale == "log", kind is int)


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", tuple: "an array of integers"}


def _as_kind(kind: type, value: Any) -> Any:
    """`value` as the field's Python type, or None if its TOML type is wrong (bool is no number)."""
    if isinstance(value, bool):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    if kind is float:
        return float(value) if isinstance(value, (int, float)) else None
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def with_fields(base: Hardware, values: dict[str, Any]) -> Hardware:
    """`base` with hardware fields ("table.field") replaced, checked by the hardware loader."""
    tables: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        table, field = name.split(".")
        tables.setdefault(table, {})[field] = value
    changed = dataclasses.replace(base, **{t: dataclasses.replace(getattr(base, t), **f) for t, f in tables.items()})
    return loads_hardware(dumps_hardware(changed), source="the point's hardware")


def check_hardware_value(base: Hardware, name: str, value: Any, fail, field: str) -> None:
    """One field's value, alone on the base chip, as the hardware loader would take it."""
    try:
        with_fields(base, {name: value})
    except HardwareConfigError as err:
        message = str(err).removeprefix("the point's hardware: ")
        raise fail(field, f"{value!r}: {message}") from None


def _option_axes(options: dict, fail) -> list[Axis]:
    known = {f.name: f for f in dataclasses.fields(CompileOptions)}
    axes = []
    for name, given in options.items():
        field = f"[options] {name}"
        if name not in known:
            raise fail(field, f"not a compile option; the options: {', '.join(known)}")
        values = given if isinstance(given, list) else [given]
        if not values:
            raise fail(field, "an empty list: give at least one value")
        parsed = [_option_value(known[name], value, fail, field) for value in values]
        if len(set(map(repr, parsed))) != len(parsed):
            raise fail(field, "a value is listed twice")
        axes.append(Axis(name, "option", tuple(parsed)))
    return axes


def _option_value(f: dataclasses.Field, value: Any, fail, field: str) -> Any:
    """A value as its flag would give it: the flag's parser, or one of its choices."""
    meta = f.metadata
    if isinstance(value, (bool, list, dict)):
        raise fail(field, f"{value!r}: expected a value of the flag --{f.name.replace('_', '-')}")
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise fail(field, f"{value!r}; allowed: {', '.join(meta['choices'])}")
        return value
    try:
        parsed = meta["parse"](str(value)) if meta["parse"] is not None else value
        CompileOptions(**{f.name: parsed})
    except (argparse.ArgumentTypeError, ValueError) as err:
        raise fail(field, str(err)) from None
    return parsed
