"""No function in ``src/`` runs over 60 lines (issue #14): long functions hide their steps.

Numba kernels are exempt: a ``@njit`` body cannot call Python helpers, and splitting it into
several compiled kernels would pass arrays back and forth for nothing.
"""

from __future__ import annotations

import ast

from conftest import REPO

MAX_LINES = 60


def _is_numba_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ("njit", "jit"):
            return True
    return False


def long_functions(max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (n lines)`` of every function over ``max_lines`` (decorators not counted)."""
    found = []
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_numba_kernel(node):
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_over_60_lines() -> None:
    too_long = long_functions()
    assert not too_long, "functions over 60 lines:\n" + "\n".join(too_long)


def test_the_check_can_fail(tmp_path) -> None:
    """The AST walk sees a long function and exempts only numba kernels."""
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    tree = ast.parse(f"def long():\n{body}\n\n@numba.njit(cache=True)\ndef kernel():\n{body}\n")
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [_is_numba_kernel(f) for f in functions] == [False, True]
    assert all(f.end_lineno - f.lineno + 1 > MAX_LINES for f in functions)
