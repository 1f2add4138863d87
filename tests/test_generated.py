"""The committed generated code of the local API matches proto/nbdapi/v1/*.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date():
    done = subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), "--check"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"run scripts/gen-proto to regenerate:\n{done.stderr}"
