"""The `arasc` command line: subcommands, help, exit statuses, no tracebacks."""
import subprocess
import sys

import pytest

from arasc.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "arasc.cli", *args], capture_output=True, text=True)


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("vgg16", "resnet50", "densenet161", "bert-base", "bert-large", "digits-cnn", "resnet50-small"):
        assert name in out
    assert "138,357,544" in out


def test_ir_prints_text_that_parses(capsys):
    from arasc.ir import parse_graph

    assert main(["ir", "digits-cnn"]) == 0
    graph = parse_graph(capsys.readouterr().out)
    assert graph.name == "digits-cnn" and graph.layers


def test_ir_summary(capsys):
    assert main(["ir", "resnet50-small", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "layers" in out and "PyTorch parameters" in out and "crossbar weights" in out


@pytest.mark.parametrize("args, message", [
    (["ir", "no-such-model"], "unknown model 'no-such-model'"),
    (["ir", "digits-cnn", "--after", "nonsense"], "no such pass"),
    (["ir", "missing.pt2"], "missing.pt2: no such file"),
    (["ir", "missing.py:factory"], "missing.py: no such file"),
    (["compile", "no-such-model", "-o", "out.aras"], "unknown model"),
    (["compile", "digits-cnn", "-o", "out.txt"], "must end in .aras"),
    (["compile", "digits-cnn", "-o", "no/such/folder/out.aras"], "does not exist"),
    (["run", "prog.aras"], "cannot read the program"),
])
def test_bad_input_exits_2_with_one_message(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "arasc.cli", *args], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.aras").exists()


@pytest.mark.parametrize("command", [[], ["models"], ["ir"], ["compile"], ["run"], ["demo"]])
def test_help(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: arasc" in result.stdout


def test_pt2_that_is_not_an_archive(tmp_path):
    bogus = tmp_path / "bogus.pt2"
    bogus.write_text("not a zip")
    result = run_cli("ir", str(bogus))
    assert result.returncode == 2 and "not a readable torch.export archive" in result.stderr


def test_compile_with_calibration_file(tmp_path, capsys):
    import numpy as np

    from arasc.models.digits import load_digits_split

    x_train = load_digits_split()[0].numpy()[:24]
    np.save(tmp_path / "calib.npy", x_train)
    assert main(["compile", "digits-cnn", "-o", str(tmp_path / "d.aras"), "--calib", str(tmp_path / "calib.npy")]) == 0
    np.save(tmp_path / "bad.npy", x_train[:, :, :4])
    assert main(["compile", "digits-cnn", "-o", str(tmp_path / "e.aras"), "--calib", str(tmp_path / "bad.npy")]) == 2
    assert "expected [N, 1, 8, 8]" in capsys.readouterr().err
