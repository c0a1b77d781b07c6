"""Issue 19's layers, checked on the sources with ast: a module imports its own layer or lower
ones only, no import cycle, at most MAX_LOOSE modules directly in netsim/, none over MAX_LINES.

Every import counts, those inside functions too; ``from pkg import sub`` where ``pkg.sub`` is a
module is an import of that module, otherwise of ``pkg``.  The graph is the explicit imports;
a cycle is a strongly connected component of it with more than one module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.conftest import REPO

# Lowest first; a module belongs to the longest layer name that prefixes it.
LAYERS = ["netsim.kernel", "netsim.model", "netsim.api", "netsim.controllers", "netsim.cni", "proxy",
          "netsim.node", "netsim.apiserver", "netsim.fabric", "netsim.observe", "netsim.cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}
PACKAGES = ("netsim", "proxy")
MAX_LOOSE = 4
MAX_LINES = 900


def modules() -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def layer(module: str) -> str | None:
    return max((name for name in LAYERS if module == name or module.startswith(name + ".")), key=len, default=None)


def imports(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The netsim and proxy modules ``module`` imports, each with the line of its first import."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        while name and name not in known:  # a name inside a module: the module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.setdefault(name, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in (or is)
                package = module.split(".")
                if not is_package:
                    package.pop()
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node.lineno)
    return found


def graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    known = modules()
    return known, {m: imports(m, p, known) for m, p in known.items()}


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def test_the_checker_sees_upward_imports_and_cycles_in_a_made_up_tree():
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}, "e": {}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
    assert layer("netsim.cni.bridge") == "netsim.cni" and layer("proxy.iptables") == "proxy"
    assert layer("netsim") is None and layer("netsim.kernelish") is None


def test_the_checker_reads_every_kind_of_import(tmp_path):
    known = {"netsim.api": Path(), "netsim.api.store": Path(), "netsim.api.registry": Path(), "proxy": Path()}
    source = tmp_path / "mod.py"
    source.write_text("import os\nfrom netsim.api import store, Cache\ndef f():\n    import proxy.model\n"
                      "    from . import registry\n")
    assert imports("netsim.api.mod", source, known) == {"netsim.api.store": 2, "netsim.api": 2, "proxy": 4,
                                                         "netsim.api.registry": 5}


def test_no_module_imports_from_a_higher_layer():
    known, edges = graph()
    assert len(known) > 50
    assert {layer(m) for m in known} >= set(LAYERS), "a layer has no module: is LAYERS out of date?"
    upward = []
    for module, deps in sorted(edges.items()):
        own = layer(module)
        for dep, line in sorted(deps.items()):
            if own and layer(dep) and RANK[layer(dep)] > RANK[own]:
                where = known[module].relative_to(REPO)
                upward.append(f"{where}:{line}: {module} (layer {RANK[own]}, {own}) imports {dep} "
                              f"(layer {RANK[layer(dep)]}, {layer(dep)})")
    assert not upward, ("a module may import its own layer or lower ones only:\n" + "\n".join(upward))


def test_no_import_cycle():
    known, edges = graph()
    found = cycles(edges)
    lines = []
    for component in found:
        lines.append("cycle: " + ", ".join(component))
        inside = set(component)
        lines += [f"  {known[m].relative_to(REPO)}:{line}: {m} imports {d}"
                  for m in component for d, line in sorted(edges[m].items()) if d in inside]
    assert not found, "modules that import each other, directly or round a loop:\n" + "\n".join(lines)


def test_at_most_four_loose_modules_directly_in_netsim():
    loose = sorted(p.name for p in (REPO / "netsim").glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= MAX_LOOSE, (f"{len(loose)} modules directly in netsim/ (at most {MAX_LOOSE}): "
                                     f"{', '.join(loose)}; move them into their layer's package")


def test_no_module_over_900_lines():
    known, _ = graph()
    big = {str(p.relative_to(REPO)): n for p in known.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, (f"modules over {MAX_LINES} lines: "
                     + ", ".join(f"{p} ({n} lines)" for p, n in sorted(big.items())) + "; split them")
