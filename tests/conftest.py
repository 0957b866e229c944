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
