"""The package's shape, checked from its import graph at every depth: no import cycle, and no
module importing one from a layer above it (DESIGN.md: lower layers never import higher ones).

Every import of a crackscan module counts: at module top or inside a function, relative at
any level or absolute (``crackscan.x.y``). Modules are named by their dotted path below the
package (``photo.scan``); a subpackage's ``__init__`` is the module named after it."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import crackscan

PACKAGE = Path(crackscan.__file__).parent

# Lowest first. A module may import modules of its own layer or of layers below.
LAYERS = [
    {"errors", "version", "_tf", "progress", "testing", "model.tasks", "model.formats",
     "model", "runtime", "photo", "site", "survey", "serve", "serve.web", "segment", "measure", "report"},
    {"files"},
    {"settings"},
    {"images", "synth", "plots"},
    {"exif"},
    {"datasets", "runs", "masks"},
    {"model.info", "model.heads", "metrics", "segment.pixels", "measure.severity", "measure.scale",
     "measure.profiles"},
    {"model.backbone", "model.builtin", "model.keras_archive", "measure.cracks"},
    {"model.classifier"},
    {"model.registry", "model.segmenter", "measure.options"},
    {"runtime.runners", "runtime.parity", "runtime.resize"},
    {"runtime.formats"},
    {"runtime.backbone_cache"},
    {"runtime.int8_backbone"},
    {"runtime.predictor"},
    {"photo.tiling", "photo.overlay", "photo.vectors"},
    {"photo.result", "segment.masksets", "segment.annotations", "photo.options"},
    {"photo.segment"},
    {"photo.scan"},
    {"site.labels", "site.fit", "evaluate"},
    {"export", "train", "survey.plan", "survey.parquet", "segment.train"},
    {"site.adapt", "segment.adapt", "survey.job"},
    {"survey.local", "survey.layout", "survey.ray_engine"},
    {"survey.driver", "serve.budgets", "serve.guard", "serve.site_loop", "report.survey_data"},
    {"report.build"},
    {"serve.app"},
    {"cli"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def module_names(package: Path) -> dict[str, Path]:
    """Every module below ``package`` by dotted name; the top ``__init__`` (the public API,
    which imports from everywhere) is not a layer of its own."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The crackscan modules module ``name`` imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    own_package = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()

    def add(target: list[str], alias: str | None) -> None:
        dotted = ".".join(target)
        if alias and ".".join(target + [alias]) in known:
            found.add(".".join(target + [alias]))
        elif dotted in known:
            found.add(dotted)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package[: len(own_package) - (node.level - 1)] if node.level > 1 else list(own_package)
                if node.level - 1 > len(own_package):
                    continue
            elif (node.module or "").split(".")[0] == "crackscan":
                base = []
            else:
                continue
            module = (node.module or "").split(".") if node.module else []
            if not node.level:
                module = module[1:]
            for alias in node.names:
                add(base + module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "crackscan" and len(parts) > 1:
                    add(parts[1:], None)
    return found - {name}


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    names = module_names(package)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                  if LAYER_OF[target] > LAYER_OF[name])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                path = trail + [name, target]
                return path[path.index(target):]
            if target not in state:
                cycle = visit(target, trail + [name])
                if cycle:
                    return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            if cycle:
                return cycle
    return None


def test_every_module_has_a_layer():
    assert set(module_graph()) == set(LAYER_OF), "add the new module to LAYERS"


def test_no_module_imports_a_higher_layer():
    assert not upward_imports(module_graph())


def test_there_is_no_import_cycle():
    assert find_cycle(module_graph()) is None


def test_the_graph_is_read_from_the_source():
    # A guard for the checks above: the graph must see imports inside functions, relative
    # imports of every level and into subpackages, and absolute ones.
    graph = module_graph()
    assert "runtime.predictor" in graph["photo.scan"]  # from ..runtime.predictor import as_predictor
    assert "serve.app" in graph["cli"] and "survey.driver" in graph["cli"]
    assert "model.heads" in graph["model.keras_archive"]  # from .heads import SiteHead
    assert "runs" in graph["model.registry"]  # from .. import runs
    assert "_tf" in graph["model.keras_archive"]


