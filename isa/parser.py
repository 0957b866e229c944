"""Parse `.aras` text (lark, LALR) into a `Program`, with file:line:col errors.

The grammar has one rule per opcode, named after it (a test checks the opcode table against
these rule names)."""
from __future__ import annotations

from lark import Lark, Token, UnexpectedInput, v_args
from lark.exceptions import VisitError

from .diagnostics import render_error
from .literals import VALUE_GRAMMAR, LiteralError, LiteralTransformer, checked_int, nesting_error
from .opcodes import BANK_ATTRS, OPCODES
from .program import DTYPES, Instr, LayerDef, Port, Program, TensorSpec

GRAMMAR = r"""
start: _NL* (_item _NL+)* _item?
_item: header | stream | _instr

header: arasc_dir | program_dir | hw_dir | weights_dir | input_dir | output_dir | layer_dir
arasc_dir: ".arasc" VERSION
program_dir: ".program" NAME
hw_dir: ".hw" NAME "sha256" "=" HEX
weights_dir: ".weights" PATH "sha256" "=" HEX
input_dir: ".input" NAME type attrs?
output_dir: ".output" NAME VAR type attrs?
layer_dir: ".layer" NAME NAME attrs weights
stream: ".stream" NAME

_instr: wr | signal | wait | load | store | bank | mvm | sfu | release
wr: "wr" NAME "[" INT "]" "->" rows
signal: "signal" TOKEN
wait: "wait" TOKEN
load: "load" VAR "<-" NAME ":" type
store: "store" VAR "->" NAME
bank: "bank" attrs
mvm: "mvm" VAR "=" NAME "(" VAR ")" "blocks" "(" INT ".." INT ")" rows ":" type
sfu: "sfu" VAR "=" NAME "(" [VAR ("," VAR)*] ")" attrs? weights? ":" type
release: "release" rows

rows: "rows" "(" span ("," span)* ")"
span: INT (".." INT)?
weights: "[" weight ("," weight)* "]"
weight: NAME "=" WREF ":" type
type: NAME "[" [INT ("," INT)*] "]"

VAR: "%" IDENT
WREF: "@" IDENT
TOKEN: "$" IDENT
IDENT: /[A-Za-z0-9_][A-Za-z0-9_.\-]*/
NAME: /[A-Za-z_][A-Za-z0-9_.\-]*/
PATH: /[^\s;]+/
VERSION: /[0-9]+\.[0-9]+/
HEX: /[0-9a-f]{64}/
INT: /[0-9]+/
COMMENT: /;[^\n]*/
_NL: /\r?\n/
%ignore /[ \t]+/
%ignore COMMENT
""" + VALUE_GRAMMAR

