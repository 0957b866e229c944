"""Parser for the textual layer IR (`print_graph` output), with file:line:col errors."""
from __future__ import annotations

import json

from lark import Lark, Token, UnexpectedInput, v_args
from lark.exceptions import VisitError

from ..isa.diagnostics import render_error
from ..isa.literals import VALUE_GRAMMAR, LiteralTransformer
from .graph import DTYPES, Graph, Layer, Loc, TensorType, Value, WeightRef

GRAMMAR = r"""
start: _NL* graph _NL*
graph: "graph" NAME attrs? _NL+ (input _NL+)* (layer _NL+)* output _NL+ "end"
input: "input" VAR ":" type
layer: VAR "=" NAME "(" [VAR ("," VAR)*] ")" attrs? weights? ":" type loc?
weights: "[" weight ("," weight)* "]"
weight: NAME "=" WREF ":" type
output: "output" VAR ("," VAR)*
type: NAME "[" [SIGNED_INT ("," SIGNED_INT)*] "]"
loc: "loc" "(" STRING ":" SIGNED_INT ")"

VAR: "%" IDENT
WREF: "@" IDENT
IDENT: /[A-Za-z0-9_][A-Za-z0-9_.\-]*/
NAME: /[A-Za-z_][A-Za-z0-9_.\-]*/
COMMENT: /#[^\n]*/
_NL: /\r?\n/
%ignore /[ \t]+/
%ignore COMMENT
""" + VALUE_GRAMMAR


class IRParseError(ValueError):
    """A syntax or content error in IR text, rendered as file:line:col with a caret."""


_TERMINALS = {"VAR": "%value", "WREF": "@weight", "NAME": "name", "IDENT": "name", "SIGNED_INT": "integer",
              "FLOAT": "number", "STRING": "string", "_NL": "end of line", "END": "'end'", "COMMA": "','",
              "RSQB": "']'", "LSQB": "'['", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'",
              "COLON": "':'", "EQUAL": "'='"}


@v_args(inline=True)
class _ToGraph(LiteralTransformer):
    def __init__(self, source: str, filename: str):
        super().__init__()
        self.source, self.filename = source, filename

    def _fail(self, token: Token, message: str):
        raise IRParseError(render_error(self.source, self.filename, token.line, token.column, message))

    def type(self, dtype, *dims):
        if dtype not in DTYPES:
            self._fail(dtype, f"unknown dtype '{dtype}'; allowed: {', '.join(DTYPES)}")
        return TensorType(str(dtype), tuple(int(d) for d in dims if d is not None))

    def loc(self, file, line):
        return Loc(json.loads(file), int(line))

    def weight(self, role, ref, type_):
        return (str(role), WeightRef(str(ref)[1:], type_))

    def weights(self, *items):
        return tuple(items)

    def input(self, var, type_):
        return Value(str(var)[1:], type_)

    def output(self, *vars_):
        return ("output", tuple(str(v)[1:] for v in vars_))

    def layer(self, var, op, *rest):
        inputs, attrs, weights, type_, loc = [], (), (), None, None
        for item in rest:
            if isinstance(item, Token):
                inputs.append(str(item)[1:])
            elif isinstance(item, TensorType):
                type_ = item
            elif isinstance(item, Loc):
                loc = item
            elif isinstance(item, tuple) and item and isinstance(item[0][1], WeightRef):
                weights = item
            elif isinstance(item, tuple):
                attrs = item
        return Layer(str(var)[1:], str(op), tuple(inputs), type_, attrs, weights, loc)

    def graph(self, name, *items):
        meta, inputs, layers, outputs = (), [], [], ()
        for item in items:
            if isinstance(item, Value):
                inputs.append(item)
            elif isinstance(item, Layer):
                layers.append(item)
            elif isinstance(item, tuple) and item and item[0] == "output":
                outputs = item[1]
            elif isinstance(item, tuple):
                meta = item
        return Graph(str(name), tuple(inputs), tuple(layers), outputs, meta)

    def start(self, graph):
        return graph


_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True)


def parse_graph(source: str, filename: str = "<ir>") -> Graph:
    try:
        tree = _PARSER.parse(source)
    except UnexpectedInput as err:
        message = "unexpected end of input" if getattr(err, "token", None) == "" else "syntax error"
        expected = sorted({_TERMINALS.get(t, t.lower()) for t in
                           getattr(err, "expected", None) or getattr(err, "allowed", None) or ()})
        if expected:
            message += f"; expected one of: {', '.join(expected[:8])}"
        raise IRParseError(render_error(source, filename, err.line, err.column, message)) from None
    try:
        return _ToGraph(source, filename).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, IRParseError):
            raise err.orig_exc from None
        raise
