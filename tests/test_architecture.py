"""Layering rules of docs/architecture.md: the runtime and the ISA never import the compiler."""
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"arasc.isa", "arasc.runtime"}
# torch: runtime/int8.py's int8 GEMM, imported inside the function that uses it, and used only
# where torch is already loaded (the runtime runs without it: float32 products; checked below)
THIRD_PARTY = {"numpy", "numba", "lark", "rich", "matplotlib", "safetensors", "torch"}
# folder -> package, as installed (pyproject.toml's package-dir mapping)
PACKAGES = {folder: package for package, folder in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items()}


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name a source file is imported as, and whether it is a package's __init__."""
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    package = rest[-1] == "__init__"
    return ".".join([PACKAGES[folder], *(rest[:-1] if package else rest)]), package


def imported_modules(source: str, module: str, is_package: bool):
    """Absolute names of every module `source` imports, relative imports resolved against `module`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if not node.level:
                yield node.module
                continue
            parts = module.split(".") if is_package else module.split(".")[:-1]
            base = parts[:len(parts) - (node.level - 1)]
            if node.module:
                yield ".".join([*base, node.module])
            else:  # `from .. import x`: x is a module of that package (or a name in its __init__)
                yield from (".".join([*base, alias.name]) for alias in node.names)


def test_relative_imports_resolve_to_the_package_they_name():
    planted = "from ..passes import tile\nfrom . import progress\nfrom ..isa.hardware import Hardware\n"
    assert list(imported_modules(planted, "arasc.runtime.run", False)) == [
        "arasc.passes", "arasc.runtime.progress", "arasc.isa.hardware"]
    assert list(imported_modules("from .machine import Machine", "arasc.runtime", True)) == ["arasc.runtime.machine"]


def forbidden(name: str) -> bool:
    top = name.split(".")[0]
    if top == "arasc":
        return not any(name == a or name.startswith(a + ".") for a in ALLOWED)
    return top not in THIRD_PARTY and top not in sys.stdlib_module_names


@pytest.mark.parametrize("folder", ["runtime", "isa"])
def test_runtime_and_isa_import_no_compiler_module(folder):
    paths = sorted((ROOT / folder).rglob("*.py"))
    assert paths
    for path in paths:
        bad = [name for name in imported_modules(path.read_text(), *module_name(path)) if forbidden(name)]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("code, heavy", [
    ("from arasc.cli import build_parser; build_parser()", ("torch", "sklearn", "numba", "ortools", "ray")),
    ("import arasc.models", ("sklearn",)),
    ("import arasc.runtime.run", ("torch",)),
])
def test_heavy_modules_load_only_when_used(code, heavy):
    """`arasc --help` answers without torch; every compile imports the zoo, most not for the
    digits CNN, the one model that needs scikit-learn."""
    out = subprocess.run([sys.executable, "-c", f"import sys; {code}; print(sorted(set(sys.modules) & {set(heavy)!r}))"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_importing_runtime_loads_no_compiler_module():
    code = ("import sys, arasc.runtime, arasc.isa.hardware; "
            "print(sorted(m for m in sys.modules if m.startswith('arasc.') "
            "and not m.startswith(('arasc.runtime', 'arasc.isa'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
