"""The package's shape, checked from its import graph: no import cycle, and no module
importing one from a layer above it (DESIGN.md: lower layers never import higher ones).

Every import of a crackscan module counts, at module top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import crackscan

PACKAGE = Path(crackscan.__file__).parent

# Lowest first. A module may import modules of its own layer or of layers below.
LAYERS = [
    {"errors", "version", "_tf", "progress", "testing"},
    {"files"},
    {"settings"},
    {"data", "builtin", "runs", "plots", "synth"},
    {"masks"},
    {"model"},
    {"runtime"},
    {"predict"},
    {"evaluate", "scan", "labels"},
    {"export"},
    {"train", "adapt", "survey"},
    {"server"},
    {"cli"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def imports_of(path: Path) -> set[str]:
    """The crackscan modules ``path`` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crackscan."):
            found.add(node.module.split(".")[1])
    return found


def module_graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) - {path.stem} for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def test_every_module_has_a_layer():
    assert set(module_graph()) == set(LAYER_OF), "add the new module to LAYERS"


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{name} -> {target}" for name, targets in module_graph().items() for target in targets
                    if LAYER_OF[target] > LAYER_OF[name])
    assert not upward


def test_there_is_no_import_cycle():
    graph = module_graph()
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail + [name, target]))
            if target not in state:
                visit(target, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_graph_is_read_from_the_source():
    # A guard for the checks above: the graph must see imports inside functions too.
    assert "runtime" in module_graph()["predict"] and "server" in module_graph()["cli"]
