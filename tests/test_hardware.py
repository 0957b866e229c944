"""Hardware description: bundled files, derived figures, canonical text, strict validation."""

import ast
import dataclasses
import sys
from pathlib import Path

import pytest

from arasc.isa import hardware
from arasc.isa.hardware import (
    HardwareConfigError,
    bundled_hardware,
    default_hardware,
    dumps_hardware,
    hardware_fingerprint,
    load_hardware,
    loads_hardware,
)


def test_default_loads_with_table_ii_figures():
    hw = default_hardware()
    assert hw == load_hardware()
    assert hw.chip.name == "aras-default"
    assert hw.apu_rows == 576
    assert hw.crossbars == 2304
    assert hw.cells_per_weight == 4
    assert hw.weights_per_row == 32
    assert hw.weights_per_crossbar == 4096
    assert hw.block == (128, 128)
    assert hw.weights_per_apu_row == 16384
    assert hw.capacity_weights == 9_437_184
    assert hw.seconds(hw.crossbar.write_cycles_per_crossbar) == pytest.approx(768e-6)
    assert sum(hw.gbuffer.banks_bytes) == 4040 * 1024  # VI: ~200 KB more than the baseline


def test_bank_static_power_is_proportional_to_bank_size():
    hw = default_hardware()
    watts = hw.gbuffer_bank_static_w
    assert len(watts) == len(hw.gbuffer.banks_bytes)
    assert watts[-1] == pytest.approx(2048 * hw.energy.gbuffer_static_w_per_kib)
    assert watts[0] == pytest.approx(watts[-1] / 2048)


def test_baseline_differs_only_in_the_gbuffer():
    aras, baseline = default_hardware(), bundled_hardware("baseline-15x256k")
    assert baseline.gbuffer.banks_bytes == (256 * 1024,) * 15
    renamed = dataclasses.replace(baseline, chip=dataclasses.replace(baseline.chip, name=aras.chip.name))
    assert renamed != aras
    assert dataclasses.replace(renamed, gbuffer=aras.gbuffer) == aras


@pytest.mark.parametrize("name", hardware.BUNDLED_HARDWARE)
def test_round_trip(name):
    hw = bundled_hardware(name)
    text = dumps_hardware(hw)
    assert loads_hardware(text) == hw
    assert dumps_hardware(loads_hardware(text)) == text


def test_fingerprint_is_stable_and_follows_every_field():
    hw = default_hardware()
    fingerprint = hardware_fingerprint(hw)
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert hardware_fingerprint(loads_hardware(dumps_hardware(hw))) == fingerprint
    assert hardware_fingerprint(load_hardware()) == fingerprint
    slower_adc = dataclasses.replace(hw, crossbar=dataclasses.replace(hw.crossbar, adc_bits=8))
    assert hardware_fingerprint(slower_adc) != fingerprint
    assert hardware_fingerprint(bundled_hardware("baseline-15x256k")) != fingerprint


