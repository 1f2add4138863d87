"""Pytest fixtures that run the real nbd daemon as a process (loaded from tests/conftest.py).

Use them from any topic's tests:

    def test_something(daemon_process):          # a daemon with every installed capability
        with daemon_process.client() as client:   # an nbdclient.Client on its socket
            assert client.list() == []

    def test_other(daemon_factory):
        d = daemon_factory(capabilities="none", env={"NBD_TEST_DAEMON_VERSION": "9.9"})
        d.run_nbctl("list", "--output", "json")   # nbctl as a subprocess against this daemon
        d.kill()                                  # SIGKILL; d.stop() is a graceful SIGTERM

Every test also runs with NBD_SOCKET and NBD_STATE_DIR pointing into its own short temporary
folder (autouse fixture `nbd_isolated_env`), so nothing ever touches the real user's daemon.
Socket paths are kept short (under /tmp) because a Unix socket path holds at most 107 bytes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest

from nbdclient.client import Client, connect
from nbdclient.daemon import CHANNEL_OPTIONS, wait_until_serving
from nbdlocal.lock import read_holder
from nbdlocal.paths import DaemonPaths

__all__ = [
    "DaemonProcess",
    "NbdDirs",
    "daemon_factory",
    "daemon_process",
    "fake_daemon",
    "nbd_dirs",
    "nbd_isolated_env",
]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclasses.dataclass
class NbdDirs:
    """A short temporary root with `state` (state dir) and `run/nbd.sock` (socket) under it."""

    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "nbd.sock"

    @property
    def paths(self) -> DaemonPaths:
        return DaemonPaths(state_dir=self.state_dir, socket=self.socket)

    @property
    def env(self) -> dict[str, str]:
        """The environment variables that point clients and the daemon here."""
        return {"NBD_SOCKET": str(self.socket), "NBD_STATE_DIR": str(self.state_dir)}


def _new_dirs() -> NbdDirs:
    return NbdDirs(Path(tempfile.mkdtemp(prefix="nbd-", dir="/tmp")))


@pytest.fixture
def nbd_dirs() -> Iterator[NbdDirs]:
    """A fresh short temp root for a daemon (removed after the test)."""
    dirs = _new_dirs()
    yield dirs
    shutil.rmtree(dirs.root, ignore_errors=True)


@pytest.fixture(autouse=True)
def nbd_isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[NbdDirs]:
    """Points NBD_SOCKET / NBD_STATE_DIR of this process (and its children) at a per-test folder."""
    dirs = _new_dirs()
    for key, value in dirs.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NBD_TEST_DAEMON_VERSION", raising=False)
    monkeypatch.delenv("NBD_DAEMON_COMMAND", raising=False)
    yield dirs
    # A daemon autostarted by a client under this env must not outlive the test.
    _stop_by_lock(dirs.paths)
    shutil.rmtree(dirs.root, ignore_errors=True)


def _lock_pid(paths: DaemonPaths) -> int | None:
    try:
        holder = read_holder(paths.lock_file)
        return int(holder.pid) if holder is not None else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    from nbdclient.daemon import process_gone

    return not process_gone(pid)


def _stop_by_lock(paths: DaemonPaths) -> None:
    """Stops the daemon whose pid the lock file names, if it still runs with this state dir."""
    pid = _lock_pid(paths)
    if pid is None or pid == os.getpid() or not _alive(pid):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if str(paths.state_dir).encode() not in cmdline:
        return  # A recycled pid: not our daemon.
    _terminate(pid)


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclasses.dataclass
class DaemonProcess:
    """A daemon started by `daemon_factory`."""

    dirs: NbdDirs
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    output: Path

    @property
    def paths(self) -> DaemonPaths:
        return self.dirs.paths

    @property
    def socket(self) -> Path:
        return self.dirs.socket

    @property
    def state_dir(self) -> Path:
        return self.dirs.state_dir

    @property
    def log_file(self) -> Path:
        return self.paths.log_file

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kwargs: Any) -> Client:
        """An nbdclient.Client on this daemon (no autostart)."""
        kwargs.setdefault("autostart", False)
        return connect(self.socket, state_dir=self.state_dir, **kwargs)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.paths.target, options=CHANNEL_OPTIONS)

    def run_nbctl(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs `python -m nbctl ARGS` against this daemon; returns the completed process (text)."""
        full_env = {**self.env, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "nbctl", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup happens (the socket file stays behind)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class DaemonFactory(Protocol):
    def __call__(
        self,
        *,
        dirs: NbdDirs | None = ...,
        capabilities: str | None = ...,
        env: Mapping[str, str] | None = ...,
        args: Sequence[str] = ...,
        wait: bool = ...,
    ) -> DaemonProcess: ...


def _spawn(
    dirs: NbdDirs,
    capabilities: str | None,
    env: Mapping[str, str] | None,
    args: Sequence[str],
) -> DaemonProcess:
    full_env = {**os.environ, **dirs.env, **(env or {})}
    cmd = [sys.executable, "-m", "nbd", "--socket", str(dirs.socket), "--state-dir", str(dirs.state_dir)]
    if capabilities is not None:
        cmd += ["--capabilities", capabilities]
    cmd += list(args)
    dirs.root.mkdir(parents=True, exist_ok=True)
    output = dirs.root / f"daemon-{time.monotonic_ns()}.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return DaemonProcess(dirs=dirs, proc=proc, env={**full_env}, output=output)


def _wait_serving(d: DaemonProcess) -> None:
    try:
        wait_until_serving(d.paths, d.proc, START_TIMEOUT)
    except Exception as e:
        out = d.output.read_text(errors="replace")[-2000:]
        raise AssertionError(
            f"daemon did not start: {e}\n--- output ---\n{out}\n--- log ---\n{d.log_text()[-2000:]}"
        ) from e


@pytest.fixture
def daemon_factory(nbd_isolated_env: NbdDirs) -> Iterator[DaemonFactory]:
    """Starts daemons on demand; all are stopped (SIGTERM, then SIGKILL) after the test.

    Arguments: `dirs` (default: the test's isolated dirs, shared by successive daemons so a
    restart sees the same state), `capabilities` (None: all installed; "none"; or a comma list,
    where a dotted name is imported as a module), `env` (added to the environment), `args` (more
    daemon flags), `wait` (wait for health SERVING; default True).
    """
    started: list[DaemonProcess] = []

    def start(
        *,
        dirs: NbdDirs | None = None,
        capabilities: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        wait: bool = True,
    ) -> DaemonProcess:
        d = _spawn(dirs or nbd_isolated_env, capabilities, env, args)
        started.append(d)
        if wait:
            _wait_serving(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def daemon_process(daemon_factory: DaemonFactory) -> DaemonProcess:
    """One running daemon with every installed capability, on the test's isolated dirs."""
    return daemon_factory()


# A capability that needs no cluster (tests/daemon/plugins/nbdtestcap): launch, stop, logs, sync.
TEST_PLUGINS = Path(__file__).resolve().parent / "daemon" / "plugins"
TEST_CAPABILITY = "nbdtestcap.capability"


@pytest.fixture
def fake_daemon(daemon_factory: DaemonFactory) -> DaemonProcess:
    """A daemon whose launch/stop/logs/sync come from the test capability (no cluster)."""
    return daemon_factory(capabilities=TEST_CAPABILITY, env={"PYTHONPATH": str(TEST_PLUGINS)})