_TERMINALS = {"VAR": "%value", "WREF": "@weight", "TOKEN": "$token", "NAME": "name", "INT": "integer",
              "SIGNED_INT": "integer", "FLOAT": "number", "STRING": "string", "HEX": "64 hex digits",
              "_NL": "end of line", "COMMA": "','", "RSQB": "']'", "LSQB": "'['", "LPAR": "'('",
              "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "COLON": "':'", "EQUAL": "'='"}


class ProgramError(ValueError):
    """A malformed or inconsistent `.aras` program; the message starts with file:line:col."""


_Positioned = LiteralError  # a message about the token it holds

MAX_ROWS = 1 << 20   # rows one instruction may list: beyond any chip's APU rows (isa/hardware.py)
MAX_DIMS = 8         # dimensions of a type


def _spans_to_rows(spans, meta) -> tuple[int, ...]:
    if sum(end - start + 1 for start, end in spans) > MAX_ROWS:
        raise _Positioned(meta, f"more than {MAX_ROWS:,} rows listed")
    rows = []
    for start, end in spans:
        rows.extend(range(start, end + 1))
    return tuple(rows)


@v_args(inline=True)
class _Build(LiteralTransformer):
    def attr(self, key, value):
        return (key, value)  # the key's token, for the position of a duplicate

    def attrs(self, *items):
        items = [i for i in items if i is not None]
        seen = set()
        for key, _ in items:
            if str(key) in seen:
                raise _Positioned(key, f"attribute {key} is given twice")
            seen.add(str(key))
        return ("attrs", tuple((str(key), value) for key, value in items))

    def type(self, dtype, *dims):
        if dtype not in DTYPES:
            raise _Positioned(dtype, f"unknown dtype '{dtype}'; allowed: {', '.join(DTYPES)}")
        dims = [d for d in dims if d is not None]
        if len(dims) > MAX_DIMS:
            raise _Positioned(dtype, f"a type of {len(dims)} dimensions; at most {MAX_DIMS}")
        return TensorSpec(str(dtype), tuple(checked_int(d) for d in dims))

    def weight(self, role, ref, spec):
        return (str(role), str(ref)[1:], spec)

    def weights(self, *items):
        return ("weights", tuple(items))

    def span(self, a, b=None):
        token = a
        a = checked_int(a)
        b = a if b is None else checked_int(b)
        if b < a:
            raise _Positioned(token, f"empty row range {a}..{b}")
        return (a, b)

    @v_args(inline=True, meta=True)
    def rows(self, meta, *spans):
        return ("rows", _spans_to_rows(spans, meta))

    # ---- headers ------------------------------------------------------------------------
    def header(self, item):
        return item

    def arasc_dir(self, v):
        return ("version", str(v), v.line)

    def program_dir(self, n):
        return ("program", str(n), n.line)

    def hw_dir(self, name, digest):
        return ("hw", (str(name), str(digest)), name.line)

    def weights_dir(self, path, digest):
        return ("weights", (str(path), str(digest)), path.line)

    def input_dir(self, name, spec, attrs=None):
        return ("input", Port(str(name), "", spec, attrs[1] if attrs else (), name.line), name.line)

    def output_dir(self, name, var, spec, attrs=None):
        return ("output", Port(str(name), str(var)[1:], spec, attrs[1] if attrs else (), name.line), name.line)

    def layer_dir(self, name, op, attrs, weights):
        return ("layer", LayerDef(str(name), str(op), attrs[1], weights[1], name.line), name.line)

    def stream(self, name):
        if name not in ("write", "compute"):
            raise _Positioned(name, f"unknown stream '{name}'; streams are write and compute")
        return ("stream", str(name), name.line)

    # ---- instructions -------------------------------------------------------------------
    @staticmethod
    def _instr(opcode, meta, **args):
        return Instr(opcode, args, meta.line, meta.column)

    @v_args(inline=True, meta=True)
    def wr(self, meta, layer, block, rows):
        return self._instr("wr", meta, layer=str(layer), block=checked_int(block), rows=rows[1])

    @v_args(inline=True, meta=True)
    def signal(self, meta, token):
        return self._instr("signal", meta, token=str(token)[1:])

    @v_args(inline=True, meta=True)
    def wait(self, meta, token):
        return self._instr("wait", meta, token=str(token)[1:])

    @v_args(inline=True, meta=True)
    def load(self, meta, var, port, spec):
        return self._instr("load", meta, out=str(var)[1:], port=str(port), type=spec)

    @v_args(inline=True, meta=True)
    def store(self, meta, var, port):
        return self._instr("store", meta, value=str(var)[1:], port=str(port))

    @v_args(inline=True, meta=True)
    def bank(self, meta, attrs):
        given = dict(attrs[1])
        if not {"in", "out"} <= set(given) <= {"in", "out", "spill"} or len(given) != len(attrs[1]):
            raise _Positioned(meta, "bank takes {in=[...], out=[...]} and optionally spill=BYTES, each once")
        for key, value in given.items():
            problem = BANK_ATTRS[key].problem(value, 0)
            if problem:
                raise _Positioned(meta, f"bank {key}: {problem}; allowed: {BANK_ATTRS[key]}")
        return self._instr("bank", meta, **{"in": tuple(given["in"]), "out": tuple(given["out"]),
                                            "spill": int(given.get("spill", 0))})

    @v_args(inline=True, meta=True)
    def mvm(self, meta, out, layer, inp, a, b, rows, spec):
        return self._instr("mvm", meta, out=str(out)[1:], layer=str(layer), input=str(inp)[1:],
                           blocks=(checked_int(a), checked_int(b)), rows=rows[1], type=spec)

    @v_args(inline=True, meta=True)
    def sfu(self, meta, out, op, *rest):
        inputs = tuple(str(t)[1:] for t in rest if isinstance(t, Token) and t.type == "VAR")
        parts = dict(p for p in rest if isinstance(p, tuple))
        spec = next(p for p in rest if isinstance(p, TensorSpec))
        return self._instr("sfu", meta, out=str(out)[1:], op=str(op), inputs=inputs, attrs=parts.get("attrs", ()),
                           weights=parts.get("weights", ()), type=spec)

    @v_args(inline=True, meta=True)
    def release(self, meta, rows):
        return self._instr("release", meta, rows=rows[1])


_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True, propagate_positions=True)
GRAMMAR_RULES = frozenset(str(rule.origin.name) for rule in _PARSER.rules)
_KEYWORDS = {t.name: repr(t.pattern.value) for t in _PARSER.terminals if t.pattern.type == "str"}


