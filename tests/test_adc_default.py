"""The chip's ADC by default (docs/adc.md, "Which ADC a run models"):

- symmetric weight codes (zero point 128, scale max|w| / 127), checked on numbers worked by hand;
- `--weight-zero-point auto` is symmetric on differential cells, asymmetric on unsigned ones, and
  weight-mean shifting's `auto` shifts nothing on differential cells;
- with the default passes on aras-differential-1bit, small zoo models keep cosine >= 0.995 between
  the 6-bit ADC and an ideal one (the ADC issue's acceptance);
- `arasc run` models the chip's ADC by default where `Hardware.adc_reads_cells`, an ideal one
  elsewhere, says which, and takes `--adc chip|ideal`.
"""
import json
import tempfile

import numpy as np
import pytest

from arasc.cli import main
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.isa.hardware import bundled_hardware
from arasc.passes.quantize import Quantize, _weight_params
from arasc.passes.tile import is_crossbar_layer
from arasc.runtime.report import cosine
from arasc.runtime.run import run_file

from conftest import built, lowered

ONE_BIT = bundled_hardware("aras-differential-1bit")


def test_symmetric_weight_codes_by_hand():
    weight = np.array([[-2.0, 1.0, 0.0], [0.5, 0.25, -0.125], [0.0, 0.0, 0.0]])
    p = _weight_params(weight, per_channel=True, zero_point="symmetric")
    # channel 0: scale 2/127; channel 1: 0.5/127; channel 2 (all zero): scale 1
    np.testing.assert_allclose(np.asarray(p.scale).ravel(), [2 / 127, 0.5 / 127, 1.0])
    assert np.asarray(p.zp).ravel().tolist() == [128, 128, 128]
    from arasc.passes.calibrate import quantize_array

    # -2 / (2/127) = -127 -> 1; 1 -> 63.5, half to even: 64 -> 192; 0.25 -> 63.5 -> 192; -0.125 -> -31.75 -> 96
    assert quantize_array(weight, p).tolist() == [[1, 192, 128], [255, 192, 96], [128, 128, 128]]
    whole = _weight_params(weight, per_channel=False, zero_point="symmetric")
    assert whole.scale == pytest.approx(2 / 127) and whole.zp == 128


@pytest.mark.parametrize("hw_name, symmetric", [("aras-differential-1bit", True), ("aras-differential", True),
                                                ("aras-default", False)])
def test_auto_zero_point_follows_the_cells(hw_name, symmetric):
    _, inputs = built("bert-base-small")
    quantized = Quantize(calibration=(tuple(np.asarray(x) for x in inputs),)).rewrite(lowered("bert-base-small"),
                                                                                       bundled_hardware(hw_name))
    zero_points = []
    for layer in quantized.model.graph.layers:
        if is_crossbar_layer(layer):
            ref = layer.weight("w_zp")
            zero_points.extend(np.asarray(quantized.model.weights[ref.name]).ravel().tolist() if ref
                               else [layer.attr("w_zp")])
    assert zero_points and (set(zero_points) == {128}) == symmetric


def one_bit_program(name):
    module, inputs = built(name)
    path = f"{tempfile.mkdtemp(prefix='arasc-adc-default-')}/{name}.aras"
    compiled = compile_model(lowered(name), ONE_BIT, [inputs], inputs, weights_name(path))
    write_compiled(compiled, path)
    return compiled, path


@pytest.mark.parametrize("name", ["digits-cnn", "resnet50-small", "bert-base-small"])
def test_default_passes_keep_small_models_with_the_6bit_adc(name):
    compiled, path = one_bit_program(name)
    assert dict(compiled.model.graph.meta).get("weight_center") is None  # no common center on differential cells
    ideal, finite = run_file(path), run_file(path, adc="auto")
    assert finite.machine.bit_serial.adc_bits == ONE_BIT.crossbar.adc_bits == 6
    for key, want in ideal.outputs.items():
        assert cosine(want.astype(np.float64), finite.outputs[key].astype(np.float64)) >= 0.995


def report_of(args, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main(["run", *args, "--report", str(report), "--quiet"]) == 0
    return json.loads(report.read_text())["adc"], capsys.readouterr().out


def test_run_models_the_chip_adc_where_it_reads_the_cells(tmp_path, capsys):
    _, one_bit = one_bit_program("digits-cnn")
    plain = str(tmp_path / "plain.aras")
    assert main(["compile", "digits-cnn", "-o", plain, "--quiet"]) == 0
    adc, out = report_of([one_bit], tmp_path, capsys)
    assert (adc["bits"], adc["choice"]) == (6, "auto") and "by default" in out
    adc, out = report_of([plain], tmp_path, capsys)
    assert (adc["bits"], adc["choice"]) == (None, "auto") and "saturate" in out
    adc, _ = report_of([plain, "--adc", "chip"], tmp_path, capsys)
    assert (adc["bits"], adc["choice"]) == (6, "chip") and adc["clipped"] > 0
    adc, _ = report_of([one_bit, "--adc", "ideal"], tmp_path, capsys)
    assert adc["bits"] is None
    assert main(["run", plain, "--adc", "ideal", "--adc-bits", "6"]) == 2
    assert "contradict" in capsys.readouterr().err
