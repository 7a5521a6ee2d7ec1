"""Imports point one way: benchmarks -> experiments -> mie_jax, and inside the library train -> models -> data."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Each package, and the packages it must never import (the layers above it).
FORBIDDEN = {
    "mie_jax/data": ("mie_jax.models", "mie_jax.train", "experiments", "benchmarks"),
    "mie_jax/models": ("mie_jax.train", "experiments", "benchmarks"),
    "mie_jax": ("experiments", "benchmarks"),
    "experiments": ("benchmarks",),
}


def imported_modules(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_layer_above_its_own(package):
    upward = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert upward == []
