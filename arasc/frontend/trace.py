"""Capture a PyTorch model as an fx graph with static shapes.

Two front doors (DESIGN.md section 1): `torch.fx.symbolic_trace` keeps module boundaries and
names; where it cannot trace (data-dependent Python, Hugging Face transformers 5.x),
`torch.export` captures an fx graph of ATen ops instead. Shapes come from running the graph in
both cases (on the example inputs after fx, `_ShapeRecorder`; export's own fake tensors),
never re-derived by hand.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.fx

from .errors import TORCH_DIR, FrontendError, torch_reason


@dataclass
class Captured:
    """An fx graph plus what lowering needs to read it."""

    graph: torch.fx.Graph
    root: torch.nn.Module            # owner of call_module / get_attr targets
    constants: dict[str, torch.Tensor]  # placeholder name -> parameter/buffer (export only)
    param_names: dict[str, str]       # placeholder name -> fully qualified parameter name (export only)
    kind: str                          # "fx" or "export"
    source_params: int


def node_shape(node: torch.fx.Node):
    """The propagated tensor metadata of a node: (shape, dtype), or None for non-tensors."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(val.shape), val.dtype
    return node.meta.get("shape_dtype")


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the graph on the example inputs and records each tensor node's (shape, dtype) in
    `node.meta["shape_dtype"]`. fx's `ShapeProp` records more (strides, quantization, symbolic
    sizes) and imports sympy and torch's symbolic shapes for it, 0.4 s of every compile."""

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["shape_dtype"] = (tuple(result.shape), result.dtype)
        return result


class _Tracer(torch.fx.Tracer):
    """symbolic_trace that records each node's innermost source line outside torch, the one frame
    error messages and IR locations use (errors.source_location). torch.fx's own
    `record_stack_traces` formats the whole stack of every node: 1.2 of ResNet-50's 1.4 s."""

    def create_node(self, *args, **kwargs) -> torch.fx.Node:
        node = super().create_node(*args, **kwargs)
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(TORCH_DIR):
            frame = frame.f_back
        if frame is not None:
            node.stack_trace = f'File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}'
        return node


def capture_fx(module: torch.nn.Module, example_inputs: tuple) -> Captured:
    tracer = _Tracer()
    graph = tracer.trace(module)
    gm = torch.fx.GraphModule(tracer.root, graph)
    # Real tensors, not fake ones: fake propagation is faster here, but measured on BERT-Base the
    # integer evaluations after it (quantize, shift-weights) ran 2-3x slower.
    with torch.no_grad():
        _ShapeRecorder(gm).run(*example_inputs)
    params = sum(p.numel() for p in module.parameters())
    return Captured(gm.graph, gm, {}, {}, "fx", params)


def capture_export(program: torch.export.ExportedProgram) -> Captured:
    sig = program.graph_signature
    sources: dict[str, str] = {}
    sources.update(sig.inputs_to_parameters)
    sources.update(sig.inputs_to_buffers)
    sources.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    tensors: dict[str, Any] = {**program.state_dict, **program.constants}
    constants = {ph: tensors[name].detach() for ph, name in sources.items()}
    params = sum(t.numel() for n, t in program.state_dict.items() if n in set(sig.inputs_to_parameters.values()))
    return Captured(program.graph, program.graph_module, constants, dict(sources), "export", params)


def export_module(module: torch.nn.Module, example_inputs: tuple) -> torch.export.ExportedProgram:
    return torch.export.export(module, tuple(example_inputs), strict=False)


def capture(module: torch.nn.Module, example_inputs: tuple, frontend: str = "auto") -> Captured:
    """fx first (frontend="auto"), torch.export when fx cannot trace the model."""
    if frontend not in ("auto", "fx", "export"):
        raise ValueError(f"frontend must be auto, fx or export, not {frontend!r}")
    module = module.eval()
    if frontend in ("auto", "fx"):
        try:
            return capture_fx(module, example_inputs)
        except FrontendError:
            raise
        except Exception as err:
            if frontend == "fx":
                raise FrontendError(f"torch.fx.symbolic_trace cannot trace {type(module).__name__}: "
                                    f"{torch_reason(err)}. Try --frontend export.") from None
    try:
        return capture_export(export_module(module, example_inputs))
    except Exception as err:
        raise FrontendError(f"neither torch.fx nor torch.export can capture {type(module).__name__}: "
                            f"{torch_reason(err)}") from None
