"""The package's import graph has no cycle, and the HTTP layer sits above the shells.

Every ``import`` statement counts, wherever it is (module level, inside a function, under
``TYPE_CHECKING``): a function-local import that closes a loop is still a cycle in the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import redispatterns as rp

ROOT = Path(rp.__file__).resolve().parent
Graph = dict[str, set[str]]


def _module_names(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def import_graph(root: Path, package: str) -> Graph:
    """``module -> modules of the package it imports``, from the source (nothing is imported)."""
    modules = _module_names(root, package)
    graph: Graph = {m: set() for m in modules}

    def known(name: str) -> str | None:
        while name and name not in modules:  # `pkg.mod.attr` -> `pkg.mod`
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = node.module or ""
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                # `from pkg import sub` needs only the submodule; `from pkg import name` needs pkg
                subs = [f"{origin}.{a.name}" for a in node.names if f"{origin}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [*subs, origin]
            for t in targets:
                hit = known(t)
                if hit is not None and hit != mod:
                    graph[mod].add(hit)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def importers_of(graph: Graph, target: str, exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude)
    return sorted(
        m
        for m, deps in graph.items()
        if m not in skip
        and not (m == target or m.startswith(target + "."))
        and any(d == target or d.startswith(target + ".") for d in deps)
    )


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, "redispatterns")
    assert "redispatterns.http.session" in graph and "redispatterns.session" in graph
    assert "redispatterns.session" in graph["redispatterns.http.session"]
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_http_layer_is_above_the_shells() -> None:
    graph = import_graph(ROOT, "redispatterns")
    # only the package's curated front door re-exports it
    assert importers_of(graph, "redispatterns.http", exclude=["redispatterns"]) == []


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("B = 2\n\ndef late():\n    from . import sub\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import A\nfrom typing import TYPE_CHECKING\n")
    (pkg / "sub" / "d.py").write_text("import pkg.sub.c\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a"},
        "pkg.sub.d": {"pkg.sub.c"},
    }
    assert cycles(graph) == []
    (pkg / "sub" / "__init__.py").write_text("from .c import A\n")  # sub -> c -> a -> b -> sub
    found = cycles(import_graph(pkg, "pkg"))
    assert found == [["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]]
    assert importers_of(import_graph(pkg, "pkg"), "pkg.sub") == ["pkg.b"]


def test_importing_the_package_imports_no_framework_or_telemetry() -> None:
    """The adapters and our OpenTelemetry hooks are optional: ``import redispatterns`` (and its
    HTTP middlewares) load no framework and not ``redispatterns.otel``, so an app without the
    extras pays nothing. (redis-py 8 imports ``opentelemetry`` itself when it is installed.)"""
    import subprocess
    import sys

    code = (
        "import sys, redispatterns, redispatterns.http; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'fastapi', 'starlette', 'flask', 'django', 'werkzeug', 'pydantic'}), "
        "'redispatterns.otel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
