"""The code's shape, checked like behaviour: module size, and where xlgap imports itself.

The layer rule itself is import-linter's ``layers`` contract in pyproject.toml (run by
``make test``); these tests add what it does not check.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "xlgap"
MAX_LINES = 600


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(SRC)): n for p in _modules()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _function_level_xlgap_imports(tree: ast.AST) -> list[int]:
    found: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                lazy_from = isinstance(inner, ast.ImportFrom) and (
                    inner.module or "").startswith("xlgap")
                lazy_import = isinstance(inner, ast.Import) and any(
                    a.name.startswith("xlgap") for a in inner.names)
                if lazy_from or lazy_import:
                    found.append(inner.lineno)
    return found


def test_xlgap_modules_import_each_other_at_the_top():
    """Function-level imports are for heavy third-party modules only (torch, matplotlib,
    vllm, ...): a lazy import of an xlgap module would hide an edge from the reader."""
    lazy = {}
    for path in _modules():
        lines = _function_level_xlgap_imports(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            lazy[str(path.relative_to(SRC))] = sorted(set(lines))
    assert not lazy, f"function-level xlgap imports: {lazy}"


def test_the_import_check_finds_a_lazy_import():
    # The checks above must be able to fail: a synthetic lazy import is found.
    tree = ast.parse("def f():\n    from xlgap.io import dump_json\n    return dump_json\n")
    assert _function_level_xlgap_imports(tree) == [2]
