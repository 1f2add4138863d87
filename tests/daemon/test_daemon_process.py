"""The daemon as a process: socket and folder modes, no TCP, one instance, stale sockets, restarts,
persisted sessions, health and reflection, graceful stop."""

from __future__ import annotations

import json
import os
import signal
import socket as socketlib
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nbd.session import (
    ForwardRecord,
    ForwardState,
    ForwardStatus,
    NotebookSpec,
    Phase,
    RuntimeRecord,
    Session,
)
from nbd.store import SessionStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_socket_is_0600_and_its_folder_0700(daemon_factory):
    d = daemon_factory(capabilities="none")
    assert stat.S_ISSOCK(os.lstat(d.socket).st_mode)
    assert _mode(d.socket) == 0o600
    assert _mode(d.socket.parent) == 0o700
    assert _mode(d.state_dir) == 0o700
    assert _mode(d.log_file) == 0o600


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _inet_inodes(pid: int) -> set[str]:
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            found.add(fields[9])
    return found


def test_nothing_listens_on_tcp(daemon_factory):
    d = daemon_factory(capabilities="none")
    with d.client() as client:
        client.list()  # A call in flight or done: every socket the daemon made exists now.
        ours = _socket_inodes(d.pid)
        assert ours, "the daemon should hold at least its Unix socket"
        assert not ours & _inet_inodes(d.pid), "the daemon holds an IP socket"


def test_second_daemon_is_refused_with_the_first_ones_pid(daemon_factory):
    first = daemon_factory(capabilities="none")
    second = daemon_factory(capabilities="none", wait=False)
    assert second.proc.wait(30) == 1
    out = second.output.read_text()
    assert (
        f"nbd is already running (pid {first.pid}, socket {first.socket}); stop it with `nbctl daemon stop`"
        in out
    )
    with first.client() as client:  # The first one is unharmed.
        assert client.version().pid == first.pid


def test_kill_9_leaves_a_stale_socket_that_the_next_start_replaces(daemon_factory):
    first = daemon_factory(capabilities="none")
    first.kill()
    assert first.socket.exists(), "SIGKILL leaves the socket file behind"
    second = daemon_factory(capabilities="none")
    with second.client() as client:
        assert client.version().pid == second.pid


def test_a_live_foreign_server_on_the_socket_is_not_replaced(daemon_factory, nbd_isolated_env):
    nbd_isolated_env.socket.parent.mkdir(mode=0o700, parents=True)
    squatter = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    squatter.bind(str(nbd_isolated_env.socket))
    squatter.listen(1)
    try:
        d = daemon_factory(capabilities="none", wait=False)
        assert d.proc.wait(30) == 1
        assert "another process is already serving on" in d.output.read_text()
        assert nbd_isolated_env.socket.exists()
    finally:
        squatter.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_gracefully_and_remove_the_socket(daemon_factory, signum):
    d = daemon_factory(capabilities="none")
    d.proc.send_signal(signum)
    assert d.proc.wait(15) == 0
    assert not d.socket.exists()
    assert "stopped" in d.log_text()


def _session(name: str, **kw) -> Session:
    return Session(
        name=name,
        namespace=kw.pop("namespace", "team"),
        context=kw.pop("context", "kubesim"),
        directory=f"/work/{name}",
        phase=Phase.READY,
        url=f"http://127.0.0.1:8888/?token=t-{name}",
        spec=NotebookSpec(gpu_count=1, env={"A": "b"}, command=("jupyter", "lab")),
        forward=ForwardStatus(state=ForwardState.ACTIVE, local_port=8888, remote_port=8888),
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        **kw,
    )


