"""Finding the daemon, starting it when its socket does not answer, and waiting for it to stop.

A client never needs the user to start `nbd`: `ensure_daemon` asks the socket for the daemon's
version, and when nothing answers it starts the daemon detached (its own session, output appended
to the daemon's log), waits until the standard health service says SERVING, and checks that the
daemon's version is the client's own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from nbdapi.v1 import daemon_pb2, daemon_pb2_grpc
from nbdclient.errors import (
    DaemonNotRunning,
    DaemonStartError,
    NbdClientError,
    VersionMismatch,
    from_rpc_error,
)
from nbdlocal.paths import DaemonPaths
from nbdlocal.probe import accepts
from nbdlocal.version import __version__

__all__ = [
    "DEFAULT_START_TIMEOUT",
    "close_channel",
    "daemon_command",
    "deferred_interrupt",
    "CHANNEL_OPTIONS",
    "ensure_daemon",
    "open_channel",
    "not_running_message",
    "process_gone",
    "start_daemon",
    "unary_call",
    "wait_for_exit",
    "wait_until_serving",
]

DEFAULT_START_TIMEOUT = 20.0

# Short reconnect backoff: gRPC's default first backoff is a whole second.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
# How long a client keeps waiting after the daemon it started exited: another client may have
# started one at the same moment (ours then exits "already running" and theirs serves).
GRACE_AFTER_EXIT = 3.0


def not_running_message(paths: DaemonPaths) -> str:
    return f"nbd is not running (socket {paths.socket}); start it with `nbctl daemon start`"


def check_socket_owner(paths: DaemonPaths) -> None:
    problem = paths.socket_problem()
    if problem:
        raise NbdClientError(problem, grpc.StatusCode.INVALID_ARGUMENT, "SocketPathTooLong")
    try:
        st = os.stat(paths.socket)
    except OSError:
        return
    if st.st_uid != os.getuid():
        raise NbdClientError(
            f"the socket {paths.socket} belongs to another user (uid {st.st_uid}); "
            "use your own with NBD_SOCKET or --socket",
            grpc.StatusCode.PERMISSION_DENIED,
            "SocketOwnedByOther",
        )


def _version(channel: grpc.Channel, timeout: float) -> daemon_pb2.VersionResponse:
    stub = daemon_pb2_grpc.DaemonStub(channel)  # type: ignore[no-untyped-call]
    response: daemon_pb2.VersionResponse = unary_call(
        stub.Version, daemon_pb2.VersionRequest(client_version=__version__), timeout
    )
    return response


def daemon_command() -> list[str]:
    """How to run the daemon: $NBD_DAEMON_COMMAND, else this Python's `-m nbd`, else `nbd` on PATH."""
    # Imported here, as in start_daemon: a client whose daemon answers never pays for them.
    import shlex
    import shutil

    override = os.environ.get("NBD_DAEMON_COMMAND")
    if override:
        return shlex.split(override)
    if importlib.util.find_spec("nbd") is not None:
        return [sys.executable, "-m", "nbd"]
    found = shutil.which("nbd")
    if found:
        return [found]
    raise DaemonStartError(
        "cannot start the nbd daemon: neither the `nbd` package nor an `nbd` command is installed; "
        "install nbd (pip install nbd) or set NBD_DAEMON_COMMAND"
    )


