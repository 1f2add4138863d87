"""Shared test configuration: fixtures of kubesim and of the daemon are loaded as plugins.

- `tests/fixtures_daemon.py`: `daemon_factory`, `daemon_process`, `nbd_dirs` and the autouse
  `nbd_isolated_env` (every test gets its own NBD_SOCKET / NBD_STATE_DIR).
- `kubesim.testing`: kubesim's fixtures, once that module exists.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# tests/ is not a package (pytest runs with --import-mode=importlib); make its plugin modules
# importable by name.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

pytest_plugins = ["fixtures_daemon", "fixtures_stack"]
if importlib.util.find_spec("kubesim.testing") is not None:
    pytest_plugins.append("kubesim.testing")
