"""Who may import whom (README, "Layout"): checked on the source, lazy imports inside functions included.

``python -m pytest tests/test_architecture.py -q`` is the command that shows the package has no import circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "strategies", "models", "data")
# package -> packages of ours it may import (besides itself)
ALLOWED = {"bench": {"strategies", "models", "data"}, "strategies": {"models"}, "models": set(), "data": set()}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return found | {"run_bench": ROOT / "run_bench.py"}


def _library_nodes(tree: ast.Module):
    """Every node but those of an ``if __name__ == "__main__":`` guard: a command line's glue may borrow the
    harness's error boundary (``python -m data.prepare``) without the library depending on it."""
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            continue
        yield from ast.walk(node)


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules imported anywhere in ``path`` (top level and inside functions)."""
    found = set()
    for node in _library_nodes(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each as the path that closes it (depth-first search)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_no_import_circle_anywhere():
    assert cycles(graph()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layout_allows(package):
    edges = graph()
    wrong = sorted(f"{src} -> {dst}" for src, dsts in edges.items() if src.split(".")[0] == package
                   for dst in dsts if dst.split(".")[0] not in ALLOWED[package] | {package})
    assert wrong == []


def test_bench_asks_the_registry_and_never_imports_a_concrete_strategy():
    edges = graph()
    concrete = sorted(f"{src} -> {dst}" for src, dsts in edges.items() if src.startswith("bench")
                      for dst in dsts if dst.startswith("strategies.") and dst != "strategies.registry")
    assert concrete == []
