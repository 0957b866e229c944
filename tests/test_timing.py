"""Schedulers and the timing model: the invariants of paper IV on every small zoo model."""
import json

import numpy as np
import pytest

from arasc.compile import compile_model, weights_name, write_compiled
from arasc.isa.hardware import default_hardware
from arasc.options import CompileOptions
from arasc.runtime.report import run_summary, write_plot, write_report, write_trace
from arasc.runtime.run import run_file
from arasc.runtime.timing import lifespan_years

from conftest import SMALL_MODELS, built, lowered


def run(name, scheduler, tmp_path):
    module, inputs = built(name)
    path = str(tmp_path / f"{name}-{scheduler}.aras")
    write_compiled(compile_model(lowered(name), default_hardware(), [inputs], inputs, weights_name(path),
                                 CompileOptions(scheduler=scheduler)),
                   path)
    return run_file(path, inferences=2)


def row_spans(result):
    spans = {}
    for span in result.timing.spans:
        if span.track.startswith("row"):
            spans.setdefault(span.track, []).append(span)
    return spans


@pytest.mark.parametrize("scheduler", ["naive", "aras"])
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_schedule_invariants(name, scheduler, tmp_path):
    result = run(name, scheduler, tmp_path)
    timing = result.timing
    for track, spans in row_spans(result).items():
        spans.sort(key=lambda s: s.start)
        for a, b in zip(spans, spans[1:], strict=False):  # one thing at a time per APU row: never written while computing
            assert a.end <= b.start + 1e-9, f"{track}: {a.name} overlaps {b.name}"
    # a layer computes only after every block it reads was written
    writes = {}
    for track, spans in row_spans(result).items():
        for s in spans:
            if s.name.startswith("write "):
                writes.setdefault((track, s.name.split()[1].split("[")[0]), []).append(s)
    for track, spans in row_spans(result).items():
        for s in spans:
            if s.name.startswith("mvm "):
                layer = s.name.split()[1]
                done = [w.end for w in writes.get((track, layer), []) if w.end <= s.start]
                assert done, f"{track}: {layer} computed before its block was written"
    assert timing.peak_inflight <= timing.max_inflight  # bandwidth never exceeded
    summary = run_summary(result)
    assert 0 < summary["fraction_of_upper_bound"] <= 1.0
    assert summary["energy_joules"]["total"] == pytest.approx(sum(
        v for k, v in summary["energy_joules"].items() if k != "total"))


@pytest.mark.parametrize("name", ["resnet50-small", "bert-base-small"])
def test_aras_overlaps_writes_with_compute(name, tmp_path):
    naive, aras = run(name, "naive", tmp_path), run(name, "aras", tmp_path)
    assert aras.timing.cycles < naive.timing.cycles
    assert next(iter(aras.outputs.values())).tolist() == next(iter(naive.outputs.values())).tolist()


def test_bandwidth_limits_concurrent_writes(tmp_path):
    import dataclasses

    from arasc.runtime.run import execute, read_inputs

    result = run("resnet50-small", "aras", tmp_path)
    hw = result.machine.hw
    slow = dataclasses.replace(hw, memory=dataclasses.replace(hw.memory, bandwidth_bytes_per_s=2e8))
    program, weights = result.program, result.machine.w
    throttled = execute(program, weights, slow, read_inputs(program, weights, None))
    assert throttled.timing.max_inflight < result.timing.max_inflight
    assert throttled.timing.peak_inflight <= throttled.timing.max_inflight
    assert throttled.timing.cycles > result.timing.cycles


def test_report_trace_and_plot_files(tmp_path):
    result = run("digits-cnn", "aras", tmp_path)
    write_report(result, str(tmp_path / "r.json"))
    write_trace(result, str(tmp_path / "t.json"))
    write_plot(result, str(tmp_path / "p.png"))
    report = json.loads((tmp_path / "r.json").read_text())
    for key in ("cycles", "seconds", "inferences_per_second", "energy_joules", "write_pulses", "cells_written",
                "cells_skipped", "upper_bound_inferences_per_second", "fraction_of_upper_bound"):
        assert key in report
    assert set(report["energy_joules"]) == {"write", "compute", "static", "memory", "total"}
    trace = json.loads((tmp_path / "t.json").read_text())
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert {"compute", "write"} <= names and any(n.startswith("row ") for n in names)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_activations_larger_than_the_gbuffer_spill_to_main_memory(tmp_path):
    import dataclasses

    from arasc.backend.banks import choose_banks

    banks = (1024, 2048, 4096)
    assert choose_banks(1000, 3000, banks) == ((0,), (2,), 0)
    banks_in, banks_out, spill = choose_banks(6000, 5000, banks)
    assert not set(banks_in) & set(banks_out)
    cap_in, cap_out = (sum(banks[b] for b in side) for side in (banks_in, banks_out))
    assert spill == max(0, 6000 - cap_in) + max(0, 5000 - cap_out) >= 6000 + 5000 - sum(banks)

    module, inputs = built("vgg16-small")
    hw = default_hardware()
    small = dataclasses.replace(hw, gbuffer=dataclasses.replace(hw.gbuffer, banks_bytes=(4096, 8192)))
    from arasc.isa.hardware import dumps_hardware

    hw_file = tmp_path / "tiny-gbuffer.toml"
    hw_file.write_text(dumps_hardware(small))
    path = str(tmp_path / "v.aras")
    write_compiled(compile_model(lowered("vgg16-small"), small, [inputs], inputs, weights_name(path)), path)
    assert "spill=" in open(path).read()
    spilled = run_file(path, hw_path=str(hw_file))
    roomy_path = str(tmp_path / "roomy.aras")
    write_compiled(compile_model(lowered("vgg16-small"), hw, [inputs], inputs, weights_name(roomy_path)), roomy_path)
    roomy = run_file(roomy_path)
    assert np.array_equal(next(iter(spilled.outputs.values())), next(iter(roomy.outputs.values())))
    assert spilled.timing.energy.memory > roomy.timing.energy.memory


def test_timing_only_gives_the_same_time_energy_and_writes(tmp_path):
    module, inputs = built("densenet161-small")
    path = str(tmp_path / "d.aras")
    write_compiled(compile_model(lowered("densenet161-small"), default_hardware(), [inputs], inputs,
                                 weights_name(path)), path)
    full, timed = run_file(path, inferences=2), run_file(path, inferences=2, compute=False)
    assert timed.outputs == {}
    assert run_summary(timed) == run_summary(full)


def test_lifespan_counts_the_most_written_row(tmp_path):
    from collections import Counter

    result = run("resnet50-small", "aras", tmp_path)
    summary = run_summary(result)
    per_row = Counter(row for i in result.program.write if i.opcode == "wr" for row in i["rows"])
    assert summary["most_writes_per_row"] == max(per_row.values())
    assert summary["lifespan_years"] == lifespan_years(default_hardware(), max(per_row.values()), summary["seconds"])


def test_lifespan_by_hand():
    hw = default_hardware()
    assert hw.crossbar.endurance_writes == 1e12
    # 1e12 writes / 4 writes per inference = 2.5e11 inferences of 1 ms = 2.5e8 s;
    # a year of 365.25 days is 31,557,600 s: 7.92202 years.
    assert lifespan_years(hw, 4, 1e-3) == pytest.approx(7.92202, rel=1e-6)
    assert lifespan_years(hw, 0, 1e-3) == float("inf")  # nothing written: the cells never wear
