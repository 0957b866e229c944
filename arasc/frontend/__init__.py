"""Frontend: PyTorch model -> layer IR (torch.fx, or torch.export where fx cannot trace).

Two steps, which the driver (`arasc/compile.py`) runs as its first two stages: `capture_model`
(a graph with static shapes) and `lower` (the verified layer IR)."""
from __future__ import annotations

import torch

from ..ir import Model, verify_model
from .errors import FrontendError
from .lower import Lowerer
from .trace import Captured, capture, capture_export


def capture_model(module: torch.nn.Module | torch.export.ExportedProgram, example_inputs: tuple,
                  frontend: str = "auto") -> Captured:
    """The graph of a module (traced on `example_inputs`) or of a torch.export program."""
    if isinstance(module, torch.export.ExportedProgram):
        return capture_export(module)
    return capture(module, tuple(example_inputs), frontend)


def lower(captured: Captured, name: str = "model") -> Model:
    """The verified layer IR of a captured graph."""
    with torch.no_grad():
        model = Lowerer(captured, name).run()
    verify_model(model)
    return model


def import_module(module: torch.nn.Module, example_inputs: tuple, name: str = "model",
                  frontend: str = "auto") -> Model:
    """Trace `module` on `example_inputs` and lower it to a verified layer-IR model."""
    return lower(capture_model(module, example_inputs, frontend), name)


def import_exported(program: torch.export.ExportedProgram, name: str = "model") -> Model:
    """Lower a `torch.export` program (e.g. loaded from a .pt2 archive)."""
    return lower(capture_export(program), name)


__all__ = ["Captured", "FrontendError", "capture_model", "import_exported", "import_module", "lower"]
