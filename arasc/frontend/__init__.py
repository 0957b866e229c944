"""Frontend: PyTorch model -> layer IR (torch.fx, or torch.export where fx cannot trace)."""
from __future__ import annotations

import torch

from ..ir import Model, verify_model
from .errors import FrontendError
from .lower import Lowerer
from .trace import Captured, capture, capture_export


def import_module(module: torch.nn.Module, example_inputs: tuple, name: str = "model",
                  frontend: str = "auto") -> Model:
    """Trace `module` on `example_inputs` and lower it to a verified layer-IR model."""
    with torch.no_grad():
        model = Lowerer(capture(module, tuple(example_inputs), frontend), name).run()
    verify_model(model)
    return model


def import_exported(program: torch.export.ExportedProgram, name: str = "model") -> Model:
    """Lower a `torch.export` program (e.g. loaded from a .pt2 archive)."""
    with torch.no_grad():
        model = Lowerer(capture_export(program), name).run()
    verify_model(model)
    return model


__all__ = ["Captured", "FrontendError", "import_exported", "import_module"]
