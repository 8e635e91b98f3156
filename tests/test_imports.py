"""The package's import graph: one direction (cli -> pipeline -> stages -> nufft -> core), no
cycles between its parts, and the library never importing the simulator or the command line.

The graph is read from the source (ast), so imports inside functions count as much as those at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import na23recon

ROOT = Path(na23recon.__file__).parent
#: Parts that may use the simulator: the command line and the demo (and tests, scripts).
USERS_OF_SIM = {"cli", "demo", "sim"}
#: The layers, lowest first: a part may import only parts of lower layers (or its own).
LAYERS = [
    {"errors", "threads", "provenance"},
    {"core"},
    {"report"},
    {"nufft"},
    {"io"},
    {"traj"},
    {"recon", "quant", "export"},
    {"pipeline", "sim"},
    {"demo"},
    {"cli"},
]


def _part(module: str) -> str:
    """'na23recon.recon.app' -> 'recon'; 'na23recon' -> '__init__'."""
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute na23recon module names imported anywhere in `path`."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # imports only for type checkers are not dependencies
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("na23recon"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("na23recon"):
                # `from . import x` / `from .pkg import mod` may name submodules rather than names
                subs = {f"{target}.{a.name}" for a in node.names}
                subs = {c for c in subs if (ROOT.parent / c.replace(".", "/")).with_suffix(".py").exists()
                        or (ROOT.parent / c.replace(".", "/") / "__init__.py").exists()}
                out.update(subs)
                if len(subs) < len(node.names):
                    out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def _part_graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        src = _part(mod)
        g.setdefault(src, set()).update(_part(d) for d in deps if _part(d) not in (src, "__init__"))
    return g


def test_graph_is_read():
    g = _graph()
    assert "na23recon.pipeline.run" in g and "na23recon.recon.scan_recon" in g["na23recon.pipeline.run"] or \
        any(d.startswith("na23recon.recon") for d in g["na23recon.pipeline.run"] | g["na23recon.pipeline.recon_step"])
    assert "core" in _part_graph()["recon"]


def test_no_cycle_between_parts():
    g = _part_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail(f"import cycle between parts: {' -> '.join(cycle)}")
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)


def test_no_cycle_between_modules():
    g = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    counter = [0]
    cycles = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    assert not cycles, f"modules importing each other: {cycles}"


def test_library_does_not_import_sim_or_cli():
    for mod, deps in _graph().items():
        if _part(mod) in USERS_OF_SIM:
            continue
        bad = sorted(d for d in deps if _part(d) in ("sim", "cli", "demo"))
        assert not bad, f"{mod} imports {bad}: only the CLI, the demo, scripts and tests may"


def test_layers_point_down():
    rank = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    g = _part_graph()
    unknown = sorted(set(g) - set(rank) - {"__init__"})
    assert not unknown, f"parts not placed in a layer: {unknown}"
    for src, deps in g.items():
        if src == "__init__":
            continue
        up = sorted(d for d in deps if rank.get(d, -1) > rank[src] or (rank.get(d) == rank[src] and d != src
                                                                       and src in ("pipeline", "sim")))
        assert not up, f"{src} imports {up}, which sit above it"