def _describe(terminal: str) -> str:
    return _TERMINALS.get(terminal) or _KEYWORDS.get(terminal) or terminal.lower().strip("_")


def parse_program(source: str, filename: str = "<program>") -> Program:
    def fail(line, column, message):
        raise ProgramError(render_error(source, filename, line, column, message)) from None

    deep = nesting_error(source)
    if deep:
        fail(*deep)
    try:
        tree = _PARSER.parse(source)
    except UnexpectedInput as err:
        token = getattr(err, "token", None)
        message = "unexpected end of file" if token is not None and token.type == "$END" else "syntax error"
        expected = sorted({_describe(t) for t in getattr(err, "expected", None) or ()})
        line_text = source.splitlines()[err.line - 1] if 0 < err.line <= len(source.splitlines()) else ""
        if token is not None and token.type != "$END" and not line_text[:err.column - 1].strip():
            word = str(token).split()[0] if str(token).strip() else str(token)
            message = f"unknown opcode or directive '{word}'; opcodes: {', '.join(sorted(OPCODES))}"
        elif expected:
            message += f"; expected one of: {', '.join(expected[:12])}"
        fail(err.line, err.column, message)
    try:
        items = _Build().transform(tree).children
    except VisitError as err:
        if isinstance(err.orig_exc, _Positioned):
            tok = err.orig_exc.token
            fail(getattr(tok, "line", 0) or 0, getattr(tok, "column", 1) or 1, str(err.orig_exc))
        raise

    header: dict = {"input": [], "output": [], "layer": []}
    streams: dict[str, list[Instr]] = {"write": [], "compute": []}
    current = None
    for item in items:
        if isinstance(item, Instr):
            if current is None:
                fail(item.line, item.column, "instruction before any `.stream write` or `.stream compute`")
            streams[current].append(item)
            continue
        kind, value, line = item
        if kind == "stream":
            current = value
        elif kind in ("input", "output", "layer"):
            header[kind].append(value)
        elif kind in header:
            fail(line, 1, f"second .{kind} directive")
        else:
            header[kind] = value
    for kind in ("version", "program", "hw", "weights"):
        if kind not in header:
            fail(1, 1, f"missing .{'arasc' if kind == 'version' else kind} directive")
    return Program(header["program"], header["hw"], header["weights"], tuple(header["input"]),
                   tuple(header["output"]), tuple(header["layer"]), tuple(streams["write"]),
                   tuple(streams["compute"]), header["version"])
