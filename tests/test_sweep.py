"""`arasc sweep` without Ray (docs/sweeps.md): the spec and its errors, the points (grid, random,
Latin hypercube), the table and resume after a kill, the compiled-program cache, the figures of a
point against `arasc run`'s, and the plots. The tasks run in this process (runner.InProcess);
tests/test_sweep_ray.py runs them on Ray."""
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arasc.cli import main
from arasc.sweep import sweep as sweep_module
from arasc.sweep.plot import pareto_front, write_plots
from arasc.sweep.points import grid, point_id, sample
from arasc.sweep.runner import InProcess
from arasc.sweep.spec import load_spec, parse_spec
from arasc.sweep.sweep import columns, run_sweep
from arasc.sweep.table import ResultTable, TableError

BANKS = "[[1024, 1024, 2048], [1024, 1024, 2048, 4096, 65536]]"


def write_spec(folder, text, name="spec.toml"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def cli(capfd, argv):
    status = main(argv)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


# --- the spec ---------------------------------------------------------------------------------

def test_a_spec_gives_one_axis_per_field_models_first(tmp_path):
    spec = load_spec(write_spec(tmp_path, f"""
        models = ["digits-cnn", "vgg16-small"]
        [hardware]
        chip.pes = [4, 8, 96]
        gbuffer.banks_bytes = {BANKS}
        memory.bandwidth_bytes_per_s = {{from = 1e9, to = 100e9, steps = 3, scale = "log"}}
        crossbar.adc_bits = 6
        [options]
        replication = ["adaptive", "none"]
        weight_center = ["none", 88]
    """))
    axes = {axis.name: axis for axis in spec.axes}
    assert [a.name for a in spec.axes][0] == "model"
    assert axes["chip.pes"].grid() == (4, 8, 96)
    assert axes["gbuffer.banks_bytes"].grid() == ((1024, 1024, 2048), (1024, 1024, 2048, 4096, 65536))
    assert axes["memory.bandwidth_bytes_per_s"].grid() == pytest.approx((1e9, 1e10, 1e11))
    assert axes["crossbar.adc_bits"].grid() == (6,)
    assert axes["weight_center"].grid() == (None, 88)  # as --weight-center none / 88 give them
    assert [a.name for a in spec.swept] == ["model", "chip.pes", "gbuffer.banks_bytes",
                                           "memory.bandwidth_bytes_per_s", "replication", "weight_center"]
    assert len(grid(spec)) == 2 * 3 * 2 * 3 * 2 * 2


def test_an_integer_range_is_rounded_and_never_repeats_a_value(tmp_path):
    spec = load_spec(write_spec(tmp_path, """
        models = ["digits-cnn"]
        hardware.chip.pes = {from = 1, to = 3, steps = 5}
    """))
    assert spec.axes[1].grid() == (1, 2, 3)  # 1, 1.5, 2, 2.5, 3 rounded (half to even): 1, 2, 2, 2, 3


@pytest.mark.parametrize("text, message", [
    ('models = ["digits-cnn"]\nmodel = 1', "spec.toml: model: unknown key"),
    ('models = []', "spec.toml: models: expected a non-empty list"),
    ('models = ["resnet5"]', "spec.toml: models: 'resnet5': not a zoo model"),
    ('models = ["net.py:build"]', "spec.toml: models: "),
    ('models = ["digits-cnn"]\n[hardware]\nchip.pez = [1, 2]', "spec.toml: [hardware] chip.pez: no such field of [chip]"),
    ('models = ["digits-cnn"]\n[hardware]\nchips.pes = [1, 2]', "spec.toml: [hardware] chips: no such table"),
    ('models = ["digits-cnn"]\n[hardware]\nchip.pes = [4, 0]', "spec.toml: [hardware] chip.pes: 0: "),
    ('models = ["digits-cnn"]\n[hardware]\nchip.pes = [4, 2.5]', "spec.toml: [hardware] chip.pes: 2.5 is not an integer"),
    ('models = ["digits-cnn"]\n[hardware]\nchip.pes = {from = 4, to = 2}', "spec.toml: [hardware] chip.pes: a range needs"),
    ('models = ["digits-cnn"]\n[hardware]\nbase = "nowhere"', "spec.toml: [hardware] base: nowhere: neither"),
    ('models = ["digits-cnn"]\n[options]\nreplicate = ["none"]', "spec.toml: [options] replicate: not a compile option"),
    ('models = ["digits-cnn"]\n[options]\nreplication = ["some"]', "spec.toml: [options] replication: 'some'; allowed"),
    ('models = ["digits-cnn"]\n[options]\nweight_center = [87]', "spec.toml: [options] weight_center: '87': auto, none"),
    ('models = ["digits-cnn"]\n[calibration]\ndigits-cnn = "missing.npy"', "spec.toml: [calibration] digits-cnn: "),
    ('models = ["digits-cnn"]\n[calibration]\ndigits-cnn = "spec.toml"', "spec.toml: not a readable .npy array"),
    ('models = ["digits-cnn"]\n[accuracy]\ndatasets = {vgg16 = "spec.toml"}', "[accuracy] datasets vgg16: not one of"),
    ('models = ["digits-cnn"\n', "spec.toml: TOML syntax error"),
])
def test_a_bad_spec_is_one_paragraph_naming_file_and_field_exit_2(capfd, tmp_path, text, message):
    path = write_spec(tmp_path, text)
    status, _, err = cli(capfd, ["sweep", path, "--out", str(tmp_path / "t.csv")])
    assert status == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "t.csv").exists()


