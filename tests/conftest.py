import functools

import pytest
import torch

from arasc import models
from arasc.frontend import import_module

SMALL_MODELS = ["vgg16-small", "resnet50-small", "densenet161-small", "bert-base-small", "bert-large-small",
                "digits-cnn"]


@functools.cache
def built(name):
    """(module, example inputs) of a zoo model, built once per test process."""
    return models.get(name).build()


@functools.cache
def lowered(name, frontend="auto"):
    module, inputs = built(name)
    return import_module(module, inputs, name, frontend)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)


@functools.cache
def compiled(name):
    """(compiled program, its path, the quantized tiled model) for a small zoo model, once per process."""
    import tempfile

    from arasc.compile import compile_model, weights_name, write_compiled
    from arasc.isa.hardware import default_hardware

    module, inputs = built(name)
    folder = tempfile.mkdtemp(prefix="arasc-test-")
    path = f"{folder}/{name}.aras"
    result = compile_model(lowered(name), default_hardware(), [inputs], inputs, weights_name(path))
    write_compiled(result, path)
    return result, path
