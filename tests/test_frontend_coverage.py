"""The coverage table in docs/frontend.md: generated from the handler table, current, and every
row backed by a lowering example that is checked against PyTorch on both capture paths."""
import functools

import pytest
import torch
import zoo_libraries  # noqa: F401  (torchvision's stochastic depth is one of the rows)

from arasc.frontend import coverage
from arasc.frontend.lower import Lowerer
from arasc.frontend.trace import capture
from arasc.ir import evaluate, verify_model


@functools.cache
def lowered_examples():
    """name -> [(frontend, lowerer, model)] for every lowering example."""
    out = {}
    for name, (module, inputs) in coverage.examples().items():
        out[name] = []
        for frontend in ("fx", "export"):
            lowerer = Lowerer(capture(module, inputs, frontend), name.replace(" ", "_"))
            with torch.no_grad():
                model = lowerer.run()
            verify_model(model)
            out[name].append((frontend, lowerer, model))
    return out


@pytest.mark.parametrize("name", sorted(coverage.examples()))
def test_lowering_example_computes_what_pytorch_computes(name):
    module, inputs = coverage.examples()[name]
    with torch.no_grad():
        expected = module(*inputs)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    for frontend, _, model in lowered_examples()[name]:
        got = evaluate(model, inputs)
        assert len(got) == len(expected), frontend
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == e.dtype and g.shape == e.shape, frontend
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=frontend)


def test_every_row_of_the_table_has_a_lowering_example():
    used = {handler for runs in lowered_examples().values() for _, lowerer, _ in runs
            for handler, _ in lowerer.handled}
    missing = [names for handler, names in coverage.handler_groups().items() if handler not in used]
    assert not missing, f"handlers without a lowering example in arasc/frontend/coverage.py: {missing}"


def test_the_table_in_the_docs_is_current():
    text = coverage.DOC.read_text()
    assert f"{coverage.BEGIN}\n{coverage.table()}{coverage.END}" in text, \
        "docs/frontend.md is stale: run python -m arasc.frontend.coverage"