def start_daemon(paths: DaemonPaths) -> subprocess.Popen[bytes]:
    """Starts the daemon detached from this process's terminal and session."""
    import shlex

    cmd = [*daemon_command(), "--socket", str(paths.socket), "--state-dir", str(paths.state_dir)]
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_fd = os.open(paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    except OSError as e:
        raise DaemonStartError(f"cannot start the nbd daemon ({shlex.join(cmd)}): {e.strerror}") from e
    finally:
        os.close(log_fd)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Holds back Ctrl-C while gRPC sets up or tears down a call or a channel.

    A KeyboardInterrupt raised inside gRPC's own Python code can leave a call registered but never
    driven, and closing the channel then waits forever. Within this block SIGINT is only recorded;
    it is raised as KeyboardInterrupt when the block ends. Only the main thread receives signals,
    and a SIGINT handler other than Python's default is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def open_channel(paths: DaemonPaths) -> grpc.Channel:
    with deferred_interrupt():
        return grpc.insecure_channel(paths.target, options=CHANNEL_OPTIONS)


def close_channel(channel: grpc.Channel) -> None:
    with deferred_interrupt():
        channel.close()


def unary_call(method: Any, request: Any, timeout: float | None) -> Any:
    """Calls a unary method so that Ctrl-C cancels the call cleanly (see `deferred_interrupt`)."""
    with deferred_interrupt():
        future = method.future(request, timeout=timeout)
    try:
        return future.result()
    except grpc.RpcError:
        raise
    except BaseException:
        future.cancel()
        raise


def _serving(paths: DaemonPaths, timeout: float) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A fresh channel per probe: a channel that failed while the daemon was starting sits in
    # reconnect backoff and would answer late.
    channel = open_channel(paths)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        reply = unary_call(stub.Check, request, timeout)  # type: ignore[attr-defined]
    except grpc.RpcError:
        return False
    finally:
        close_channel(channel)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _last_log_line(log_file: Path) -> str:
    try:
        with open(log_file, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def wait_until_serving(paths: DaemonPaths, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Polls until health says SERVING; DaemonStartError with the log's path on timeout or early exit.

    `proc` is the daemon process this client started, if any: its early exit ends the wait (after
    a short grace, in case another client's daemon won the race for the lock and serves).
    """
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    while True:
        if accepts(paths.socket) and _serving(paths, timeout=2.0):
            return
        now = time.monotonic()
        if proc is not None and exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > GRACE_AFTER_EXIT:
            assert proc is not None
            last = _last_log_line(paths.log_file)
            said = f": {last}" if last else ""
            raise DaemonStartError(
                f"the nbd daemon exited with code {proc.returncode} while starting{said}; see {paths.log_file}"
            )
        if now >= deadline:
            raise DaemonStartError(
                f"the nbd daemon did not become ready within {timeout:.0f}s; see its log {paths.log_file}"
            )
        time.sleep(0.01)


def ensure_daemon(
    paths: DaemonPaths,
    *,
    autostart: bool = True,
    check_version: bool = True,
    start_timeout: float = DEFAULT_START_TIMEOUT,
) -> tuple[grpc.Channel, daemon_pb2.VersionResponse]:
    """A channel to the daemon and its Version, starting the daemon first when it does not answer."""
    check_socket_owner(paths)
    channel = open_channel(paths)
    try:
        try:
            if not paths.socket.exists():
                raise _NoAnswer()
            version = _version(channel, timeout=5.0)
        except (_NoAnswer, grpc.RpcError) as e:
            if isinstance(e, grpc.RpcError) and e.code() != grpc.StatusCode.UNAVAILABLE:
                raise from_rpc_error(e, str(paths.socket), str(paths.log_file)) from e
            if not autostart:
                raise DaemonNotRunning(not_running_message(paths)) from None
            close_channel(channel)
            env_timeout = os.environ.get("NBD_START_TIMEOUT")
            proc = start_daemon(paths)
            wait_until_serving(paths, proc, float(env_timeout) if env_timeout else start_timeout)
            channel = open_channel(paths)
            try:
                version = _version(channel, timeout=5.0)
            except grpc.RpcError as e2:
                raise from_rpc_error(e2, str(paths.socket), str(paths.log_file)) from e2
        if check_version and version.version != __version__:
            raise VersionMismatch(version.version, __version__)
    except BaseException:
        close_channel(channel)
        raise
    return channel, version


class _NoAnswer(Exception):
    pass


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (a zombie counts as gone: it holds no lock and no socket)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The state follows the parenthesised command name, which may itself hold spaces.
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Waits until pid is gone; False on timeout."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
