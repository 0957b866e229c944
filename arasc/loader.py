"""Turn the MODEL argument of the CLI into a `Source`: the PyTorch model, its example inputs, a name.

MODEL is a zoo name (`arasc models`), `path/to/file.py:factory` (the factory returns a module
and its example inputs, or a module with an `example_inputs` attribute), a saved
`torch.export` archive (`.pt2`), or an ONNX model (`.onnx`, frontend/onnx_import.py)."""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

import torch

from . import models
from .frontend import FrontendError, capture_model, lower
from .frontend.errors import torch_reason
from .frontend.torchvision_ops import declare_torchvision_ops
from .ir import Model


@dataclass(frozen=True)
class Source:
    """A model as the user gave it: a torch module or a torch.export program, the example inputs it
    is traced with (and calibrated on, by default), and a name for the program."""

    module: torch.nn.Module | torch.export.ExportedProgram
    example_inputs: tuple
    name: str
    frontend: str | None = None  # the capture path this kind of model needs, if only one works

    def capture_path(self, asked: str) -> str:
        """The capture path for `asked` (the --frontend option)."""
        if self.frontend is None or asked == "auto":
            return self.frontend or asked
        if asked != self.frontend:
            raise ModelLoadError(f"{self.name}: this model is captured with --frontend {self.frontend}; "
                                 f"--frontend {asked} does not apply")
        return asked

    def reference_outputs(self) -> list[torch.Tensor]:
        """What PyTorch computes in float on the example inputs."""
        module = self.module.module() if isinstance(self.module, torch.export.ExportedProgram) else self.module
        with torch.no_grad():
            out = module(*self.example_inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]


class ModelLoadError(ValueError):
    """MODEL names nothing arasc can load."""


def load_model(spec: str, frontend: str = "auto") -> Model:
    """The layer IR of a MODEL argument, outside the driver (tests, benchmarks)."""
    source = load_source(spec)
    return lower(capture_model(source.module, source.example_inputs, source.capture_path(frontend)), source.name)


def load_source(spec: str) -> Source:
    """The Source a MODEL argument names."""
    if spec.endswith(".pt2"):
        return Source(*_load_pt2(spec))
    if spec.endswith(".onnx"):
        if not os.path.isfile(spec):
            raise ModelLoadError(f"{spec}: no such file")
        from .frontend.onnx_import import load_onnx

        # the ONNX module computes shapes in Python: only torch.export sees them as numbers
        module, inputs, name = load_onnx(spec)
        return Source(module, inputs, name, frontend="export")
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        return Source(*_load_factory(spec))
    if os.path.isfile(spec):
        raise ModelLoadError(f"{spec}: a file, but not a MODEL arasc loads: give path/to/file.py:factory or a "
                             f"torch.export archive ending in .pt2 (the layer IR text `arasc ir` prints is for "
                             f"reading only: it holds no weight values, so it cannot be loaded back)")
    try:
        entry = models.get(spec)
    except KeyError:
        raise ModelLoadError(f"unknown model {spec!r}: give a zoo name ({', '.join(models.ZOO)}), "
                             f"path/to/file.py:factory, a torch.export archive ending in .pt2, or an ONNX model ending in "
                             f".onnx") from None
    try:
        module, inputs = entry.build()
    except models.MissingPackage as err:
        raise ModelLoadError(f"{spec}: {err}") from None
    return Source(module, tuple(inputs), _ident(spec))


def _ident(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text)


def _load_pt2(path: str):
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: no such file")
    try:
        program = torch.export.load(path)
    except Exception as err:
        raise ModelLoadError(f"{path}: not a readable torch.export archive ({torch_reason(err)})") from None
    args, _ = program.example_inputs or ((), {})
    return program, tuple(args), _ident(os.path.splitext(os.path.basename(path))[0])


def _load_factory(spec: str):
    path, factory_name = spec.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: no such file (from MODEL {spec!r})")
    name = _ident(os.path.splitext(os.path.basename(path))[0])
    module_spec = importlib.util.spec_from_file_location(f"arasc_user_{name}", path)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"{path}: Python cannot import this file")
    source = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = source
    declare_torchvision_ops()   # a model file may import torchvision, or transformers that imports it
    try:
        module_spec.loader.exec_module(source)
    except (Exception, SystemExit) as err:  # the user's code: whatever it raises is the model's fault
        raise ModelLoadError(f"{path}: importing it failed: {torch_reason(err)}") from None
    factory = getattr(source, factory_name, None)
    if not callable(factory):
        raise ModelLoadError(f"{path} has no callable {factory_name!r}")
    try:
        result = factory()
    except (Exception, SystemExit) as err:
        raise ModelLoadError(f"{spec}: the factory raised {torch_reason(err)}") from None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        module, inputs = result
    elif isinstance(result, torch.nn.Module) and hasattr(result, "example_inputs"):
        module, inputs = result, result.example_inputs
    else:
        raise ModelLoadError(f"{spec}: the factory must return (module, example_inputs), or a module with an "
                             f"`example_inputs` attribute; it returned {type(result).__name__}")
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return module, inputs, name


__all__ = ["FrontendError", "ModelLoadError", "Source", "load_model", "load_source"]
