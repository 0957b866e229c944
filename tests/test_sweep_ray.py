"""`arasc sweep` and `arasc evaluate` on a real local Ray of 2 CPUs, started once for the module
(Ray takes seconds to start): a sweep whose points finish, fail, and kill their worker; a re-run
that finds them all done; and the digits CNN's accuracy on its test split, as docs/results.md
reports it."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from arasc.cli import main
from arasc.models.digits import load_digits_split

ray = pytest.importorskip("ray", reason="the sweep extra (Ray) is not installed")
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def cli(capfd, argv):
    status = main(argv)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    return status, " ".join(out.split()), err  # the console wraps lines at 80 columns when not a terminal


def test_a_sweep_on_ray_records_every_point_even_one_that_kills_its_worker(capfd, tmp_path):
    (tmp_path / "killer.py").write_text("import os\n\ndef build():\n    os._exit(3)  # the worker process dies\n")
    x_train, _, x_test, y_test = load_digits_split()
    np.save(tmp_path / "calib.npy", x_train[:128].numpy())
    np.savez(tmp_path / "digits.npz", x=x_test.numpy(), labels=y_test.numpy())
    spec = tmp_path / "spec.toml"
    spec.write_text('models = ["digits-cnn", "killer.py:build"]\nhardware.chip.pes = [1, 2]\n'
                    '[calibration]\ndigits-cnn = "calib.npy"\n[accuracy]\ndatasets = {digits-cnn = "digits.npz"}\n')
    table = tmp_path / "spec.csv"
    status, out, _ = cli(capfd, ["sweep", str(spec), "--workers", "2", "--cache", str(tmp_path / "cache"), "--plot"])
    assert status == 0 and "4 points: 0 already in" in out and "4 run on 2 Ray workers (2 failed)" in out, out
    rows = {(r.split(",")[3], r.split(",")[4]): r for r in table.read_text().splitlines()[1:]}
    assert rows.keys() == {("digits-cnn", "1"), ("digits-cnn", "2"), (f"{tmp_path}/killer.py:build", "1"),
                           (f"{tmp_path}/killer.py:build", "2")}
    for (model, _), row in rows.items():
        assert (",ok," in row) == (model == "digits-cnn")
        if model != "digits-cnn":
            assert "WorkerCrashedError" in row
    header = table.read_text().splitlines()[0].split(",")
    for pes in ("1", "2"):  # calibrated and scored as docs/results.md's figure was: the same top-1
        top1 = float(rows[("digits-cnn", pes)].split(",")[header.index("top1")])
        assert round(top1 * 100, 2) == reported_top1("digits-cnn")[1]
    assert (tmp_path / "spec-pareto.png").exists() and (tmp_path / "spec-effects.png").exists()
    status, out, _ = cli(capfd, ["sweep", str(spec), "--cache", str(tmp_path / "cache")])
    assert status == 0 and "4 points: 4 already in" in out and "0 run (0 failed)" in out, out


def reported_top1(model: str) -> tuple[float, float]:
    """(float, chip) top-1 in percent from docs/results.md's table of trained models."""
    found = re.search(rf"^\| {model} \| top-1 ([\d.]+) % \| ([\d.]+) % \|", RESULTS.read_text(), re.MULTILINE)
    assert found, f"docs/results.md has no top-1 row for {model}"
    return float(found[1]), float(found[2])


def test_evaluate_on_the_digits_test_split_matches_the_reported_accuracy(capfd, tmp_path):
    """Compiled as the reported figure was (calibrated on the first 128 training images); all 360
    test images, in Ray tasks."""
    x_train, _, x_test, y_test = load_digits_split()
    np.save(tmp_path / "calib.npy", x_train[:128].numpy())
    np.savez(tmp_path / "test.npz", x=x_test.numpy(), labels=y_test.numpy())
    program = str(tmp_path / "d.aras")
    assert main(["compile", "digits-cnn", "--calib", str(tmp_path / "calib.npy"), "-o", program, "-q"]) == 0
    status, out, _ = cli(capfd, ["evaluate", program, "--dataset", str(tmp_path / "test.npz"), "--compare-float",
                                 "digits-cnn", "--workers", "2", "--json", str(tmp_path / "m.json")])
    assert status == 0, out
    result = json.loads((tmp_path / "m.json").read_text())
    float_top1, chip_top1 = reported_top1("digits-cnn")
    assert result["samples"] == 360 and result["tasks"] > 1
    assert round(result["chip"]["top1"] * 100, 2) == chip_top1
    assert round(result["float"]["top1"] * 100, 2) == float_top1


def test_evaluate_models_the_chip_adc_where_it_reads_the_cells(capfd, tmp_path):
    """`--adc auto` (the default): the 6-bit ADC on aras-differential-1bit, ideal on aras-default."""
    _, _, x_test, y_test = load_digits_split()
    np.savez(tmp_path / "test.npz", x=x_test[:16].numpy(), labels=y_test[:16].numpy())
    for hw, bits in (("aras-differential-1bit", 6), ("aras-default", None)):
        program = str(tmp_path / f"{hw}.aras")
        assert main(["compile", "digits-cnn", "--hw", hw, "-o", program, "-q"]) == 0
        status, out, _ = cli(capfd, ["evaluate", program, "--dataset", str(tmp_path / "test.npz"),
                                     "--json", str(tmp_path / "m.json")])
        assert status == 0, out
        assert json.loads((tmp_path / "m.json").read_text())["adc_bits"] == bits
        assert ("6-bit ADC" if bits else "ideal ADC") in out
