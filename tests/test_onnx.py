"""ONNX intake: models exported with torch.onnx compile to programs whose outputs match the
programs compiled from the PyTorch module itself; unsupported ONNX nodes are named."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cosine

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import FrontendError, import_module
from arasc.isa.hardware import default_hardware
from arasc.loader import load_model
from arasc.runtime.run import run_file

from conftest import built

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # torch.onnx.export's exporter

sys.path.insert(0, str(Path(__file__).parent / "data"))
from families import FAMILIES  # noqa: E402


def run_program(model, inputs, folder, name):
    path = f"{folder}/{name}.aras"
    write_compiled(compile_model(model, default_hardware(), [tuple(inputs)], inputs, weights_name(path)), path)
    (out,) = run_file(path).outputs.values()
    return out


@pytest.mark.parametrize("name", ["digits-cnn", "gpt2"])
def test_exported_onnx_compiles_to_the_same_outputs_as_pytorch(name, tmp_path):
    module, inputs = built(name) if name == "digits-cnn" else FAMILIES[name]()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, inputs, str(path), dynamo=True, verbose=False)
    from_onnx = load_model(str(path))
    traced = import_module(module, inputs, name)
    onnx_out = run_program(from_onnx, inputs, tmp_path, "onnx")
    torch_out = run_program(traced, inputs, tmp_path, "torch")
    with torch.no_grad():
        expected = module(*inputs).numpy()
    assert onnx_out.shape == torch_out.shape == expected.shape
    print(f"{name}: ONNX program vs PyTorch program: cosine {cosine(onnx_out, torch_out):.5f}, "
          f"identical {np.array_equal(onnx_out, torch_out)}")
    assert cosine(onnx_out, torch_out) >= 0.995
    assert cosine(onnx_out, expected) >= 0.99
    # top-1 per row (digits: per image; the random-init language model: per position, near ties)
    agree = (onnx_out.reshape(-1, onnx_out.shape[-1]).argmax(-1) == torch_out.reshape(-1, torch_out.shape[-1])
             .argmax(-1)).mean()
    assert agree >= (1.0 if name == "digits-cnn" else 0.75)


def _model_with(op_type, node_name, tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    relu = helper.make_node("Relu", ["x"], ["h"], name="first")
    odd = helper.make_node(op_type, ["h"], ["y"], name=node_name)
    graph = helper.make_graph([relu, odd], "g", [x], [y])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_unsupported_onnx_op_names_the_node_and_op_type(tmp_path):
    path = _model_with("Softsign", "my_softsign", tmp_path)
    with pytest.raises(FrontendError) as err:
        load_model(str(path))
    assert "'my_softsign'" in str(err.value) and "op type Softsign" in str(err.value) and str(path) in str(err.value)
    result = subprocess.run([sys.executable, "-m", "arasc.cli", "compile", str(path), "-o", str(tmp_path / "o.aras")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "my_softsign" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.aras").exists()


def test_cli_compiles_and_runs_an_onnx_model(tmp_path, capsys):
    from arasc.cli import main

    module, inputs = built("digits-cnn")
    path = tmp_path / "digits.onnx"
    torch.onnx.export(module, inputs, str(path), dynamo=True, verbose=False)
    out = tmp_path / "digits.aras"
    outputs = []
    for argv in (["ir", str(path)], ["compile", str(path), "-o", str(out)], ["run", str(out)]):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert "= conv2d(" in outputs[0] and "wrote" in outputs[1] and out.exists()
