"""One error path for the CLI (issue 14): every bad input is exit 2 with what and where, in plain
text; no traceback, nothing left behind. Each test is a bug the issue lists."""
import os
import re
import shutil
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest

from arasc.cli import UsageError, calibration_inputs, main

from conftest import compiled


def run_main(capfd, argv):
    status = main(argv)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    return status, err


@pytest.fixture
def program(tmp_path):
    """A copy of the compiled digits-cnn program and its weights in tmp_path."""
    _, path = compiled("digits-cnn")
    for suffix in (".aras", ".arasw"):
        shutil.copy(os.path.splitext(path)[0] + suffix, tmp_path / f"digits-cnn{suffix}")
    return tmp_path / "digits-cnn.aras"


def test_markup_in_a_path_is_printed_as_it_is(capfd, tmp_path):
    path = str(tmp_path / "[bold]" / "[/]x.aras")
    status, err = run_main(capfd, ["run", path])
    assert status == 2 and f"error: {path}: cannot read the program" in err


def test_markup_in_a_source_line_is_printed_as_it_is(capfd, program):
    program.write_text(program.read_text().replace("    bank {in=[0], out=[4]}", "    bogus [/] [red]", 1))
    status, err = run_main(capfd, ["run", str(program)])
    assert status == 2 and "bogus [/] [red]" in err and re.search(r"digits-cnn\.aras:\d+:5: unknown opcode", err)


def test_toml_errors_keep_their_table(capfd, program, tmp_path):
    from arasc.isa.hardware import default_hardware, dumps_hardware

    hw = tmp_path / "hw.toml"
    hw.write_text(dumps_hardware(default_hardware()).replace("\npes = 96", "\npes = 100000000"))
    status, err = run_main(capfd, ["run", str(program), "--hw", str(hw)])
    assert status == 2 and f"{hw}: [chip] pes: 100000000 is not allowed" in err


def test_emoji_codes_in_messages_stay_text(capfd):
    status, err = run_main(capfd, ["ir", "thumbs.py:thumbs_up:"])
    assert status == 2 and ":thumbs_up:" in err


def test_run_output_to_a_folder_is_refused_and_leaves_nothing(capfd, program, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    status, err = run_main(capfd, ["run", str(program), "--output", str(folder)])
    assert status == 2 and f"--output {folder}: is a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-cnn.aras", "digits-cnn.arasw", "out"]
    assert not list(folder.iterdir())


def test_run_output_in_a_missing_folder_is_refused(capfd, program, tmp_path):
    status, err = run_main(capfd, ["run", str(program), "--report", str(tmp_path / "no" / "r.json")])
    assert status == 2 and "--report" in err and "does not exist" in err


