"""The package's import layers, read from the source with `ast` (nothing is imported, no torch).

Asserts what issue 13 promises: no import cycle anywhere in the package (module-level and
function-level imports both count), no module under `unifybench.data` imports evaluators, methods or
baselines, and no method imports a baseline.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The installed package's source folders (pyproject's package-dir): import name -> folder.
PACKAGE_DIRS = {
    "unifybench": ROOT / "unifybench",
    "unifybench.evaluators": ROOT / "evaluators",
    "unifybench.methods": ROOT / "methods",
    "unifybench.baselines": ROOT / "baselines",
    "unifybench.leaderboards": ROOT / "leaderboards",
}


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out: dict[str, Path] = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "unifybench" and parts and parts[0] in ("evaluators", "methods", "baselines",
                                                                  "leaderboards"):
                continue  # not installed from here
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module `name` refers to (itself, or the longest known parent), else None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    """The package modules `module` imports, anywhere in the file (inside functions too)."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := _resolve(alias.name)) is not None:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the submodule
                if (target := _resolve(f"{origin}.{alias.name}")) is not None:
                    found.add(target)
                elif (target := _resolve(origin)) is not None:
                    found.add(target)
    found.discard(module)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _parents(module: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first; those count as edges too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & set(MODULES)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_package():
    # The walk must find the layers it judges, and their known edges, or the other tests prove nothing.
    assert {"unifybench.runner", "unifybench.data.schema", "unifybench.evaluators.base",
            "unifybench.methods.base", "unifybench.baselines.common"} <= set(MODULES)
    assert "unifybench.data.schema" in GRAPH["unifybench.methods.base"]
    assert "unifybench.errors" in GRAPH["unifybench.registry"]


def test_no_import_cycle():
    assert _cycles() == []


def _importers(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if m == layer or m.startswith(layer + ".")
                  for t in targets if any(t == f or t.startswith(f + ".") for f in forbidden))


def test_data_layer_imports_no_evaluator_method_or_baseline():
    assert _importers("unifybench.data", ("unifybench.evaluators", "unifybench.methods",
                                          "unifybench.baselines")) == []


def test_no_method_imports_a_baseline():
    assert _importers("unifybench.methods", ("unifybench.baselines",)) == []