def test_a_range_without_steps_needs_samples(capfd, tmp_path):
    path = write_spec(tmp_path, 'models = ["digits-cnn"]\nhardware.chip.pes = {from = 1, to = 8}')
    status, _, err = cli(capfd, ["sweep", path])
    assert status == 2 and "[hardware] chip.pes: a range without steps has no grid" in err
    assert len(sample(load_spec(path), 5)) == 5


def test_without_ray_sweep_and_evaluate_say_how_to_install_it(capfd, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = write_spec(tmp_path, 'models = ["digits-cnn"]')
    for argv in (["sweep", path], ["evaluate", "p.aras", "--dataset", "d.npz"]):
        status, _, err = cli(capfd, argv)
        assert status == 2 and "Ray, which is not installed: pip install -e '.[sweep]'" in err


# --- points ---------------------------------------------------------------------------------------

def range_spec(tmp_path, n_values):
    return load_spec(write_spec(tmp_path, f"""
        models = ["digits-cnn", "vgg16-small"]
        [hardware]
        chip.pes = {list(range(1, n_values + 1))}
        memory.bandwidth_bytes_per_s = {{from = 1e9, to = 2e9}}
    """))


@settings(max_examples=25, deadline=None)
@given(strata=st.integers(1, 6), per_value=st.integers(1, 4))
def test_latin_hypercube_draws_every_stratum_of_every_axis_once(tmp_path_factory, strata, per_value):
    spec = range_spec(tmp_path_factory.mktemp("lhs"), strata)
    n = 2 * strata * per_value  # a multiple of each list axis' length: each value n / length times
    points = sample(spec, n)
    assert len(points) == n  # the continuous axis makes every point distinct
    assert Counter(p.model for p in points) == {"digits-cnn": n // 2, "vgg16-small": n // 2}
    assert Counter(dict(p.values)["chip.pes"] for p in points) == {v: n // strata for v in range(1, strata + 1)}
    bandwidths = sorted(dict(p.values)["memory.bandwidth_bytes_per_s"] for p in points)
    assert all(1e9 + i * 1e9 / n <= b < 1e9 + (i + 1) * 1e9 / n for i, b in enumerate(bandwidths))


def test_samples_are_drawn_again_the_same_from_the_seed(tmp_path):
    spec = range_spec(tmp_path, 4)
    assert sample(spec, 7) == sample(spec, 7)
    other = parse_spec({"models": ["digits-cnn", "vgg16-small"], "seed": 1, "sampling": "random",
                        "hardware": {"chip": {"pes": [1, 2, 3, 4]},
                                     "memory": {"bandwidth_bytes_per_s": {"from": 1e9, "to": 2e9}}}}, spec.path)
    assert sample(other, 7) == sample(other, 7) != sample(spec, 7)


def test_a_point_id_changes_with_the_base_chip_and_the_calibration_file(tmp_path):
    spec = load_spec(write_spec(tmp_path, 'models = ["digits-cnn"]\nhardware.chip.pes = [4, 8]'))
    a, b = grid(spec)
    assert point_id(a, spec, {}) != point_id(b, spec, {})
    other_chip = load_spec(write_spec(tmp_path, 'models = ["digits-cnn"]\n[hardware]\nbase = "baseline-15x256k"\n'
                                      'chip.pes = [4, 8]', "other.toml"))
    assert point_id(grid(other_chip)[0], other_chip, {}) != point_id(a, spec, {})
    np.save(tmp_path / "c.npy", np.zeros((8, 1, 8, 8), np.float32))
    calibrated = load_spec(write_spec(tmp_path, 'models = ["digits-cnn"]\nhardware.chip.pes = [4, 8]\n'
                                      '[calibration]\ndigits-cnn = "c.npy"', "calibrated.toml"))
    ids = {point_id(grid(calibrated)[0], calibrated, {str(tmp_path / "c.npy"): d}) for d in ("x", "y")}
    assert len(ids) == 2


# --- the table, interruption and resume --------------------------------------------------------------

def fake_measure(calls):
    def measure_point(pid, values, job):
        calls.append(pid)
        pes = dict(values)["chip.pes"]
        if pes == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third point runs
        return {"point_id": pid, **dict(values), "status": "ok", "inferences_per_second": 100.0 * pes,
                "energy_per_inference_j": 1.0 / pes}
    return measure_point


def test_an_interrupted_sweep_keeps_what_finished_and_a_rerun_does_only_the_rest(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, 'models = ["digits-cnn"]\nhardware.chip.pes = [1, 2, 3, 4, 5]'))
    table = ResultTable(str(tmp_path / "t.csv"), columns(spec))
    calls = []
    monkeypatch.setattr(sweep_module, "measure_point", fake_measure(calls))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, grid(spec), table, InProcess(), str(tmp_path / "cache"))
    assert [r["chip.pes"] for r in table.rows()] == ["1", "2"]
    monkeypatch.setattr(sweep_module, "measure_point", fake_measure(calls := []))
    spec5 = load_spec(write_spec(tmp_path, 'models = ["digits-cnn"]\nhardware.chip.pes = [1, 2, 4, 5]', "s5.toml"))
    outcome = run_sweep(spec5, grid(spec5), table, InProcess(), str(tmp_path / "cache"))
    assert (outcome.skipped, outcome.ran) == (2, 2) and len(calls) == 2
    assert sorted(r["chip.pes"] for r in table.rows()) == ["1", "2", "4", "5"]


KILLER = """
import os, signal, sys
from arasc.sweep import sweep
from arasc.sweep.points import grid
from arasc.sweep.runner import InProcess
from arasc.sweep.spec import load_spec
from arasc.sweep.table import ResultTable

def measure_point(pid, values, job):
    pes = dict(values)["chip.pes"]
    if pes == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # the whole sweep dies, mid-point
    return {"point_id": pid, **dict(values), "status": "ok", "inferences_per_second": 100.0 * pes}

sweep.measure_point = measure_point
spec = load_spec(sys.argv[1])
outcome = sweep.run_sweep(spec, grid(spec), ResultTable(sys.argv[2], sweep.columns(spec)), InProcess(), "unused")
print(outcome.skipped, outcome.ran)
"""


def test_a_sweep_killed_midway_is_completed_by_a_rerun_doing_only_the_missing_points(tmp_path):
    spec = write_spec(tmp_path, 'models = ["digits-cnn"]\nhardware.chip.pes = [1, 2, 3, 4, 5, 6]')
    script, table = tmp_path / "killer.py", str(tmp_path / "t.csv")
    script.write_text(KILLER)
    killed = subprocess.run([sys.executable, str(script), spec, table, "4"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    with open(table, encoding="utf-8") as f:
        assert [line.split(",")[4] for line in f.read().splitlines()[1:]] == ["1", "2", "3"]
    rerun = subprocess.run([sys.executable, str(script), spec, table, "0"], capture_output=True, text=True, check=True)
    assert rerun.stdout.split() == ["3", "3"]  # 3 skipped, 3 run
    rows = ResultTable(table, []).rows()
    assert sorted(int(r["chip.pes"]) for r in rows) == [1, 2, 3, 4, 5, 6] and len({r["point_id"] for r in rows}) == 6


def test_a_row_cut_by_a_crash_is_dropped_and_its_point_runs_again(tmp_path):
    table = ResultTable(str(tmp_path / "t.csv"), ["point_id", "status", "x"])
    assert table.open() == {} and not os.path.exists(table.path)  # written at its first row
    table.append({"point_id": "a", "status": "ok", "x": 1})
    table.append({"point_id": "b", "status": "failed", "x": "two\nlines"})
    with open(table.path, "a") as f:
        f.write("c,ok,3")  # no newline: the write was cut
    assert table.open() == {"a": "ok", "b": "failed"}
    assert [r["x"] for r in table.rows()] == ["1", "two | lines"]
    with pytest.raises(TableError, match="other columns"):
        ResultTable(table.path, ["point_id", "status", "y"]).open()


# --- real points, in this process -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A 3-point sweep of digits-cnn, the middle point on a chip the interpreter cannot run."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = load_spec(write_spec(folder, """
        models = ["digits-cnn"]
        [hardware]
        chip.pes = [1, 2]
        crossbar.cell_bits = [2, 4]
    """))
    table = ResultTable(str(folder / "t.csv"), columns(spec))
    outcome = run_sweep(spec, grid(spec), table, InProcess(), str(folder / "cache"))
    return spec, folder, table, outcome


def test_a_point_that_fails_is_a_row_with_its_error_and_the_sweep_goes_on(measured):
    _, _, table, outcome = measured
    rows = table.rows()
    assert [(r["chip.pes"], r["crossbar.cell_bits"], r["status"]) for r in rows] == [
        ("1", "2", "ok"), ("1", "4", "failed"), ("2", "2", "ok"), ("2", "4", "failed")]
    assert outcome.ran == 4 and len(outcome.failed) == 2
    assert "[crossbar] cell_bits: 4-bit cells take up to" in rows[1]["error"]


def test_a_point_reports_what_arasc_run_reports_for_its_program(measured, tmp_path):
    """Second path: the same chip built by hand, compiled by the driver, timed by run_file."""
    import dataclasses

    from arasc.compile import compile_source, weights_name, write_compiled
    from arasc.isa.hardware import default_hardware, dumps_hardware
    from arasc.loader import load_source
    from arasc.runtime.report import run_summary
    from arasc.runtime.run import run_file

    hw = default_hardware()
    hw = dataclasses.replace(hw, chip=dataclasses.replace(hw.chip, pes=1))
    (tmp_path / "hw.toml").write_text(dumps_hardware(hw))
    path = str(tmp_path / "d.aras")
    write_compiled(compile_source(load_source("digits-cnn"), hw, weights_name(path)), path)
    s = run_summary(run_file(path, hw_path=str(tmp_path / "hw.toml"), inferences=2, compute=False))
    row = measured[2].rows()[0]
    assert float(row["inferences_per_second"]) == s["inferences_per_second"]
    assert float(row["energy_per_inference_j"]) == s["energy_joules"]["total"]
    assert int(row["write_pulses"]) == s["write_pulses"] and int(row["blocks_written"]) == s["blocks_written"]
    assert float(row["lifespan_years"]) == s["lifespan_years"]


def test_points_sharing_a_program_take_it_from_the_cache(measured):
    spec, folder, first, _ = measured
    again = ResultTable(str(folder / "again.csv"), columns(spec))
    run_sweep(spec, grid(spec), again, InProcess(), str(folder / "cache"))
    before = {r["point_id"]: r for r in first.rows() if r["status"] == "ok"}
    after = {r["point_id"]: r for r in again.rows() if r["status"] == "ok"}
    assert before.keys() == after.keys() and len(after) == 2
    assert all(r["program_cached"] == "False" and float(r["compile_seconds"]) > 0 for r in before.values())
    assert all(r["program_cached"] == "True" and float(r["compile_seconds"]) == 0 for r in after.values())
    for pid, row in after.items():
        assert row["inferences_per_second"] == before[pid]["inferences_per_second"]


def test_retry_failed_runs_only_the_failed_points_again(measured, monkeypatch):
    spec, _, table, _ = measured
    calls = []
    monkeypatch.setattr(sweep_module, "measure_point",
                        lambda pid, values, job: calls.append(pid) or {"point_id": pid, **dict(values),
                                                                       "status": "failed", "error": "again"})
    outcome = run_sweep(spec, grid(spec), table, InProcess(), "unused", retry_failed=True)
    assert (outcome.skipped, outcome.ran) == (2, 2)
    assert [r["error"] for r in table.rows()] == ["", "", "again", "again"]


# --- plots -------------------------------------------------------------------------------------------

def test_pareto_front_keeps_the_points_nothing_beats():
    points = [(1.0, 10.0), (2.0, 5.0), (2.0, 30.0), (3.0, 30.0), (4.0, 40.0), (0.5, 1.0)]
    # (2, 5) loses to (1, 10); (3, 30) to (2, 30): same rate for more energy
    assert pareto_front(points) == [(0.5, 1.0), (1.0, 10.0), (2.0, 30.0), (4.0, 40.0)]


def test_plots_are_written(tmp_path):
    rows = [{"model": m, "status": "ok", "chip.pes": str(p), "gbuffer.banks_bytes": "[1024, 2048]",
             "inferences_per_second": str(p * k), "energy_per_inference_j": str(1e-5 * k / p)}
            for m, k in (("a", 1), ("b", 3)) for p in (1, 2, 4)]
    rows.append({**rows[0], "status": "failed"})
    pareto, effects = str(tmp_path / "p.png"), str(tmp_path / "e.png")
    write_plots(rows, ["model", "chip.pes", "gbuffer.banks_bytes"], pareto, effects)
    for path in (pareto, effects):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["e.png", "p.png"]


@pytest.mark.parametrize("name", ["two-small-models", "two-heavier-small-models", "small-zoo", "zoo"])
def test_the_documented_specs_read(name):
    """docs/sweeps.md's specs: the acceptance sweep is 40 points over two models and two fields."""
    spec = load_spec(os.path.join(os.path.dirname(__file__), "..", "docs", "sweeps", f"{name}.toml"))
    sizes = {"two-small-models": 40, "two-heavier-small-models": 40, "small-zoo": 90, "zoo": 60}
    assert len(grid(spec)) == sizes[name]
    assert [a.name for a in spec.swept] == ["model", "chip.pes", "gbuffer.banks_bytes"]
