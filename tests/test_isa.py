"""The .aras ISA: round trip, opcode table coverage, and malformed programs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arasc.isa.opcodes import OPCODES
from arasc.isa.parser import GRAMMAR_RULES, ProgramError, parse_program
from arasc.isa.printer import print_program

from conftest import compiled

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["digits-cnn", "bert-base-small"])
def test_program_text_round_trips(name):
    result, path = compiled(name)
    text = Path(path).read_text()
    assert parse_program(text, path) == result.program
    assert print_program(parse_program(text)) == text


def test_every_opcode_has_grammar_emitter_handler_and_doc():
    from arasc.runtime.machine import Machine

    emitted = set()
    for name in ("digits-cnn", "bert-base-small"):
        program = compiled(name)[0].program
        emitted |= {i.opcode for i in program.write + program.compute}
    handlers = set(Machine(compiled("digits-cnn")[0].program, {}, _hw()).handlers)
    docs = (ROOT / "docs" / "isa.md").read_text()
    for opcode in OPCODES:
        assert opcode in GRAMMAR_RULES, f"{opcode}: no grammar rule"
        assert opcode in emitted, f"{opcode}: the backend never emits it"
        assert opcode in handlers, f"{opcode}: no interpreter handler"
        assert f"### `{opcode}`" in docs, f"{opcode}: no entry in docs/isa.md"
    assert handlers == set(OPCODES)


def _hw():
    from arasc.isa.hardware import default_hardware

    return default_hardware()


def test_compiling_twice_gives_identical_bytes(tmp_path):
    from arasc.cli import main

    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        assert main(["compile", "digits-cnn", "-o", str(tmp_path / run / "d.aras")]) == 0
    for suffix in ("aras", "arasw"):
        assert (tmp_path / "a" / f"d.{suffix}").read_bytes() == (tmp_path / "b" / f"d.{suffix}").read_bytes()


def mangled(edit):
    _, path = compiled("digits-cnn")
    return edit(Path(path).read_text())


CASES = {
    "unknown opcode": (lambda t: t.replace("    mvm %features.0", "    mvx %features.0", 1),
                       r"unknown opcode or directive 'mvx'"),
    "bad operand": (lambda t: t.replace("rows(0)", "rows(zero)", 1), r"syntax error; expected one of"),
    "truncated file": (lambda t: t[:t.index("rows(", t.index(".stream compute")) + 6], r"unexpected end of file"),
    "unknown dtype": (lambda t: t.replace(": u8[8,16,8,8]", ": q8[8,16,8,8]", 1), r"unknown dtype 'q8'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_syntax_errors_point_at_file_line_col(case):
    edit, message = CASES[case]
    with pytest.raises(ProgramError) as err:
        parse_program(mangled(edit), "prog.aras")
    first = str(err.value).splitlines()[0]
    assert re.match(r"prog\.aras:\d+:\d+: ", first), first
    assert re.search(message, first), first


SEMANTIC = {
    "missing token": (lambda t: t.replace("    signal $w.features.0\n", "", 1),
                      r"wait \$w.features.0 has no matching signal"),
    "row out of range": (lambda t: t.replace("wr features.0[0] -> rows(0)", "wr features.0[0] -> rows(999)", 1),
                         r"APU row 999 is out of range"),
    "block out of range": (lambda t: t.replace("wr features.4[1]", "wr features.4[7]", 1), r"block 7 out of range"),
    "write while computing": (lambda t: t.replace("wr features.4[0] -> rows(1)", "wr features.4[0] -> rows(0)", 1),
                              r"APU row (0|1) (may be written here while|must hold)"),
    "deadlock": (lambda t: t.replace("    wait $w.features.0\n", "    wait $c.features.4\n", 1), r"deadlock"),
    "undefined value": (lambda t: t.replace("(%x.q)", "(%nothing)", 1), r"%nothing is read before"),
}


@pytest.mark.parametrize("case", sorted(SEMANTIC))
def test_inconsistent_programs_are_rejected_before_running(case, tmp_path):
    edit, message = SEMANTIC[case]
    _, path = compiled("digits-cnn")
    program = tmp_path / "prog.aras"
    program.write_text(mangled(edit))
    (tmp_path / Path(path).with_suffix(".arasw").name).write_bytes(Path(path).with_suffix(".arasw").read_bytes())
    result = subprocess.run([sys.executable, "-m", "arasc.cli", "run", str(program)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert re.search(r"prog\.aras:\d+:\d+: ", result.stderr), result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_checksum_mismatch_is_reported(tmp_path):
    _, path = compiled("digits-cnn")
    program = tmp_path / "d.aras"
    program.write_text(Path(path).read_text().replace(f".weights {Path(path).stem}.arasw", ".weights d.arasw"))
    weights = bytearray(Path(path).with_suffix(".arasw").read_bytes())
    weights[-1] ^= 1
    (tmp_path / "d.arasw").write_bytes(bytes(weights))
    result = subprocess.run([sys.executable, "-m", "arasc.cli", "run", str(program)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "checksum mismatch" in result.stderr and "Traceback" not in result.stderr


def test_missing_program_file():
    result = subprocess.run([sys.executable, "-m", "arasc.cli", "run", "no/such.aras"], capture_output=True, text=True)
    assert result.returncode == 2 and "cannot read the program" in result.stderr
