"""Layer rules of the upload and build-context packages, kept by a test.

Pure modules (decisions, matchers, byte formats) import no I/O framework; nothing in either package
imports grpc or kubernetes (the servicers and the cluster code own those).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nbd.context
import nbd.upload

PURE = {
    "nbd/upload/policy.py",
    "nbd/context/ignore.py",
    "nbd/context/tarformat.py",
}
NEVER = {"grpc", "kubernetes", "nbdapi"}
NOT_IN_PURE = NEVER | {"asyncio", "aiohttp", "threading", "concurrent", "socket", "subprocess", "os"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


MODULES = sorted(
    p
    for package in (nbd.context, nbd.upload)
    for p in Path(package.__file__).parent.glob("*.py")  # type: ignore[arg-type]
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_layers(path: Path) -> None:
    rel = f"nbd/{path.parent.name}/{path.name}"
    forbidden = NOT_IN_PURE if rel in PURE else NEVER
    assert not imports(path) & forbidden
