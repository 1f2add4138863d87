"""The API server's layering rules, kept by tests: pure cores import no I/O, and mypy --strict holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

KUBESIM = Path(__file__).resolve().parents[2] / "kubesim"
PURE = [
    "selectors.py",
    "patch.py",
    "schema.py",
    "tables.py",
    "discovery.py",
    "openapi.py",
    "resources.py",
    "protobuf.py",
]
API_SERVER = PURE + [
    "store.py",
    "apiserver.py",
    "faults.py",
    "auth.py",
    "tls.py",
    "kubeconfig.py",
    "cluster.py",
    "cli.py",
    "testing.py",
    "__init__.py",
    "__main__.py",
]
IO_MODULES = {"asyncio", "aiohttp", "socket", "subprocess", "kubernetes", "grpc", "urllib", "ssl"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    assert not (_imports(KUBESIM / module) & IO_MODULES)


def test_api_server_modules_are_mypy_strict_clean(tmp_path: Path) -> None:
    files = [str(KUBESIM / m) for m in API_SERVER]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "mypy"),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
