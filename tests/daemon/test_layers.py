"""Layer contracts and types of the daemon core and the clients, kept by CI.

The import-linter contracts live in pyproject.toml ([tool.importlinter]): clients never import the
daemon or kubernetes; the daemon's core is gRPC-free (only servicers, interceptors, convert and
server speak gRPC). mypy --strict covers the foundation's modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CORE = [
    "daemon/nbd/__init__.py",
    "daemon/nbd/__main__.py",
    "daemon/nbd/main.py",
    "daemon/nbd/app.py",
    "daemon/nbd/bus.py",
    "daemon/nbd/capabilities.py",
    "daemon/nbd/convert.py",
    "daemon/nbd/errors.py",
    "daemon/nbd/events.py",
    "daemon/nbd/instance.py",
    "daemon/nbd/interceptors.py",
    "daemon/nbd/logging_setup.py",
    "daemon/nbd/registry.py",
    "daemon/nbd/server.py",
    "daemon/nbd/servicers.py",
    "daemon/nbd/session.py",
    "daemon/nbd/status.py",
    "daemon/nbd/store.py",
    "daemon/nbd/version.py",
    "clients/nbdclient",
    "clients/nbctl",
    "benchmarks/harness.py",
    "benchmarks/bench_cli.py",
]


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


def test_import_contracts_are_kept():
    done = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_foundation_is_mypy_strict_clean(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy"), *CORE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MYPY_FORCE_COLOR": "0"},
    )
    assert done.returncode == 0, done.stdout[-4000:]
