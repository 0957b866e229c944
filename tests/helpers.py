"""Compile a module, run it on the interpreter-simulator, and compare with PyTorch float."""
import tempfile

import numpy as np
import torch

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import default_hardware
from arasc.runtime.run import run_file


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compile_and_run(module, inputs, name, frontend="auto", calibration=None):
    """(interpreter output, PyTorch float output, the final compiled model) for a one-output model."""
    model = import_module(module, inputs, name, frontend)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{name}.aras"
        compiled = compile_model(model, default_hardware(), calibration or [tuple(inputs)], inputs,
                                 weights_name(path))
        write_compiled(compiled, path)
        (got,) = run_file(path).outputs.values()
    with torch.no_grad():
        expected = module(*inputs)
    return got, expected.numpy(), compiled.model
