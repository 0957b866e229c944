"""Layering rules of docs/architecture.md: the runtime and the ISA never import the compiler."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"arasc.isa", "arasc.runtime"}
THIRD_PARTY = {"numpy", "numba", "lark", "rich", "matplotlib", "safetensors"}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside its own package
                yield f".{node.module or ''}"
            else:
                yield node.module


@pytest.mark.parametrize("folder", ["runtime", "isa"])
def test_runtime_and_isa_import_no_compiler_module(folder):
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path):
            if name.startswith("."):
                continue
            top = name.split(".")[0]
            if top == "arasc":
                assert any(name == a or name.startswith(a + ".") for a in ALLOWED), f"{path}: imports {name}"
            else:
                assert top in THIRD_PARTY or top in sys.stdlib_module_names, f"{path}: imports {name}"


def test_importing_runtime_loads_no_compiler_module():
    code = ("import sys, arasc.runtime, arasc.isa.hardware; "
            "print(sorted(m for m in sys.modules if m.startswith('arasc.') "
            "and not m.startswith(('arasc.runtime', 'arasc.isa'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
