"""The arrows between the parts (docs/architecture.md): no import cycle between modules, parts
import only downstream, and nothing outside sandbox/ and worker/runtime.py reaches the sandbox's
internals (only `evoforge.sandbox` itself: make_sandbox and the result types).

The Python API's facade modules (evoforge/python_api.py, evoforge/client.py) sit on top: they
may import any part, and no part imports them, except the remote CLI, which uses the client."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("api", "cli", "worker", "evolution", "evaluators", "sandbox", "db", "migrations")
# Which parts each part may import (besides itself).
ALLOWED = {
    "cli": {"api", "worker", "db", "evaluators", "evolution", "sandbox"},
    "api": {"worker", "db", "evaluators", "evolution"},
    "worker": {"db", "evaluators", "evolution", "sandbox"},
    "db": {"evolution"},
    "evaluators": {"evolution"},
    "sandbox": set(),
    "evolution": set(),
    "migrations": {"db"},
}
FACADE = ("python_api", "client")  # evoforge/<name>.py
ALLOWED.update({name: set(PARTS) | set(FACADE) for name in FACADE})
ALLOWED["cli"] = ALLOWED["cli"] | {"client"}


def _modules() -> dict[str, Path]:
    mods = {}
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    for name in FACADE:
        if (ROOT / "evoforge" / f"{name}.py").is_file():
            mods[name] = ROOT / "evoforge" / f"{name}.py"
    return mods


def _imports(path: Path, mods: dict[str, Path], *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("evoforge.") and name[9:] in mods:
                found.add(name[9:])
    return found


def test_no_import_cycle_between_modules():
    mods = _modules()
    graph = {m: _imports(p, mods, top_level_only=True) for m, p in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_parts_import_only_downstream():
    mods = _modules()
    wrong = []
    for m, p in mods.items():
        part = m.split(".")[0]
        for n in _imports(p, mods, top_level_only=False):  # deferred imports count too
            other = n.split(".")[0]
            if other != part and other not in ALLOWED[part]:
                wrong.append(f"{m} -> {n}")
    assert not wrong, wrong


def test_only_the_runtime_reaches_into_the_sandbox():
    mods = _modules()
    reaches = []
    for m, p in mods.items():
        if m.startswith("sandbox") or m == "worker.runtime":
            continue
        for n in _imports(p, mods, top_level_only=False):
            if n.startswith("sandbox."):  # evoforge.sandbox itself is the public face
                reaches.append(f"{m} -> {n}")
    assert not reaches, reaches
