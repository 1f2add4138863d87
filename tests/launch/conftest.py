"""Fixtures of the launch's end-to-end tests: one daemon per module on the shared local cluster.

See `launchkit` for the helpers (LaunchKit, make_project, wait_until, ...).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures_daemon import DaemonProcess, NbdDirs, _spawn, _wait_serving  # noqa: E402
from fixtures_stack import LocalStack, make_namespace  # noqa: E402
from launchkit import LaunchKit  # noqa: E402


@pytest.fixture(scope="module")
def launch_daemon() -> Iterator[DaemonProcess]:
    dirs = NbdDirs(Path(tempfile.mkdtemp(prefix="nbdl-", dir="/tmp")))
    home = dirs.root / "home"
    home.mkdir(parents=True)
    env = {"HOME": str(home), "KUBECONFIG": ""}
    d = _spawn(dirs, None, env, ())
    # The daemon must not fall back to the test runner's kubeconfig.
    d.env.pop("KUBECONFIG", None)
    try:
        _wait_serving(d)
        yield d
    finally:
        d.stop()
        shutil.rmtree(dirs.root, ignore_errors=True)


@pytest.fixture
def kit(launch_daemon: DaemonProcess, local_stack: LocalStack) -> LaunchKit:
    return LaunchKit(launch_daemon, local_stack)


@pytest.fixture
def ns(kit: LaunchKit, local_stack: LocalStack) -> Iterator[str]:
    """A fresh namespace; the sessions launched in it are deleted after the test."""
    name = make_namespace(local_stack, "l")
    yield name
    kit.cleanup(name)
    try:
        local_stack.core().delete_namespace(name)
    except Exception:
        pass
