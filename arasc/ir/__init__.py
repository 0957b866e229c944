"""The layer IR: data structures, op table, printer, parser, verifier and float evaluator."""
from . import qops  # noqa: F401
from .evaluate import evaluate
from .graph import DTYPES, Graph, Layer, Loc, Model, TensorType, Value, WeightRef
from .ops import OPS, OpDef
from .printer import print_graph
from .verify import VerifyError, infer_type, verify_graph, verify_model

__all__ = [
    "DTYPES", "Graph", "IRParseError", "Layer", "Loc", "Model", "OPS", "OpDef", "TensorType", "Value",
    "VerifyError", "WeightRef", "evaluate", "infer_type", "parse_graph", "print_graph", "verify_graph",
    "verify_model",
]


def __getattr__(name: str):
    """The IR parser, imported when first asked for: it builds a lark grammar (0.1-0.3 s), and
    compiling a model never parses IR text."""
    if name in ("IRParseError", "parse_graph"):
        from . import parser

        return getattr(parser, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
