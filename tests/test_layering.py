"""The package's layers (DESIGN.md §1 and §5, docs/architecture.md), read from the imports.

Every module under snncompile/ is parsed (ast, nothing is imported) and each of its imports, at
module level or inside a function, becomes an edge to the package module it names. The rules:
the IR imports no pass, backend, frontend or simulator; a pass imports no backend or frontend;
the simulator imports no pass or backend; a backend imports no frontend; nothing in the package
imports a face (``snncompile.api``, ``snncompile.cli``, the root ``snncompile``); every module
imports only from its own row of docs/architecture.md and the rows below; and no two modules
reach each other through their imports (no import cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snncompile"
FACES = ("snncompile", "snncompile.api", "snncompile.cli")
# docs/architecture.md's rows, top first: a module imports from its own row and the rows below
ROWS = (
    ("snncompile", "snncompile.api", "snncompile.cli", "snncompile.report.verify", "snncompile.report.sweep"),
    ("snncompile.compiler",),
    ("snncompile.report",),
    ("snncompile.frontends", "snncompile.backends"),
    ("snncompile.passes",),
    ("snncompile.sim",),
    ("snncompile.ir", "snncompile.targets", "snncompile.nn", "snncompile.data", "snncompile.runtime",
     "snncompile.errors"),
)
FORBIDDEN = {  # layer -> the layers it must not import
    "ir": ("passes", "backends", "frontends", "sim"),
    "passes": ("backends", "frontends"),
    "sim": ("passes", "backends"),
    "backends": ("frontends",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``name`` (read from ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from a import b``: the module a.b when there is one, else a's own name b
            found.update(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                         for alias in node.names)
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _row(module: str) -> int:
    """The row of ``module``: the most specific prefix listed in ROWS (0 is the top)."""
    best = max((p for row in ROWS for p in row if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, row in enumerate(ROWS) if best in row)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reads_every_module_and_its_imports():
    graph = _graph()
    assert {"snncompile.compiler", "snncompile.ir.graph", "snncompile.report.build"} <= set(graph)
    assert "snncompile.ir.graph" in graph["snncompile.compiler"]  # from snncompile.ir.graph import Graph
    assert "snncompile.sim.fixed" in graph["snncompile.report.diagnostics"]  # inside a function
    assert "snncompile.runtime.progress" in graph["snncompile.sim.snn"]  # from snncompile.runtime import progress


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    graph = _graph()
    wrong = [f"{m} imports {t}" for m in sorted(graph) if _layer(m) == layer
             for t in sorted(graph[m]) if _layer(t) in FORBIDDEN[layer]]
    assert not wrong, "\n".join(wrong)


def test_every_module_imports_only_its_row_and_below():
    graph = _graph()
    wrong = [f"{m} (row {_row(m)}) imports {t} (row {_row(t)})" for m in sorted(graph)
             for t in sorted(graph[m]) if _row(t) < _row(m)]
    assert not wrong, "\n".join(wrong)


def test_nothing_inside_the_package_imports_a_face():
    graph = _graph()
    wrong = [f"{m} imports {t}" for m in sorted(graph) for t in sorted(graph[m]) if t in FACES]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_root_holds_only_the_faces_and_the_stages():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "api.py", "cli.py", "compiler.py", "errors.py"]


def test_the_checks_catch_what_they_are_for():
    """Negative cases: a cycle and a forbidden edge are found in a made-up graph."""
    made_up = {"snncompile.ir.ops": {"snncompile.passes.convert"},
               "snncompile.passes.convert": {"snncompile.ir.ops"}}
    assert _cycles(made_up) == [["snncompile.ir.ops", "snncompile.passes.convert"]]
    assert _layer("snncompile.passes.convert") in FORBIDDEN["ir"]
    assert _row("snncompile.report.sweep") < _row("snncompile.compiler") < _row("snncompile.report.build")