@pytest.fixture()
def tree_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "crackscan"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.tflite", "*.npz"))
    return copy


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


@pytest.mark.parametrize("where, statement", [
    ("files.py", "def _planted():\n    from .cli import main\n"),  # relative, inside a function
    ("photo/tiling.py", "from ..survey.driver import scan_many\n"),  # two levels, into a subpackage
    ("model/info.py", "import crackscan.serve.app\n"),  # absolute
])
def test_a_planted_upward_import_is_caught(tree_copy: Path, where: str, statement: str):
    assert not upward_imports(module_graph(tree_copy))
    _append(tree_copy / where, statement)
    assert upward_imports(module_graph(tree_copy))


def test_a_planted_circle_is_caught(tree_copy: Path):
    assert find_cycle(module_graph(tree_copy)) is None
    # Two modules of one layer: no upward import, only the circle.
    _append(tree_copy / "runs.py", "from .datasets import Sample\n")
    _append(tree_copy / "datasets.py", "def _planted():\n    from .runs import Run\n")
    assert not upward_imports(module_graph(tree_copy))
    assert set(find_cycle(module_graph(tree_copy))) == {"runs", "datasets"}


def test_no_public_name_hides_a_subpackage():
    """`import crackscan.measure.scale as s` binds what crackscan.measure names: a function of that
    name would hide the subpackage."""
    import importlib
    import pkgutil

    subpackages = {info.name for info in pkgutil.iter_modules(crackscan.__path__) if info.ispkg}
    assert not subpackages & set(crackscan.__all__), subpackages & set(crackscan.__all__)
    scale = importlib.import_module("crackscan.measure.scale")
    assert crackscan.measure.scale is scale and callable(crackscan.measure_cracks)


def _task_comparisons(tree: ast.AST) -> list[int]:
    """Lines that compare something with a task's name ("segment" == ..., task in ("classify", ...))."""
    from crackscan.model.tasks import TASKS

    def names_a_task(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in TASKS
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_task(item) for item in node.elts)
        return False

    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
            and any(names_a_task(side) for side in (node.left, *node.comparators))]


def test_only_the_task_table_compares_a_task():
    """Every stage asks the task's row (model.tasks); a comparison with a task's name anywhere
    else is a branch the next task would have to find."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "tasks.py" and path.parent.name == "model":
            continue
        lines = _task_comparisons(ast.parse(path.read_text()))
        if lines:
            found[str(path.relative_to(PACKAGE))] = lines
    assert not found, found


def test_a_planted_task_comparison_is_caught():
    assert _task_comparisons(ast.parse('if info.task == "segment":\n    pass\n')) == [1]
    assert _task_comparisons(ast.parse('ok = name in ("classify", "other")\n')) == [1]
    assert _task_comparisons(ast.parse('if task_of(info).per_pixel:\n    pass\n')) == []


def test_the_format_table_owns_every_suffix_and_the_run_order():
    from crackscan import runs
    from crackscan.model.formats import FORMAT_TABLE, format_of, run_order

    assert runs.EXPORTS_BY_SPEED == run_order() == ("model.int8.tflite", "model.int8.onnx", "model.tflite",
                                                    "model.onnx")
    for row in FORMAT_TABLE.values():
        assert format_of(f"x{row.suffix.upper()}") is row
        for part in ("read_metadata", "opener") + (("converter", "attach_metadata") if row.exportable else ()):
            assert callable(row.implementation(part)), (row.name, part)
    assert format_of("x.pt") is None


def test_every_task_row_names_implementations_that_exist():
    from crackscan.model.tasks import TASK_TABLE

    for row in TASK_TABLE.values():
        for part in ("decoder", "trainer", "photo_scan", "export"):
            assert callable(row.implementation(part)), (row.name, part)
