"""Who may import whom (docs/architecture.md): checked on the source, lazy imports inside functions included.

``python -m pytest tests/test_architecture.py -q`` is the command that shows the project has no import circle, that
each package imports only what the layout allows, and that inside ``bench`` each room imports only the rooms below
it (``ROOMS``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "strategies", "models", "data")
# package -> packages of ours it may import (besides itself)
ALLOWED = {"bench": {"strategies", "models", "data"}, "strategies": {"models"}, "models": set(), "data": set()}
# room of bench -> rooms of bench it may import (besides itself), from the floor up: the errors' base imports nothing
# of ours; the result schema needs only it; the numerics and the training step need nothing of ours; measurements
# take that step; the config asks measure.metrics which metrics exist; one run (training) stands on those; many runs
# (runner) on one run; reports never on either; the command line and the tools sit on top.
FLOOR = {"bench.errors", "bench.signals"}  # every room may raise the project's errors and hold signals
BELOW_RUNS = FLOOR | {"bench.records", "bench.numerics", "bench.measure", "bench.config"}
ROOMS = {
    "bench.errors": set(),
    "bench.signals": set(),
    "bench.records": FLOOR,
    "bench.numerics": FLOOR,
    "bench.measure": FLOOR | {"bench.records", "bench.numerics"},
    "bench.config": FLOOR | {"bench.measure"},
    "bench.boundary": FLOOR | {"bench.config"},
    "bench.training": BELOW_RUNS,
    "bench.runner": BELOW_RUNS | {"bench.training"},
    "bench.reporting": FLOOR | {"bench.records", "bench.measure", "bench.config", "bench.boundary"},
    "bench.cli": BELOW_RUNS | {"bench.boundary", "bench.training", "bench.runner", "bench.reporting"},
    "bench.tools": BELOW_RUNS | {"bench.boundary", "bench.training", "bench.runner", "bench.reporting", "bench.cli"},
}
# what bench may import of strategies: the registry and the typed-options builder every config is declared with
# (never a concrete strategy)
STRATEGY_INTERFACE = {"strategies", "strategies.registry", "strategies.options"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return found | {"run_bench": ROOT / "run_bench.py"}


def _library_nodes(tree: ast.Module):
    """Every node but those of an ``if __name__ == "__main__":`` guard (a command line's glue may borrow the
    harness's error boundary, ``python -m data.prepare``, without the library depending on it) and of an
    ``if TYPE_CHECKING:`` block (read by type checkers only, never run: an annotation, not a dependency)."""
    for node in tree.body:
        if isinstance(node, ast.If) and ("__main__" in ast.unparse(node.test)
                                         or ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")):
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
                      for dst in dsts if dst.startswith("strategies") and dst not in STRATEGY_INTERFACE)
    assert concrete == []


def test_the_options_builder_imports_nothing_of_ours_and_is_no_strategy():
    """One builder validates every config, bench's and the strategies', so it must depend on neither side."""
    from strategies import registry

    assert graph()["strategies.options"] == set()
    assert "options" in registry._NOT_STRATEGIES


def room_of(module: str) -> str | None:
    """``bench.runner.sweep`` -> ``bench.runner``; ``bench.config`` -> itself; the bare ``bench`` package (an empty
    ``__init__``) belongs to no room."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bench" and len(parts) > 1 else None


def test_every_bench_module_sits_in_a_room_of_the_layering():
    homeless = sorted(name for name in modules() if name.startswith("bench.") and room_of(name) not in ROOMS)
    assert homeless == []


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports from one room of bench into another that ``ROOMS`` does not allow."""
    def allowed(src: str, dst: str) -> bool:
        return room_of(dst) in (None, room_of(src)) or room_of(dst) in ROOMS[room_of(src)]

    return sorted(f"{src} -> {dst}" for src, dsts in edges.items() if room_of(src) for dst in dsts
                  if not allowed(src, dst))


def test_bench_rooms_import_only_the_rooms_below_them():
    assert layering_violations(graph()) == []


def test_the_rooms_layering_itself_has_no_circle():
    assert cycles(ROOMS) == []


def test_the_room_check_catches_a_wrong_import():
    """The layering test is not vacuous: a measurement that imported the loop, or one run that imported the sweep,
    would be named."""
    edges = {"bench.measure.profile": {"bench.training.train", "bench.records"},
             "bench.training.run": {"bench.config", "bench.runner.sweep"}}
    assert layering_violations(edges) == ["bench.measure.profile -> bench.training.train",
                                          "bench.training.run -> bench.runner.sweep"]


def test_the_documented_room_table_is_the_layering():
    """docs/architecture.md's table of rooms says exactly what ``ROOMS`` allows (the floor left out of both)."""
    documented = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`") in {r[6:] for r in ROOMS}:
            allowed = set() if cells[1] == "—" else {f"bench.{name.strip()}" for name in cells[1].split(",")}
            documented[f"bench.{cells[0].strip('`')}"] = allowed
    assert documented == {room: set(allowed) - FLOOR for room, allowed in ROOMS.items()}
