"""Where attention's activation-by-activation products (`qmatmul`) run: the hardware's [matmul]
table puts them on the SFU's lanes or on a digital MAC array, and the timing model charges that
unit's cycles and energy (runtime/timing.py). Goldens by hand from bert-base-small's shape."""
import dataclasses

import pytest

from arasc.isa.hardware import default_hardware, dumps_hardware, loads_hardware
from arasc.runtime.report import run_summary
from arasc.runtime.run import execute, read_inputs, run_file

from conftest import compiled

# bert-base-small: 2 layers, 4 heads of 16 dims, 16 tokens. Per layer, Q K^T and P V each make
# 4 x 16 x 16 outputs of 16 multiply-accumulates: 16,384 MACs per qmatmul, 4 qmatmuls.
MACS_PER_QMATMUL = 4 * 16 * 16 * 16
QMATMULS = 4


def on(unit: str, **fields):
    hw = default_hardware()
    return loads_hardware(dumps_hardware(dataclasses.replace(hw, matmul=dataclasses.replace(
        hw.matmul, unit=unit, **fields))))


def timed(hw):
    _, path = compiled("bert-base-small")
    first = run_file(path, inferences=1, compute=False)
    program, weights = first.program, first.machine.w
    return execute(program, weights, hw, read_inputs(program, weights, None), compute=False)


def qmatmul_spans(result):
    return [s for s in result.timing.spans if s.track == "compute" and s.name.startswith("sfu qmatmul")]


@pytest.mark.parametrize("unit, cycles_each, joules_per_mac", [
    ("sfu", MACS_PER_QMATMUL // 64, default_hardware().energy.sfu_j_per_op),    # 64 lanes, one MAC each
    ("array", MACS_PER_QMATMUL // 1024, default_hardware().matmul.j_per_mac),   # 1,024 MACs a cycle
])
def test_qmatmul_is_charged_on_the_unit_the_hardware_names(unit, cycles_each, joules_per_mac):
    result = timed(on(unit))
    spans = qmatmul_spans(result)
    assert len(spans) == QMATMULS
    assert [s.end - s.start for s in spans] == [cycles_each] * QMATMULS
    s = run_summary(result)
    mm = s["activation_matmul"]
    assert (mm["unit"], mm["macs"], mm["cycles"]) == (unit, QMATMULS * MACS_PER_QMATMUL, QMATMULS * cycles_each)
    assert mm["joules"] == pytest.approx(QMATMULS * MACS_PER_QMATMUL * joules_per_mac)
    assert s["energy_joules"]["total"] == pytest.approx(result.timing.energy.total)


def test_a_wider_array_shortens_only_the_products():
    narrow, wide = timed(on("array", macs_per_cycle=256)), timed(on("array", macs_per_cycle=4096))
    assert [s.end - s.start for s in qmatmul_spans(narrow)] == [MACS_PER_QMATMUL // 256] * QMATMULS
    assert [s.end - s.start for s in qmatmul_spans(wide)] == [MACS_PER_QMATMUL // 4096] * QMATMULS
    others = [[(s.name, s.end - s.start) for s in r.timing.spans if s.track == "compute" and "qmatmul" not in s.name]
              for r in (narrow, wide)]
    assert others[0] == others[1]
