"""The daemon's capabilities are an explicit list: what it installs by default, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nbd.app import BUILTIN, App, import_capabilities, install_capabilities
from nbd.capabilities import Launcher as LauncherProtocol
from nbd.capabilities import LogReader, SyncControl
from nbdlocal.paths import DaemonPaths

DAEMON = Path(__file__).resolve().parents[2] / "daemon" / "nbd"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(DaemonPaths(tmp_path, tmp_path / "nbd.sock"), "test")
    yield app
    app.close()


def test_the_list_names_every_capability_module_and_only_those() -> None:
    # A capability module the list leaves out is never installed; a listed name without a module
    # fails at every daemon start. Either is a mistake this test catches.
    modules = sorted(path.parent.name for path in DAEMON.glob("*/capability.py"))
    assert sorted(BUILTIN) == modules
    assert len(set(BUILTIN)) == len(BUILTIN)


def test_the_default_imports_exactly_the_list() -> None:
    imported = import_capabilities()
    assert [name for name, _ in imported] == list(BUILTIN)
    for name, module in imported:
        assert not isinstance(module, BaseException), f"{name}: {module!r}"
        assert callable(module.install)


def test_the_default_install_serves_launch_logs_and_sync(app: App) -> None:
    assert install_capabilities(app) == list(BUILTIN)
    caps = app.capabilities
    assert caps.problems == {}
    assert isinstance(caps.require_launcher(), LauncherProtocol)
    assert isinstance(caps.require_logs(), LogReader)
    assert isinstance(caps.require_sync(), SyncControl)


def test_no_capability_is_installed_from_an_empty_list(app: App) -> None:
    assert install_capabilities(app, []) == []
    assert app.capabilities.launcher is None and app.capabilities.problems == {}


def test_an_unknown_capability_is_refused_and_named(app: App) -> None:
    assert install_capabilities(app, ["no_such_capability", "launch"]) == ["launch"]
    assert app.capabilities.problems["no_such_capability"].startswith("ModuleNotFoundError: ")
    assert app.capabilities.launcher is not None  # the others still install


def test_a_module_without_install_is_refused(app: App) -> None:
    assert install_capabilities(app, ["nbd.launch.spec"]) == []
    assert "AttributeError" in app.capabilities.problems["nbd.launch.spec"]