def test_sessions_survive_restarts(daemon_factory, nbd_isolated_env):
    store = SessionStore(nbd_isolated_env.paths.sessions_dir)
    store.save(_session("alpha"))
    record = RuntimeRecord(
        forward=ForwardRecord("/k", "kubesim", "team", {"nbd.dev/notebook": "beta"}, 8888, 8890)
    )
    store.save(_session("beta", runtime=record))
    d = daemon_factory(capabilities="none")
    with d.client() as client:
        names = [s.name for s in client.list()]
        assert names == ["alpha", "beta"]
        got = client.get("team/alpha")
        assert got.url == "http://127.0.0.1:8888/?token=t-alpha"
        assert got.spec.gpu_count == 1 and list(got.spec.command) == ["jupyter", "lab"]
        assert got.created.seconds == int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
    assert d.stop() == 0
    d2 = daemon_factory(capabilities="none")
    with d2.client() as client:
        assert [s.name for s in client.list()] == ["alpha", "beta"]
    assert store.load_all()[1].runtime == record


def test_a_corrupted_session_file_is_skipped_with_a_warning(daemon_factory, nbd_isolated_env):
    store = SessionStore(nbd_isolated_env.paths.sessions_dir)
    store.save(_session("good"))
    bad = nbd_isolated_env.paths.sessions_dir / "kubesim+team+bad.json"
    bad.write_text('{"format": 1, "session": {"name": "bad", "namespa')
    d = daemon_factory(capabilities="none")
    with d.client() as client:
        assert [s.name for s in client.list()] == ["good"]
    log = d.log_text()
    assert "WARNING" in log and f"skipping corrupted session file {bad}" in log
    assert not bad.exists()
    assert bad.with_name(bad.name + ".corrupt").exists()


def test_health_answers_serving(daemon_factory):
    d = daemon_factory(capabilities="none")
    with d.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "nbdapi.v1.Notebooks", "nbdapi.v1.Daemon"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="nope.Nothing"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(daemon_factory):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    d = daemon_factory(capabilities="none")
    with d.channel() as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"nbdapi.v1.Notebooks", "nbdapi.v1.Daemon", "grpc.health.v1.Health"} <= services
        assert db.FindFileContainingSymbol("nbdapi.v1.Notebooks").name == "nbdapi/v1/notebooks.proto"


def test_shutdown_rpc_stops_the_daemon_and_ends_event_streams(daemon_factory):
    d = daemon_factory(capabilities="none")
    with d.client() as client:
        events = client.events(initial=True)
        it = iter(events)
        client.shutdown(grace_seconds=2)
        assert list(it) == []  # The stream ends normally, not with an error.
    assert d.proc.wait(15) == 0
    assert not d.socket.exists()


def test_state_dir_that_cannot_be_created_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbd",
            "--state-dir",
            str(blocker / "state"),
            "--socket",
            str(blocker / "s.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("nbd: cannot create the state dir")
    assert "Traceback" not in done.stderr


def test_too_long_socket_path_is_refused(tmp_path):
    long_socket = "/tmp/" + "x" * 120 + "/nbd.sock"
    done = subprocess.run(
        [sys.executable, "-m", "nbd", "--state-dir", str(tmp_path), "--socket", long_socket],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "too long for a Unix socket" in done.stderr


def test_session_file_format_is_the_documented_one(nbd_isolated_env):
    store = SessionStore(nbd_isolated_env.paths.sessions_dir)
    path = store.save(_session("fmt"))
    data = json.loads(path.read_text())
    assert data["format"] == 1
    assert data["session"]["name"] == "fmt"
    assert data["session"]["phase"] == "READY"
    assert data["session"]["forward"]["state"] == "ACTIVE"
    assert path.name == "kubesim+team+fmt.json"


def test_a_file_in_the_way_of_the_socket_is_left_alone(daemon_factory, nbd_isolated_env):
    nbd_isolated_env.socket.parent.mkdir(mode=0o700, parents=True)
    nbd_isolated_env.socket.write_text("precious")
    d = daemon_factory(capabilities="none", wait=False)
    assert d.proc.wait(30) == 1
    assert f"{nbd_isolated_env.socket} exists and is not a socket" in d.output.read_text()
    assert nbd_isolated_env.socket.read_text() == "precious"
