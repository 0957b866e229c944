"""The layer IR: data structures, op table, printer, parser, verifier and float evaluator."""
from . import qops  # noqa: F401
from .evaluate import evaluate
from .graph import DTYPES, Graph, Layer, Loc, Model, TensorType, Value, WeightRef
from .ops import OPS, OpDef
from .parser import IRParseError, parse_graph
from .printer import print_graph
from .verify import VerifyError, infer_type, verify_graph, verify_model

__all__ = [
    "DTYPES", "Graph", "IRParseError", "Layer", "Loc", "Model", "OPS", "OpDef", "TensorType", "Value",
    "VerifyError", "WeightRef", "evaluate", "infer_type", "parse_graph", "print_graph", "verify_graph",
    "verify_model",
]
