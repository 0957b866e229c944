"""The progress display shows on the terminal the command runs in, and nowhere else (issue 15):
the CLI captures file descriptor 2 for the libraries' noise, so the display must go to the
terminal it saved before that."""
from __future__ import annotations

import os
import pty
import subprocess
import sys


def terminal_output(args: list[str]) -> str:
    """What `arasc ARGS` shows on a pseudo-terminal (stdout and stderr both on it)."""
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "arasc.cli", *args], stdin=follower, stdout=follower,
                             stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:   # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert child.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


def test_a_compile_on_a_terminal_shows_its_stages(tmp_path):
    shown = terminal_output(["compile", "digits-cnn", "-o", str(tmp_path / "d.aras")])
    assert "quantize" in shown and "banks" in shown   # stage names, which only the display prints
    assert "wrote" in shown


def test_quiet_shows_no_progress(tmp_path):
    shown = terminal_output(["compile", "digits-cnn", "-o", str(tmp_path / "d.aras"), "--quiet"])
    assert "quantize" not in shown and "wrote" in shown


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path):
    done = subprocess.run([sys.executable, "-m", "arasc.cli", "compile", "digits-cnn", "-o", str(tmp_path / "d.aras")],
                          capture_output=True, text=True, check=True)
    assert "quantize" not in done.stderr + done.stdout
