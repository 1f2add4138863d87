"""mypy --strict (the project's [tool.mypy] settings) holds over every package we ship."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "daemon",
    "clients/nbctl",
    "clients/nbdclient",
    "cluster/nbd_controller",
    "contract/nbdcontract",
    "local/nbdlocal",
    "kubesim",
    "devstack",
]


def test_every_package_is_mypy_strict_clean(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy"), *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
