"""`arasc compare --adc-bits N`: the per-layer ADC table adds up to the run's totals."""
import json

import numpy as np

from arasc.cli import main
from arasc.compare import adc_rows
from arasc.runtime.run import execute, load_program

from conftest import built, compiled


def test_adc_rows_add_up_to_the_run():
    _, path = compiled("digits-cnn")
    program, weights, hw = load_program(path)
    _, inputs = built("digits-cnn")
    rows = adc_rows(program, weights, hw, [inputs], 4)
    ports = {port.name: np.asarray(x) for port, x in zip(program.inputs, inputs, strict=True)}
    run = execute(program, weights, hw, ports, adc_bits=4)
    assert [row.layer for row in rows] == [layer.name for layer in program.layers]
    assert sum(row.samples for row in rows) == run.machine.bit_serial.samples
    assert sum(row.clipped for row in rows) == run.machine.bit_serial.clipped > 0
    assert sum(row.conversions for row in rows) == run.timing.adc_conversions
    assert all(0 <= row.codes_changed <= 1 and row.output_cosine <= 1.0 + 1e-12 for row in rows)
    assert rows[0].clipped > 0 and rows[0].codes_changed > 0 and rows[0].output_cosine < 1.0


def test_compare_prints_and_writes_the_adc_table(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["compare", "digits-cnn", "--engine", "interpreter", "--adc-bits", "6", "--hw", "aras-differential",
                 "--center-offset", "on", "--json", str(out)]) == 0
    assert "6-bit ADC against an ideal one" in capsys.readouterr().out
    layers = json.loads(out.read_text())["adc_layers"]
    assert layers and all(row["conversions"] >= row["samples"] > 0 for row in layers)
