"""Frontend: every small zoo model lowers through torch.fx and torch.export to IR that
computes what PyTorch computes, prints deterministically and round-trips."""
import operator
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arasc.frontend import FrontendError, import_module
from arasc.ir import evaluate, parse_graph, print_graph
from arasc.loader import load_model

from conftest import SMALL_MODELS, built, lowered

DATA = Path(__file__).parent / "data"


def cosine(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_lowered_model_computes_what_pytorch_computes(name, frontend):
    module, inputs = built(name)
    model = lowered(name, frontend)
    with torch.no_grad():
        expected = module(*inputs)
    expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    got = evaluate(model, inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max())), float((g - e).abs().max())


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_round_trip_and_deterministic_text(name):
    model = lowered(name)
    text = print_graph(model.graph)
    assert parse_graph(text) == model.graph
    module, inputs = built(name)
    assert print_graph(import_module(module, inputs, name).graph) == text


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_both_frontends_agree_on_structure(name):
    fx, export = lowered(name, "fx").graph, lowered(name, "export").graph
    assert [layer.op for layer in fx.layers] == [layer.op for layer in export.layers]
    assert [layer.type for layer in fx.layers] == [layer.type for layer in export.layers]


def test_batch_norm_folds_into_convs():
    graph = lowered("resnet50-small").graph
    assert not any(layer.op == "batchnorm" for layer in graph.layers)
    convs = [layer for layer in graph.layers if layer.op == "conv2d"]
    assert convs and all(layer.weight("bias") is not None for layer in convs)


def test_densenet_keeps_batch_norm_that_follows_a_concat():
    graph = lowered("densenet161-small").graph
    users = graph.users()
    for layer in graph.layers:
        if layer.op == "batchnorm":
            producer = next((p for p in graph.layers if p.name == layer.inputs[0]), None)
            assert producer is None or producer.op != "conv2d" or len(users[producer.name]) > 1


def test_source_lines_point_at_the_model_file():
    graph = lowered("resnet50-small").graph
    locs = {str(layer.loc.file) for layer in graph.layers if layer.loc}
    assert locs == {"models/resnet.py"}


def test_attention_is_decomposed():
    ops = [layer.op for layer in lowered("bert-base-small").graph.layers]
    assert ops.count("matmul") == 2 * 2 and ops.count("softmax") == 2


def test_multihead_attention_module_is_decomposed():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()

        class Net(torch.nn.Module):
            def __init__(self, mha=mha):
                super().__init__()
                self.mha = mha

            def forward(self, x):
                return self.mha(x, x, x, need_weights=False)[0]

        x = torch.randn(2, 5, 16)
        for frontend in ("fx", "export"):
            model = import_module(Net().eval(), (x,), "mha", frontend)
            assert {layer.op for layer in model.graph.layers} >= {"linear", "matmul", "softmax"}
            with torch.no_grad():
                expected = Net().eval()(x)
            assert torch.allclose(evaluate(model, (x,))[0], expected, atol=1e-5)


def test_unsupported_op_names_op_node_and_line():
    with pytest.raises(FrontendError) as err:
        load_model(f"{DATA / 'unsupported_model.py'}:factory")
    message = str(err.value)
    assert "fft" in message and "%fft" in message
    assert "tests/data/unsupported_model.py:12" in message


def test_cli_reports_unsupported_op_with_status_2_and_no_traceback():
    result = subprocess.run([sys.executable, "-m", "arasc.cli", "ir", f"{DATA / 'unsupported_model.py'}:factory"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unsupported operation" in result.stderr and "unsupported_model.py:12" in result.stderr
    assert "Traceback" not in result.stderr


def test_fx_failure_falls_back_to_export():
    model = load_model(f"{DATA / 'untraceable_model.py'}:factory")
    assert [layer.op for layer in model.graph.layers] == ["linear", "relu"]
    with pytest.raises(FrontendError, match="symbolic_trace cannot trace"):
        load_model(f"{DATA / 'untraceable_model.py'}:factory", frontend="fx")


def test_saved_export_archive_loads(tmp_path):
    module, inputs = built("digits-cnn")
    path = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(module, inputs), path)
    model = load_model(str(path))
    assert model.graph.name == "digits"
    assert torch.allclose(evaluate(model, inputs)[0], module(*inputs), atol=1e-5)


def test_constant_subgraphs_fold():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.arange(12.0).reshape(3, 4))

        def forward(self, x):
            return x + operator.mul(self.table.sum(0), 2)

    model = import_module(Net(), (torch.randn(2, 4),), "fold")
    assert [layer.op for layer in model.graph.layers] == ["const", "add"]


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_unsupported_module_names_its_class_path_and_the_users_line(frontend):
    with pytest.raises(FrontendError) as err:
        load_model(f"{DATA / 'unsupported_module.py'}:factory", frontend=frontend)
    message = str(err.value)
    assert "Softplus" in message and "head.act" in message
    assert "tests/data/unsupported_module.py:12" in message
    assert "unknown source line" not in message


def test_library_models_get_their_source_line(tmp_path):
    """Frames inside site-packages/torchvision are not torch's own: the path starts with torch's
    folder name but not with that folder."""
    from arasc.frontend.errors import source_location

    torchvision_file = str(Path(torch.__file__).parent) + "vision/models/mobilenetv2.py"  # .../torchvision/...

    class Node:
        meta = {"stack_trace": f'File "{torchvision_file}", line 170, in forward\n'
                               f'  File "{torch.__file__}", line 3, in f'}
    assert source_location(Node())[1] == 170


def test_dropout_in_training_mode_is_an_error_not_an_identity():
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.5)  # training=True by default: random

    with pytest.raises(FrontendError, match="training mode"):
        import_module(Noisy(), (torch.randn(2, 3),))
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).eval()
    assert [layer.op for layer in import_module(module, (torch.randn(2, 3),)).graph.layers] == ["linear"]
