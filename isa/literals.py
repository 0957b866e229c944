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
        return int(t)

    def float(self, t):
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
