"""Shared test configuration: fixtures of kubesim and of the daemon are loaded as plugins.

- `tests/fixtures_daemon.py`: `daemon_factory`, `daemon_process`, `nbd_dirs` and the autouse
  `nbd_isolated_env` (every test gets its own NBD_SOCKET / NBD_STATE_DIR).
- `kubesim.testing`: kubesim's fixtures, once that module exists.
"""

from __future__ import annotations

import importlib.util
import os
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


def pytest_configure(config: object) -> None:
    """One kubesim layer store for every cluster and builder of the run (and of later runs).

    Every test cluster builds `examples/hello` and friends; a shared store makes the first build
    install JupyterLab and the others find it `CACHED`, as a team's BuildKit cache would. Layers are
    content-addressed by their cache keys, so a store kept between runs is never stale. Tests of the
    cache itself use a store of their own. NBD_TEST_LAYER_CACHE moves it.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nbd" / "test-layers"
    layers = os.environ.get("NBD_TEST_LAYER_CACHE") or str(default)
    os.environ.setdefault("KUBESIM_LAYER_DIR", layers)
