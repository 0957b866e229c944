"""Attribute literals shared by the `.aras` text and the compiler's IR text: ints, floats
(Python's shortest round-tripping repr, nan, inf), JSON strings, booleans and lists, written
`{key=value, ...}`. One printer and one lark transformer for both formats, so they cannot drift."""
from __future__ import annotations

import json
import math

from lark import Transformer, v_args

# The grammar rules both formats include (terminals SIGNED_INT, FLOAT, SPECIAL, STRING, NAME).
VALUE_GRAMMAR = r"""
attrs: "{" [attr ("," attr)*] "}"
attr: NAME "=" value
?value: SIGNED_INT -> int
      | FLOAT -> float
      | SPECIAL -> float
      | STRING -> string
      | "true" -> true
      | "false" -> false
      | "[" [value ("," value)*] "]" -> list
SIGNED_INT.2: /-?[0-9]+(?![0-9.eE])/
FLOAT: /-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?/
SPECIAL.3: "nan" | "inf" | "-inf"
STRING: /"(\\.|[^"\\])*"/
"""


MAX_LITERAL_CHARS = 100   # beyond any int64 or float: longer literals are refused, not converted
MAX_NESTING = 16          # brackets inside brackets: beyond any attribute or type the formats use


class LiteralError(ValueError):
    """A literal the formats refuse; `token` holds its position."""

    def __init__(self, token, message: str):
        super().__init__(message)
        self.token = token


def checked_int(token) -> int:
    """int(token), refusing literals too long to be any integer the formats use (Python would
    otherwise convert, slowly, or refuse past 4,300 digits)."""
    if len(token) > MAX_LITERAL_CHARS:
        raise LiteralError(token, f"integer literal of {len(token):,} characters: too large")
    return int(token)


def nesting_error(source: str) -> tuple[int, int, str] | None:
    """(line, column, message) of the first bracket nested deeper than MAX_NESTING, outside strings
    and comments; checked before parsing so that no parser recurses that deep."""
    depth, line, column, in_string, escaped, in_comment = 0, 1, 0, False, False, False
    for char in source:
        column += 1
        if char == "\n":
            line, column, in_comment = line + 1, 0, False
        elif in_comment:
            continue
        elif in_string:
            in_string = not (char == '"' and not escaped)
            escaped = char == "\\" and not escaped
        elif char == '"':
            in_string, escaped = True, False
        elif char in ";#":
            in_comment = True
        elif char in "[{(":
            depth += 1
            if depth > MAX_NESTING:
                return line, column, f"brackets nested deeper than {MAX_NESTING}"
        elif char in "]})":
            depth = max(depth - 1, 0)
    return None


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


def format_attrs(attrs) -> str:
    return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in attrs) + "}"


@v_args(inline=True)
class LiteralTransformer(Transformer):
    """Turns the VALUE_GRAMMAR rules into Python values; `attrs` gives a tuple of (key, value)."""

    def int(self, t):
        return checked_int(t)

    def float(self, t):
        if len(t) > MAX_LITERAL_CHARS:
            raise LiteralError(t, f"number literal of {len(t):,} characters: too long")
        return float(t)

    def string(self, t):
        return json.loads(t)

    def true(self):
        return True

    def false(self):
        return False

    def list(self, *items):
        return tuple(i for i in items if i is not None)

    def attr(self, key, value):
        return (str(key), value)

    def attrs(self, *items):
        return tuple(i for i in items if i is not None)