def test_integers_are_accepted_where_numbers_are_expected(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text(_patched("chip", "clock_hz", "1000000000"))
    hw = load_hardware(path)
    assert hw.chip.clock_hz == 1e9 and isinstance(hw.chip.clock_hz, float)
    assert hw == default_hardware()


def _patched(table, key, value=None):
    """The canonical default text with one field of `table` set to `value` (None drops it)."""
    lines, current = [], None
    for line in dumps_hardware(default_hardware()).splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        if current == table and line.split(" = ")[0] == key:
            if value is not None:
                lines.append(f"{key} = {value}")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _without_table(table):
    text = dumps_hardware(default_hardware())
    return "\n\n".join(block for block in text.split("\n\n") if not block.startswith(f"[{table}]"))


# (case, TOML text, fragments the message must contain)
REJECTED = [
    ("missing field", _patched("crossbar", "rows"),
     ["[crossbar] rows", "missing required field", "allowed: an integer in 1.."]),
    ("unknown field", _patched("crossbar", "cols_cells").replace("rows = 128", "rows = 128\ncolls_cells = 128"),
     ["[crossbar] colls_cells", "unknown field", "did you mean 'cols_cells'", "allowed: the fields of [crossbar]"]),
    ("string for int", _patched("crossbar", "rows", '"128"'),
     ["[crossbar] rows", "expected an integer, got string '128'", "allowed: an integer in 1.."]),
    ("float for int", _patched("chip", "pes", "96.0"),
     ["[chip] pes", "expected an integer, got float", "allowed: an integer in 1.."]),
    ("bool for int", _patched("chip", "pes", "true"),
     ["[chip] pes", "expected an integer, got boolean", "allowed: an integer in 1.."]),
    ("string for number", _patched("chip", "clock_hz", '"1 GHz"'),
     ["[chip] clock_hz", "expected a number, got string", "allowed: a finite number > 0"]),
    ("zero count", _patched("chip", "pes", "0"),
     ["[chip] pes", "0 is not allowed", "allowed: an integer in 1.."]),
    ("negative count", _patched("crossbar", "adcs_per_crossbar", "-16"),
     ["[crossbar] adcs_per_crossbar", "-16 is not allowed", "allowed: an integer in 1.."]),
    ("cell bits", _patched("crossbar", "cell_bits", "3"),
     ["[crossbar] cell_bits", "3 is not allowed", "allowed: one of 1, 2, 4"]),
    ("weight bits", _patched("crossbar", "weight_bits", "7"),
     ["[crossbar] weight_bits", "7 is not allowed", "allowed: 8"]),
    ("cols cells", _patched("crossbar", "cols_cells", "130"),
     ["[crossbar] cols_cells", "not a multiple of weight_bits / cell_bits = 4", "allowed: a multiple of 4"]),
    ("empty banks", _patched("gbuffer", "banks_bytes", "[]"),
     ["[gbuffer] banks_bytes", "[] is not allowed", "allowed: an array of 1..32 integers in 1..2^40"]),
    ("zero bank", _patched("gbuffer", "banks_bytes", "[1024, 0]"),
     ["[gbuffer] banks_bytes", "[1024, 0] is not allowed", "allowed: an array of 1..32 integers in 1..2^40"]),
    ("bank with unit", _patched("gbuffer", "banks_bytes", '[1024, "1KB"]'),
     ["[gbuffer] banks_bytes", "expected an array of integers", "allowed: an array of 1..32 integers in 1..2^40"]),
    ("zero clock", _patched("chip", "clock_hz", "0.0"),
     ["[chip] clock_hz", "0.0 is not allowed", "allowed: a finite number > 0"]),
    ("infinite clock", _patched("chip", "clock_hz", "inf"),
     ["[chip] clock_hz", "inf is not allowed", "allowed: a finite number > 0"]),
    ("negative bandwidth", _patched("memory", "bandwidth_bytes_per_s", "-19.2e9"),
     ["[memory] bandwidth_bytes_per_s", "is not allowed", "allowed: a finite number > 0"]),
    ("negative energy", _patched("energy", "write_j_per_pulse", "-2.1e-11"),
     ["[energy] write_j_per_pulse", "-2.1e-11 is not allowed", "allowed: a finite number >= 0"]),
    ("unknown matmul unit", _patched("matmul", "unit", '"gpu"'),
     ["[matmul] unit", "'gpu' is not allowed", 'allowed: one of "sfu", "array"']),
    ("bad name", _patched("chip", "name", '"aras default"'),
     ["[chip] name", "'aras default' is not allowed", "allowed: a non-empty name"]),
    ("missing table", _without_table("energy"),
     ["[energy]", "missing table", "allowed: the tables chip, crossbar, memory, gbuffer, latency, energy"]),
    ("unknown table", _without_table("latency") + "\n[latncy]\nsfu_lanes = 64\n",
     ["[latncy]", "unknown table", "did you mean 'latency'", "allowed: the tables chip"]),
    ("table as value", "energy = 1.0\n" + _without_table("energy"),
     ["[energy]", "expected a table, got float", "allowed: a table of the fields write_j_per_pulse"]),
    # the physics and this machine bound every count (issue 14: a compile with pes = 100000000 was killed)
    ("huge pes", _patched("chip", "pes", "100000000"), ["[chip] pes", "100000000 is not allowed", "1..65,536"]),
    ("too many APU rows", _patched("chip", "apu_rows_per_pe", "65536").replace("\npes = 96", "\npes = 65536"),
     ["[chip] pes", "4,294,967,296 APU rows", "allowed: pes x apu_rows_per_pe <= 1,048,576"]),
    ("cells beyond memory", _patched("crossbar", "rows", "4096").replace("apus_per_row = 4", "apus_per_row = 1024")
     .replace("\npes = 96", "\npes = 10000"), ["[chip] pes", "do not fit this machine's memory"]),
    ("too many banks", _patched("gbuffer", "banks_bytes", "[" + ", ".join(["1024"] * 33) + "]"),
     ["[gbuffer] banks_bytes", "is not allowed", "1..32 integers"]),
    ("huge clock", _patched("chip", "clock_hz", "1e300"), ["[chip] clock_hz", "<= 1e+12"]),
    ("syntax error", "[chip]\nname = \"x\"\npes = \n",
     ["TOML syntax error", "line 3, column"]),
]


@pytest.mark.parametrize("text, fragments", [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_rejected(tmp_path, text, fragments):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(HardwareConfigError) as caught:
        load_hardware(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unreadable_file_and_unknown_bundle_are_config_errors(tmp_path):
    with pytest.raises(HardwareConfigError, match="cannot read"):
        load_hardware(tmp_path / "absent.toml")
    with pytest.raises(HardwareConfigError, match="allowed: aras-default, baseline-15x256k"):
        bundled_hardware("aras-defualt")
    assert issubclass(HardwareConfigError, ValueError)


def test_module_imports_only_the_standard_library():
    """The runtime imports arasc.isa alone, so the chip model must not pull in the compiler."""
    tree = ast.parse(Path(hardware.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names)


def test_four_bit_cells_load_but_the_interpreter_refuses_them(tmp_path):
    from arasc.isa.hardware import check_interpretable

    hw = loads_hardware(_patched("crossbar", "cell_bits", "4"), "four.toml")  # the compiler can tile for it
    with pytest.raises(HardwareConfigError, match=r"four\.toml: \[crossbar\] cell_bits: 4-bit cells take up to 30"):
        check_interpretable(hw, "four.toml")
