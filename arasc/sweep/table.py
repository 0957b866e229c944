"""The result table: one CSV row per finished point, appended and flushed to disk the moment the
point finishes, so a crash or Ctrl-C loses nothing finished and a re-run skips it.

The header is the spec's columns; a table whose header differs was written by another spec and
is refused rather than mixed. A row cut short by a crash mid-write (the last line, without its
newline) is dropped when the table is opened: that point runs again. Values are written as
Python prints them (lists as JSON arrays), None as an empty cell."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from ..isa.atomic import write_bytes_atomically


class TableError(ValueError):
    """A table this sweep cannot append to (exit 2)."""


class ResultTable:
    def __init__(self, path: str, columns: list[str]):
        self.path, self.columns = path, columns

    def open(self) -> dict[str, str]:
        """Read the table there, if any: {point_id: status} of its rows. A new table is written at
        its first row, so a sweep that fails before any point leaves no file."""
        if not os.path.exists(self.path):
            return {}
        with open(self.path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):  # a row cut by a crash: drop it, its point runs again
            data = data[:data.rfind(b"\n") + 1]
            write_bytes_atomically(self.path, data, "--out")
        rows = list(csv.reader(io.StringIO(data.decode("utf-8", errors="replace"))))
        if not rows or rows[0] != self.columns:
            found = ", ".join(rows[0]) if rows else "nothing"
            raise TableError(f"--out {self.path}: a table with other columns ({found}) than this spec's "
                             f"({', '.join(self.columns)}): it was written by another sweep; give another --out")
        return {row[0]: row[1] for row in rows[1:] if row}

    def drop(self, point_ids: set[str]) -> None:
        """Rewrite the table without the rows of these points (--retry-failed)."""
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        kept = [lines[0]] + [line for line in lines[1:] if next(csv.reader([line]))[0] not in point_ids]
        write_bytes_atomically(self.path, "".join(kept).encode(), "--out")

    def append(self, row: dict[str, Any]) -> None:
        if not os.path.exists(self.path):
            write_bytes_atomically(self.path, _line(self.columns).encode(), "--out")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_line([_cell(row.get(c)) for c in self.columns]))
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, str]]:
        with open(self.path, encoding="utf-8") as f:
            return list(csv.DictReader(f))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return " | ".join(str(value).splitlines())  # one line per row: a cut row is then a cut line


def _line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()
