"""Every file arasc writes goes through here: each output is written to a temporary file beside
it and renamed into place once complete, so a failure leaves neither a half-written file nor a
temporary behind, and an output path that cannot be written is reported before any work."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO


class OutputPathError(ValueError):
    """An output path arasc cannot write: the message names it and says why."""


def check_output_path(path: str | os.PathLike, flag: str = "") -> None:
    """Refuse, before any work, a path that names a folder, lies in a missing folder, or lies in
    a folder this process cannot write."""
    path = os.fspath(path)
    where = f"{flag} {path}" if flag else path
    if not path or path.endswith(os.sep):
        raise OutputPathError(f"{where}: not a file name")
    if os.path.isdir(path):
        raise OutputPathError(f"{where}: is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputPathError(f"{where}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{where}: folder {folder} is not writable")


def write_atomically(outputs: list[tuple[str, Callable[[IO[bytes]], object]]], flag: str = "") -> None:
    """Write each (path, writer) pair: writer(file) fills a temporary file in the path's folder;
    once all are complete they are renamed into place. On any failure no temporary remains and
    no path has changed."""
    for path, _ in outputs:
        check_output_path(path, flag)
    temps: list[tuple[str, str]] = []
    current = outputs[0][0] if outputs else ""  # the output being written: errors name it, not its temporary
    try:
        for path, write in outputs:
            current = path
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".arasc-", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it (mkstemp makes it private)
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
    except OSError as err:
        where = f"{flag} {current}" if flag else current
        raise OutputPathError(f"{where}: cannot write ({err.strerror or err})") from None
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomically(path: str, data: bytes, flag: str = "") -> None:
    write_atomically([(path, lambda f: f.write(data))], flag)
