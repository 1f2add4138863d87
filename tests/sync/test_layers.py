"""The sync package's layers point one way; the pure core does no I/O and imports no framework."""

from __future__ import annotations

import ast
from pathlib import Path

import nbd.sync

from .conftest import parse

PACKAGE = Path(nbd.sync.__file__).parent
FORBIDDEN_IN_CORE = {
    "asyncio",
    "grpc",
    "kubernetes",
    "watchdog",
    "aiohttp",
    "os",
    "socket",
    "subprocess",
    "threading",
}


def _imports(module: str) -> set[str]:
    """The absolute imports of a module of nbd.sync, or of every module of a subpackage (its
    relative imports stay inside it)."""
    path = PACKAGE / module
    files = sorted(path.glob("*.py")) if path.is_dir() else [PACKAGE / f"{module}.py"]
    out: set[str] = set()
    for file in files:
        for node in ast.walk(parse(file.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.add(node.module)
    return out


def test_pure_core_imports_no_io_or_framework() -> None:
    for module in ("snapshot", "reconcile"):
        roots = {name.split(".")[0] for name in _imports(module)}
        assert not roots & FORBIDDEN_IN_CORE, (module, roots & FORBIDDEN_IN_CORE)
        # Besides each other, the core may use only the status vocabulary (pure, checked below).
        assert {n for n in _imports(module) if n.startswith("nbd.")} <= {"nbd.sync.snapshot", "nbd.status"}


def test_the_status_vocabulary_is_pure() -> None:
    tree = parse((PACKAGE.parent / "status.py").read_text())
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {n.split(".")[0] for n in names} <= {"__future__", "enum", "dataclasses", "datetime"}, names


def test_layers_point_down() -> None:
    order = [
        "snapshot",
        "reconcile",
        "agent",
        "shipping",
        "endpoint",
        "local",
        "remote",
        "exec_transport",
        "transition",
        "state",
        "sides",
        "session",
    ]
    for i, module in enumerate(order):
        above = {f"nbd.sync.{m}" for m in order[i + 1 :]}
        imported = {name for name in _imports(module) for m in above if name == m or name.startswith(m + ".")}
        assert not imported, (module, imported)


def test_agent_depends_on_nothing_of_nbd() -> None:
    assert not {n for n in _imports("agent") if n.startswith("nbd")}
