"""The import graph of pipeline/, export/ and runtime/, read with `ast` (no module is imported): no circles,
nothing imports upward, and runtime/ imports nothing but itself, numpy, onnxruntime and the standard library.

Every import counts, those inside functions too (a lazy import is still a dependency). `from a.b import c`
is an edge to the module a.b.c when that is a module, else to a.b; `import a.b` is an edge to a.b (a
package's __init__ is the node `a`)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "export", "runtime")
HOST_KITS = ("runtime", "hosts")  # separate programs with their own dependencies (tests/runtime/test_hosts.py)

# Rooms from the bottom up: a module may import its own room or a room of a lower rank, never a higher one.
# A room is a first-level subpackage or top-level module of pipeline/, or the package export/ or runtime/.
RANKS = {
    "runtime": 0,
    "pipeline.version": 1, "pipeline.errors": 1,
    "pipeline.files": 2, "pipeline.settings": 2,
    "pipeline.data": 3,
    "pipeline.losses": 4, "pipeline.models": 4,
    "pipeline.training": 5,
    "export": 6,
    "pipeline.scoring": 7, "pipeline.api": 7,
    "pipeline.bench": 8, "pipeline.sklearn": 8, "pipeline": 8,  # the package's __init__: pipeline.fit (api)
    "pipeline.commands": 9,
    "pipeline.cli": 10,
}
RUNTIME_MAY_IMPORT = {"runtime", "numpy", "onnxruntime"} | set(sys.stdlib_module_names)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the three packages (the host kits left out)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel.parts[:2] == HOST_KITS:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the file: first-party names resolved to a module of
    `modules`, others left as written (their top-level name is what matters)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import b
                base = package[:len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule if submodule in modules else source, node.lineno))
    return found


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    """Module -> the first-party modules it imports, and the line of each edge."""
    modules = module_files(root)
    graph, lines = {name: set() for name in modules}, {}
    for name, path in modules.items():
        for target, line in imports(name, path, modules):
            if target in modules and target != name:
                graph[name].add(target)
                lines.setdefault((name, target), line)
    return graph, lines


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each as one circle through its members."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_one_circle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_circle(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected set (breadth first from its smallest name)."""
    start = min(members)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & members):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(members)  # a strongly connected set always has a circle


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" else parts[0]


def problems(root: Path) -> list[str]:
    """Every circle, every upward import and every import of runtime/ outside its allowed set, one line each."""
    graph, lines = import_graph(root)
    found = [f"import circle: {' -> '.join(circle)}" for circle in circles(graph)]
    modules = module_files(root)
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if room(target) != room(name) and RANKS[room(target)] > RANKS[room(name)]:
                found.append(f"{modules[name].relative_to(root)}:{lines[name, target]}: {room(name)} imports "
                             f"{target}, a room above it")
    for name, path in modules.items():
        if name.split(".")[0] == "runtime":
            for target, line in imports(name, path, modules):
                if target.split(".")[0] not in RUNTIME_MAY_IMPORT:
                    found.append(f"{path.relative_to(root)}:{line}: runtime imports {target}; runtime/ may import "
                                 "only itself, numpy, onnxruntime and the standard library")
    return found


def test_every_room_has_a_rank():
    assert {room(name) for name in module_files(ROOT)} == set(RANKS)


def test_no_import_circles_nothing_imports_upward_and_runtime_imports_only_numpy_and_onnxruntime():
    assert problems(ROOT) == []


def test_the_top_of_pipeline_keeps_about_ten_modules():
    top = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert len(top) <= 10, top


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"pipeline/data/a.py": "from pipeline.data import b\n", "pipeline/data/b.py": "def f():\n    import pipeline.data.a\n"},
     ["import circle: pipeline.data.a -> pipeline.data.b -> pipeline.data.a"]),
    ({"export/x.py": "from pipeline.api import fit\n", "pipeline/api.py": "from export import x\n"},
     ["import circle: export.x -> pipeline.api -> export.x",
      "export/x.py:1: export imports pipeline.api, a room above it"]),
    ({"pipeline/data/a.py": "from pipeline.training.train import train\n", "pipeline/training/train.py": ""},
     ["pipeline/data/a.py:1: pipeline.data imports pipeline.training.train, a room above it"]),
    ({"runtime/a.py": "import json\nimport numpy\nfrom . import b\n", "runtime/b.py": "def f():\n    import torch\n"},
     ["runtime/b.py:2: runtime imports torch; runtime/ may import only itself, numpy, onnxruntime and the "
      "standard library"]),
    ({"runtime/hosts/mlflow/model.py": "import mlflow\nimport torch\n"}, []),  # a host kit: its own program
])
def test_the_checks_find_circles_upward_imports_and_torch_in_runtime(tmp_path, files, expected):
    assert problems(_tree(tmp_path, files)) == expected
