"""The package's layers (docs/architecture.md), read from the code: every module's imports, those inside
functions too, parsed with ``ast``; no module imports from a higher layer, and the modules' import graph
has no cycle.

Layers, lowest first: ``errors``, ``version`` and ``engine/`` (0) < ``data/`` (1) < ``training/`` (1.5:
it trains the embedded model from collections; nothing but the ``train`` command imports it) <
``analysis/`` (2) < ``experiments/`` (3) < ``report/`` (4) < the faces (5): ``cli``, ``commands/``,
``integrations/``, the ``matchsig.pyterrier`` re-export, ``__main__`` and the package's own
``__init__`` (it re-exports the public names).

Imports under ``if TYPE_CHECKING:`` never run: they must respect the layers (a type from above is a
dependency on it all the same) but are left out of the cycle check. ``python tests/test_layers.py``
prints the graph's edges that cross layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "matchsig"
PACKAGE = "matchsig"

#: (module or package prefix below matchsig, layer); the longest matching prefix wins.
LAYERS: tuple[tuple[str, float], ...] = (
    ("errors", 0), ("version", 0), ("engine", 0),
    ("data", 1),
    ("training", 1.5),
    ("analysis", 2),
    ("experiments", 3),
    ("report", 4),
    ("cli", 5), ("commands", 5), ("integrations", 5), ("pyterrier", 5), ("__main__", 5), ("", 5),
)


def layer_of(module: str) -> float | None:
    """The layer of ``matchsig.x.y`` (None: a module no layer claims)."""
    rest = module[len(PACKAGE):].lstrip(".")
    best = None
    for prefix, layer in LAYERS:
        if rest == prefix or (prefix and rest.startswith(prefix + ".")) or (not prefix and not rest):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def _modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """{module name: (file, is a package __init__)} of every .py file below ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join([package, *parts])] = (path, is_package)
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the statements under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    for inner in ast.walk(stmt):
                        if hasattr(inner, "lineno"):
                            lines.add(inner.lineno)
    return lines


def _resolve(node: ast.ImportFrom | ast.Import, module: str, is_package: bool, known: Iterable[str]) -> list[str]:
    """The modules of the package an import statement names (``from . import x`` names module ``x``)."""
    known = set(known)
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target != PACKAGE and not target.startswith(PACKAGE + "."):
        return []
    named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
    return named if len(named) == len(node.names) else [target, *named]


def import_graph(root: Path = SRC, package: str = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: modules it imports at run time}, {module: modules it imports only for type checking})."""
    modules = _modules(root, package)
    runtime: dict[str, set[str]] = {m: set() for m in modules}
    typing_only: dict[str, set[str]] = {m: set() for m in modules}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded = _type_checking_lines(tree)
        for node in ast.walk(tree):  # every statement, those inside functions and classes too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(node, module, is_package, modules):
                    if target != module:
                        (typing_only if node.lineno in guarded else runtime)[module].add(target)
    return runtime, typing_only


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """'a (layer) -> b (layer)' for every import of a higher layer, and every module no layer claims."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        if here is None:
            bad.append(f"{module} belongs to no layer (add it to tests/test_layers.py LAYERS and the docs)")
            continue
        for target in sorted(targets):
            there = layer_of(target)
            if there is None or there > here:
                bad.append(f"{module} ({here:g}) imports {target} ({'?' if there is None else f'{there:g}'})")
    return bad


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module, or a module importing
    itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for ts in graph.values() for t in ts})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


# ---- the package ---------------------------------------------------------------------------------


def test_no_module_imports_from_a_higher_layer():
    runtime, typing_only = import_graph()
    assert len(runtime) > 40
    merged = {m: runtime[m] | typing_only[m] for m in runtime}
    bad = upward_imports(merged)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_cycle():
    runtime, _ = import_graph()
    found = cycles(runtime)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_layer_has_its_modules():
    runtime, _ = import_graph()
    layers = {layer_of(m) for m in runtime}
    assert {0, 1, 1.5, 2, 3, 4, 5} <= layers
    assert layer_of("matchsig.engine.model") == 0 and layer_of("matchsig.errors") == 0
    assert layer_of("matchsig.data.datasets") == 1 and layer_of("matchsig.analysis.significance") == 2
    assert layer_of("matchsig.experiments.table1.findings") == 3 and layer_of("matchsig.report.explorer") == 4
    assert layer_of("matchsig.integrations.pyterrier") == 5 and layer_of("matchsig") == 5
    assert layer_of("matchsig.engineering") is None  # a prefix is a whole name, not the start of one


# ---- the checks can fail -------------------------------------------------------------------------


def test_the_checks_fail_on_a_bad_graph():
    graph = {
        "matchsig.engine.a": {"matchsig.analysis.b"},  # engine reads analysis: upward
        "matchsig.analysis.b": {"matchsig.data.c"},
        "matchsig.data.c": {"matchsig.engine.a"},  # a -> b -> c -> a
        "matchsig.data.d": {"matchsig.data.d"},  # itself
        "matchsig.report.e": {"matchsig.engine.a"},
        "matchsig.stray": set(),
    }
    bad = upward_imports(graph)
    assert bad == ["matchsig.engine.a (0) imports matchsig.analysis.b (2)",
                   "matchsig.stray belongs to no layer (add it to tests/test_layers.py LAYERS and the docs)"]
    assert cycles(graph) == [["matchsig.analysis.b", "matchsig.data.c", "matchsig.engine.a"], ["matchsig.data.d"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_reader_sees_imports_inside_functions_and_type_checking_blocks(tmp_path):
    pkg = tmp_path / "matchsig"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "analysis").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "analysis" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "engine" / "model.py").write_text(
        "from typing import TYPE_CHECKING\nfrom ..errors import X\n"
        "if TYPE_CHECKING:\n    from ..analysis import stats\n"
        "def f():\n    from ..analysis.stats import t\n    return t\n")
    (pkg / "analysis" / "stats.py").write_text("from ..engine import model\nimport matchsig.errors\n")
    runtime, typing_only = import_graph(pkg, "matchsig")
    assert runtime["matchsig.engine.model"] == {"matchsig.errors", "matchsig.analysis.stats"}
    assert typing_only["matchsig.engine.model"] == {"matchsig.analysis.stats"}
    assert runtime["matchsig.analysis.stats"] == {"matchsig.engine.model", "matchsig.errors"}
    assert upward_imports(runtime) == ["matchsig.engine.model (0) imports matchsig.analysis.stats (2)"]
    assert cycles(runtime) == [["matchsig.analysis.stats", "matchsig.engine.model"]]


if __name__ == "__main__":
    _runtime, _typing = import_graph()
    for _m, _ts in sorted(_runtime.items()):
        for _t in sorted(_ts):
            if layer_of(_t) != layer_of(_m):
                print(f"{_m} ({layer_of(_m)}) -> {_t} ({layer_of(_t)})")
    pytest.main([__file__, "-q"])
