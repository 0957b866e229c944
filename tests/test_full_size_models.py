"""Full-size zoo models through the frontend: parameter counts and IR round trip.
(Numerics of full-size models are checked in benchmarks; here the small variants do that.)"""
import gc

import pytest

from arasc import models
from arasc.frontend import import_module
from arasc.ir import parse_graph, print_graph
from arasc.summary import summarize

# Weights of conv2d + linear layers: DESIGN.md section 2's table (138.3 M, 25.5 M, 28.5 M, 85.5 M, 303 M).
CROSSBAR_WEIGHTS_M = {"vgg16": 138.3, "resnet50": 25.5, "densenet161": 28.5, "bert-base": 85.5, "bert-large": 303.0}


@pytest.mark.parametrize("name", list(CROSSBAR_WEIGHTS_M))
def test_full_model_lowers_counts_and_round_trips(name):
    entry = models.get(name)
    module, inputs = entry.build()
    model = import_module(module, inputs, name)
    del module
    gc.collect()
    summary = summarize(model)
    assert summary.source_params == entry.reference_params
    assert round(summary.crossbar_weights / 1e6, 1) == pytest.approx(CROSSBAR_WEIGHTS_M[name], abs=0.1)
    assert parse_graph(print_graph(model.graph)) == model.graph
