"""The package's import graph: data flows downward through the stages, never back up.

A stage may import the shared base modules and the stages before it in the DAG, never one after
it; modules never import each other in a cycle. Import cycles make a module's behaviour depend on
which stage happened to be imported first, and upward imports tie early stages to late ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cellfate"

# Shared modules every stage may use; they import no stage.
BASE = {"__init__", "errors", "io", "readers", "genes", "harmonise", "nn", "neighbours", "counts", "umap_layout", "workflow",
        "data", "synonyms"}
# Stages in DAG order: a stage imports only stages of a lower rank (and the base).
RANK = {
    "simulate": 1,
    "sources": 1,
    "corpus": 2,
    "velocity": 2,
    "foundation": 3,
    "dynamics": 3,
    "spatial": 4,
    "plotting": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool, text: str | None = None) -> set[str]:
    """cellfate modules imported by one file (relative imports resolved)."""
    tree = ast.parse(path.read_text() if text is None else text)
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cellfate")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("cellfate"):
                found.add(target)
                found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _unit(module: str) -> str:
    """The stage package or base module a dotted name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_name_is_classified() -> None:
    units = {_unit(name) for name in _modules()}
    assert units <= BASE | set(RANK), f"classify these in the test: {sorted(units - BASE - set(RANK))}"


def test_no_stage_imports_a_later_stage_and_base_imports_no_stage() -> None:
    violations = []
    for module, path in _modules().items():
        source = _unit(module)
        for target in _imports(path, top_level_only=False):
            dest = _unit(target)
            if dest == source or dest in BASE:
                continue
            if source in BASE or RANK[dest] >= RANK[source]:
                violations.append(f"{module} -> {target}")
    assert not violations, "upward or sideways imports:\n" + "\n".join(sorted(violations))


def test_no_import_cycle_between_modules() -> None:
    modules = _modules()
    graph = {
        name: {target for target in _imports(path, top_level_only=True) if target in modules and target != name}
        for name, path in modules.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from cellfate.spatial.model import DeepColor\n", {"cellfate.spatial.model"}),
        ("from ..errors import CellfateError\n", {"cellfate.errors"}),
        ("from . import kernels\n", {"cellfate.corpus"}),
    ],
)
def test_imports_are_resolved(source: str, expected: set[str]) -> None:
    """The checker itself: absolute and relative imports land on the right module."""
    found = _imports(PACKAGE / "corpus" / "medians.py", top_level_only=True, text=source)
    assert expected <= found