def read_only(folder, argv: list[str]) -> list[str]:
    """argv run with `folder` read-only. Root writes through any mode, so for root the folder is
    bound read-only onto itself in a private mount namespace (EROFS stops root too); anyone else
    gets the folder's mode."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return argv
    probe = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0"', str(folder)],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"root cannot make a read-only folder here: unshare/mount refused ({probe.stderr.strip()})")
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder), *argv]


@pytest.mark.parametrize("command", ["run --output", "compile -o"])
def test_output_in_a_read_only_folder_is_refused_and_leaves_nothing(program, tmp_path, command):
    folder = tmp_path / "ro"
    folder.mkdir()
    if command == "run --output":
        target = folder / "y.npz"
        argv = ["run", str(program), "--inferences", "1", "--output", str(target)]
    else:
        target = folder / "d.aras"
        argv = ["compile", "digits-cnn", "-o", str(target)]
    done = subprocess.run(read_only(folder, [sys.executable, "-m", "arasc.cli", *argv]), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    flag = command.split()[1]
    assert done.stderr == f"error: {flag} {target}: folder {folder} is not writable\n", done.stderr
    assert not list(folder.iterdir())


def test_a_write_failing_midway_names_the_output_and_leaves_nothing(tmp_path):
    """A disk that fills while the second of two outputs is written: neither file appears, no
    temporary remains, and the message names the output, not its temporary."""
    import errno

    from arasc.isa.atomic import OutputPathError, write_atomically

    def full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    first, second = tmp_path / "a.aras", tmp_path / "a.arasw"
    with pytest.raises(OutputPathError) as err:
        write_atomically([(str(first), lambda f: f.write(b"text")), (str(second), full)], "-o")
    assert str(err.value) == f"-o {second}: cannot write (No space left on device)"
    assert not list(tmp_path.iterdir())


def test_compile_to_a_folder_named_like_a_program_writes_nothing(capfd, tmp_path):
    (tmp_path / "x.aras").mkdir()
    status, err = run_main(capfd, ["compile", "digits-cnn", "-o", str(tmp_path / "x.aras")])
    assert status == 2 and "is a folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["x.aras"]


def test_flag_values_out_of_range_are_usage_errors(capsys, program):
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(program), "--adc-bits", "-1"])
    assert exit_.value.code == 2 and "--adc-bits: '-1': expected an integer in 1..32" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("empty", r"--input \S+x\.npy: input x: shape \[0\]"),
    ("object", r"--input \S+x\.npy: not a readable \.npy/\.npz array"),
    ("huge header", r"--input \S+x\.npy: not a readable \.npy/\.npz array"),
    ("nan", r"--input \S+x\.npy: input x: holds NaN"),
    ("strings", r"--input \S+x\.npy: input x: dtype <U1, the program expects real numbers"),
])
def test_bad_input_files_name_the_file(capfd, program, tmp_path, content, message):
    path = tmp_path / "x.npy"
    if content == "empty":
        np.save(path, np.zeros((0,), np.float32))
    elif content == "object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "huge header":  # claims 10^12 float32 elements, holds none
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    elif content == "nan":
        np.save(path, np.full((8, 1, 8, 8), np.nan, np.float32))
    else:
        np.save(path, np.full((8, 1, 8, 8), "a"))
    status, err = run_main(capfd, ["run", str(program), "--input", str(path), "--inferences", "1"])
    assert status == 2 and re.search(message, err), err


def test_infinite_inputs_saturate(capfd, program, tmp_path):
    """docs/isa.md: +-inf quantize to the codes 255 and 0 (the clamp), like any value past the scale."""
    x = np.zeros((8, 1, 8, 8), np.float32)
    x[0, 0, 0, :2] = [np.inf, -np.inf]
    np.save(tmp_path / "x.npy", x)
    status, _ = run_main(capfd, ["run", str(program), "--input", str(tmp_path / "x.npy"), "--inferences", "1"])
    assert status == 0
    from arasc.runtime.sfu import SFU_OPS

    assert SFU_OPS["quantize"]([x[0, 0, 0, :2]], {"scale": 0.1, "zp": 7}, {}).tolist() == [255, 0]


@pytest.mark.parametrize("samples, message", [
    (np.zeros((0, 1, 8, 8), np.float32), "expected \\[N, 1, 8, 8\\] with N >= 8"),
    (np.array([None, 1], dtype=object), "not a readable .npy array"),
    (np.zeros((), np.float32), "expected \\[N, 1, 8, 8\\]"),
    (np.full((8, 1, 8, 8), np.nan, np.float32), "holds NaN or infinite values"),
])
def test_bad_calibration_files_are_usage_errors(tmp_path, samples, message):
    path = tmp_path / "c.npy"
    np.save(path, samples, allow_pickle=True)
    with pytest.raises(UsageError, match=message):
        calibration_inputs(Namespace(calib=str(path)), (np.zeros((8, 1, 8, 8), np.float32),))


def test_a_factory_that_raises_is_a_model_error(capfd, tmp_path):
    (tmp_path / "m.py").write_text("def make():\n    raise RuntimeError('no model today')\n")
    status, err = run_main(capfd, ["ir", f"{tmp_path}/m.py:make"])
    assert status == 2 and "the factory raised RuntimeError: no model today" in err


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_torch_tracebacks_are_captured_for_wrong_shape_inputs(tmp_path, frontend):
    """The real CLI: torch logs its failures (with tracebacks) to stderr itself, beside arasc's message."""
    (tmp_path / "m.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(4, 2), (torch.zeros(1, 3),)\n")
    done = subprocess.run([sys.executable, "-m", "arasc.cli", "ir", f"{tmp_path}/m.py:make", "--frontend", frontend],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


def test_garbage_pt2_is_a_model_error(capfd, tmp_path):
    (tmp_path / "g.pt2").write_bytes(b"\x00garbage" * 100)
    status, err = run_main(capfd, ["ir", str(tmp_path / "g.pt2")])
    assert status == 2 and err.startswith(f"error: {tmp_path / 'g.pt2'}: not a readable torch.export archive")


def test_ir_text_is_not_a_model(capfd, tmp_path):
    """docs/ir.md: the text `arasc ir` prints is for reading; given back as MODEL it is refused."""
    (tmp_path / "m.ir").write_text("graph m(%x: f32[1]) {\n}\n")
    status, err = run_main(capfd, ["ir", str(tmp_path / "m.ir")])
    assert status == 2 and "for reading only" in err


def test_successful_runs_still_show_library_warnings(capfd, program):
    status, err = run_main(capfd, ["run", str(program), "--inferences", "1"])
    assert status == 0 and err == ""
