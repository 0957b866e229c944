"""The interpreter-simulator against the integer reference executor and against PyTorch."""
import numpy as np
import pytest
import torch

from arasc.ir import evaluate
from arasc.runtime.int8 import int8_products_exact
from arasc.runtime.run import run_file

from conftest import SMALL_MODELS, built, compiled


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_interpreter_equals_reference_bit_for_bit(name):
    result, path = compiled(name)
    module, inputs = built(name)
    reference = evaluate(result.model, inputs)
    fast = run_file(path, int8=True)
    float32 = run_file(path, int8=False)
    serial = run_file(path, bit_serial=True)
    assert fast.machine.int8 == int8_products_exact() and not float32.machine.int8
    for got, f32, bit, want in zip(fast.outputs.values(), float32.outputs.values(), serial.outputs.values(),
                                   reference, strict=True):
        assert np.array_equal(got, want.numpy())
        assert np.array_equal(f32, want.numpy())  # int8 and float32 products agree
        assert np.array_equal(bit, got)  # the fast path is the bit-serial emulation with an ideal ADC
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(fast.outputs.values(), expected, strict=True):
        assert cosine(got, want) >= 0.99


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_finite_adc_shortcut_equals_every_sample_emulated(name):
    _, path = compiled(name)
    short = run_file(path, adc_bits=5)
    full = run_file(path, adc_bits=5, bit_serial=True)
    assert (short.machine.products, full.machine.products) == ("clipping", "exhaustive")
    assert list(short.outputs) == [port.name for port in short.program.outputs]
    for got, want in zip(short.outputs.values(), full.outputs.values(), strict=True):
        assert np.array_equal(got, want)
    counts = [(r.machine.bit_serial.clipped, r.machine.bit_serial.samples) for r in (short, full)]
    assert counts[0] == counts[1] and counts[0][0] > 0


def test_digits_accuracy_on_the_interpreter(tmp_path):
    from arasc.models.digits import load_digits_split

    _, path = compiled("digits-cnn")
    module, inputs = built("digits-cnn")
    _, _, x_test, y_test = load_digits_split()
    batch = inputs[0].shape[0]
    correct_int = correct_float = 0
    count = (len(x_test) // batch) * batch
    for start in range(0, count, batch):
        x = x_test[start:start + batch].numpy()
        np.save(tmp_path / "x.npy", x)
        out = run_file(path, str(tmp_path / "x.npy")).outputs
        logits = next(iter(out.values()))
        labels = y_test[start:start + batch].numpy()
        correct_int += int((logits.argmax(1) == labels).sum())
        with torch.no_grad():
            correct_float += int((module(torch.from_numpy(x)).argmax(1).numpy() == labels).sum())
    assert abs(correct_int - correct_float) / count <= 0.005
    assert correct_int / count >= 0.95


def test_finite_adc_clips_and_says_so():
    _, path = compiled("resnet50-small")
    ideal = run_file(path)
    clipped = run_file(path, adc_bits=6)
    assert clipped.machine.bit_serial.clipped > 0
    assert clipped.machine.bit_serial.samples > clipped.machine.bit_serial.clipped
    got, want = next(iter(clipped.outputs.values())), next(iter(ideal.outputs.values()))
    assert not np.array_equal(got, want)
    wide = run_file(path, adc_bits=9)  # 128 rows x level 3 = 384 < 2^9: nothing clips
    assert wide.machine.bit_serial.clipped == 0
    assert np.array_equal(next(iter(wide.outputs.values())), want)


def test_write_pulses_count_level_changes():
    result, path = compiled("digits-cnn")
    run = run_file(path)
    writes = run.machine.writes
    assert writes.blocks == sum(layer.attr("apu_rows") for layer in result.program.layers)
    assert writes.cells_written + writes.cells_skipped == sum(
        np.asarray(run.machine.w[layer.weight("weight")[0]]).size * 4 for layer in result.program.layers)
    assert writes.cells_written <= writes.pulses <= 3 * writes.cells_written


def test_cli_run_writes_output_and_reads_input(tmp_path):
    from arasc.cli import main

    _, path = compiled("bert-base-small")
    module, inputs = built("bert-base-small")
    ids = inputs[0].numpy()
    np.save(tmp_path / "ids.npy", ids)
    assert main(["run", path, "--input", str(tmp_path / "ids.npy"), "--output", str(tmp_path / "y.npz")]) == 0
    saved = np.load(tmp_path / "y.npz")
    assert len(saved.files) == 2
    with torch.no_grad():
        expected = module(*inputs)
    for name, want in zip(saved.files, expected, strict=True):
        assert cosine(saved[name], want) >= 0.99


def test_cli_rejects_input_of_wrong_shape(tmp_path):
    from arasc.cli import main

    _, path = compiled("digits-cnn")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 9, 9), np.float32))
    assert main(["run", path, "--input", str(tmp_path / "x.npy")]) == 2


def test_cli_reports_the_error_a_finite_adc_causes(tmp_path):
    import json

    from arasc.cli import main

    _, path = compiled("resnet50-small")
    assert main(["run", path, "--adc-bits", "6", "--inferences", "1", "--report", str(tmp_path / "r.json")]) == 0
    adc = json.loads((tmp_path / "r.json").read_text())["adc"]
    assert adc["bits"] == 6 and 0 < adc["clipped"] < adc["samples"]
    (error,) = adc["error"].values()
    assert error["cosine_to_ideal"] < 1.0 and error["max_abs_error"] > 0
