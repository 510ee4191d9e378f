"""The modules of lanchat, lanchatd and lanchatctl import each other without circles.

A circle (a imports b, b imports a, directly or through others) forces one side to
import late or through ``importlib`` and leaves the interface between them untyped;
STYLE.md also keeps the daemon and the admin tool apart, sharing only
``lanchat.protocol``.  The graph is read from the sources with ``ast``: every
``import`` and ``from ... import`` anywhere in a module (inside functions and
``if TYPE_CHECKING:`` blocks too, since a late import is exactly how a circle hides),
and calls to ``importlib.import_module`` or ``__import__`` are refused outright.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lanchat", "lanchatd", "lanchatctl")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES
            for p in sorted((REPO / package).rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module or a name inside one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - (1 if is_package else 0)
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycle_from(start: str) -> list[str] | None:
    """A path start -> ... -> start through the graph, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(GRAPH[node]):
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_the_graph_is_read() -> None:
    assert "lanchatd.loop" in MODULES and "lanchatctl.client" in MODULES
    assert "lanchat.protocol.control" in GRAPH["lanchatctl.client"]
    assert "lanchatd.core" in GRAPH["lanchatd.loop"]


def test_no_module_imports_itself_through_others() -> None:
    cycles = {" -> ".join(c) for m in sorted(GRAPH) if (c := _cycle_from(m)) is not None}
    assert sorted(cycles) == []


def test_the_daemon_and_the_admin_tool_never_import_each_other() -> None:
    crossings = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items() for target in targets
        if {module.split(".")[0], target.split(".")[0]} == {"lanchatd", "lanchatctl"}
    )
    assert crossings == []


def test_the_wire_formats_import_only_each_other() -> None:
    """lanchat.protocol is what the daemon, the admin tool and the client share."""
    outside = sorted(
        f"{module} imports {target}" for module, targets in GRAPH.items()
        if module.startswith("lanchat.protocol") for target in targets
        if not target.startswith("lanchat.protocol") and target != "lanchat"
    )
    assert outside == []


def test_no_module_imports_by_name_at_run_time() -> None:
    """``importlib.import_module`` and ``__import__`` hide an edge from this test."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else (
                    func.id if isinstance(func, ast.Name) else "")
                if name in ("import_module", "__import__"):
                    found.append(f"{module}:{node.lineno}")
    assert found == []
