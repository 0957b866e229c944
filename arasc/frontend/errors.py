"""Errors the frontend reports about the user's model (exit status 2 in the CLI)."""
from __future__ import annotations

import os
import re

import torch

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
TORCH_DIR = os.path.dirname(torch.__file__)
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FrontendError(ValueError):
    """The model uses something arasc cannot lower; the message names the op, node and source line."""


def torch_reason(err: BaseException, limit: int = 400) -> str:
    """`Type: first line` of an exception torch raised: its later lines (stack traces torch puts in
    some messages, hints) are not the user's business in a one-paragraph error."""
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        first = first[:limit] + " ..."
    return f"{type(err).__name__}: {first}"


def source_location(node) -> tuple[str, int] | None:
    """The user's source line behind an fx node: the innermost stack frame outside torch itself.

    Paths inside this repository (the model zoo) are printed relative to it, so IR dumps are the
    same bytes on every clone; other paths relative to the working directory when below it."""
    trace = node.meta.get("stack_trace") or ""
    frames = [(f, int(line)) for f, line in _FRAME.findall(trace) if not f.startswith(TORCH_DIR + os.sep)]
    if not frames:
        return None
    path, line = frames[-1]
    path = os.path.abspath(path)
    for root in (_REPO_DIR, os.getcwd()):
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root), line
    return path, line


def describe_node(node) -> str:
    """The node, the model's submodule it belongs to (torch.export records it) and the source line."""
    loc = source_location(node)
    where = f"{loc[0]}:{loc[1]}" if loc else "unknown source line"
    stack = node.meta.get("nn_module_stack") or {}
    module = ""
    if stack and node.op != "call_module":
        path, module_type = list(stack.values())[-1]
        if path:
            module = f" in module {path} ({module_type if isinstance(module_type, str) else target_name(module_type)})"
    return f"node %{node.name} ({node.op} {target_name(node.target)}){module} at {where}"


def target_name(target) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__qualname__', repr(target))}".lstrip(".")
