"""nbdclient against a real daemon: every RPC wrapper, errors with code and message, autostart,
version checks, and the asyncio client."""

from __future__ import annotations

import asyncio
import os
import socket as socketlib
import threading
import tomllib
from pathlib import Path

import grpc
import pytest
from polling import wait_for

import nbdclient
from nbdapi.v1 import notebooks_pb2 as pb
from nbdclient import DaemonNotRunning, DaemonStartError, NbdClientError, VersionMismatch
from nbdclient.daemon import wait_for_exit

ROOT = Path(__file__).resolve().parents[2]


def test_version_matches_the_package_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert nbdclient.__version__ == project["version"]


def test_version_and_shutdown(daemon_factory):
    d = daemon_factory(capabilities="none")
    with d.client() as client:
        v = client.version()
        assert (v.version, v.api_version, v.pid) == (nbdclient.__version__, "v1", d.pid)
        assert v.socket == str(d.socket) and v.state_dir == str(d.state_dir) and v.log_file == str(d.log_file)
        assert v.started.seconds > 0
        client.shutdown()
    assert d.proc.wait(15) == 0


def test_launch_streams_every_kind_of_event(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        events = list(client.launch(directory=str(tmp_path), name="nb", namespace="team"))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "phase" and kinds[-1] == "ready"
    assert {"progress", "cached", "build_log", "pod", "notice"} <= set(kinds)
    ready = events[-1].ready
    assert ready.url == "http://127.0.0.1:8889/?token=tok" and ready.local_port == 8889
    assert ready.session.phase == pb.PHASE_READY and ready.session.ref == "nb"
    assert all(e.session == "nb" for e in events)


def test_get_list_stop_and_delete(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        list(client.launch(directory=str(tmp_path), name="one"))
        list(client.launch(directory=str(tmp_path), name="two", namespace="other"))
        assert [s.name for s in client.list()] == ["one", "two"]
        got = client.get("other/two")
        assert (got.name, got.namespace, got.context, got.directory) == (
            "two",
            "other",
            "fake",
            str(tmp_path),
        )
        stopped = client.stop("one")
        assert stopped.phase == pb.PHASE_STOPPED
        assert client.get("one").phase == pb.PHASE_STOPPED
        client.stop("two", delete=True)
        assert [s.name for s in client.list()] == ["one"]
        # delete_workspace only means something with delete: the servicer refuses it alone.
        with pytest.raises(NbdClientError) as e:
            client.stop("one", delete_workspace=True)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "only with delete" in e.value.message


def test_logs_build_notebook_tail_and_follow(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        list(client.launch(directory=str(tmp_path), name="nb"))
        assert [l.text for l in client.logs("nb")] == [f"notebook line {i}" for i in range(1, 6)]
        build = list(client.logs("nb", build=True, tail_lines=2, container="kaniko"))
        assert [(l.container, l.text) for l in build] == [
            ("kaniko", "build line 4"),
            ("kaniko", "build line 5"),
        ]
        stream = client.logs("nb", follow=True)
        seen = []
        for line in stream:
            seen.append(line.text)
            if len(seen) == 5:
                stream.cancel()  # A follow never ends by itself; cancel ends the iteration quietly.
        assert len(seen) == 5


def test_sync_actions(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        list(client.launch(directory=str(tmp_path), name="nb"))
        assert client.sync("nb", "pause").state == pb.SYNC_STATE_PAUSED
        assert client.sync("nb").state == pb.SYNC_STATE_PAUSED
        assert client.sync("nb", "resume").state == pb.SYNC_STATE_WATCHING
        assert client.sync("nb", pb.SyncRequest.ACTION_FLUSH).message == "flush"
        with pytest.raises(NbdClientError) as e:
            client.sync("nb", "explode")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_events_initial_snapshot_then_changes_filtered(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        list(client.launch(directory=str(tmp_path), name="seen"))
        stream = client.events(["seen"], initial=True)
        received: list[pb.SessionEvent] = []

        def read() -> None:
            for event in stream:
                received.append(event)
                if event.kind == pb.SESSION_EVENT_KIND_SYNC_CHANGE:
                    return

        reader = threading.Thread(target=read)
        reader.start()
        list(client.launch(directory=str(tmp_path), name="ignored"))  # Filtered out.
        client.sync("seen", "pause")
        reader.join(20)
        stream.cancel()
        assert not reader.is_alive()
    kinds = [e.kind for e in received]
    assert kinds[0] == pb.SESSION_EVENT_KIND_SNAPSHOT
    assert pb.SESSION_EVENT_KIND_UPDATED in kinds
    assert all(e.session.name == "seen" for e in received)
    change = received[-1].sync_change
    assert (change.path, change.action, change.direction) == (
        "out.csv",
        "create",
        pb.SyncChange.DIRECTION_TO_LOCAL,
    )


@pytest.mark.parametrize(
    "call, code, message",
    [
        (lambda c: c.get("missing"), grpc.StatusCode.NOT_FOUND, "no session missing; see `nbctl list`"),
        (lambda c: c.get(""), grpc.StatusCode.INVALID_ARGUMENT, "a session reference is required"),
        (lambda c: c.stop("missing"), grpc.StatusCode.NOT_FOUND, "no session missing"),
        (lambda c: list(c.logs("missing")), grpc.StatusCode.NOT_FOUND, "no session missing"),
        (lambda c: c.sync("missing"), grpc.StatusCode.NOT_FOUND, "no session missing"),
        (lambda c: list(c.launch(directory="relative")), grpc.StatusCode.INVALID_ARGUMENT, "absolute path"),
        (
            lambda c: list(c.launch(directory="/tmp", name="bad")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the name bad is not allowed",
        ),
        (lambda c: list(c.events(["a//b"])), grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
    ],
)
def test_errors_carry_code_and_the_daemons_message(fake_daemon, call, code, message):
    with fake_daemon.client() as client:
        with pytest.raises(NbdClientError) as e:
            call(client)
    assert e.value.code == code
    assert message in e.value.message


def test_ambiguous_reference_names_the_candidates(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        list(client.launch(directory=str(tmp_path), name="nb", namespace="a"))
        list(client.launch(directory=str(tmp_path), name="nb", namespace="b"))
        with pytest.raises(NbdClientError) as e:
            client.get("nb")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "fake/a/nb" in e.value.message and "fake/b/nb" in e.value.message
        assert client.get("b/nb").namespace == "b"
        assert {s.ref for s in client.list()} == {"a/nb", "b/nb"}


def test_an_unexpected_daemon_error_is_internal_without_its_text(fake_daemon):
    with fake_daemon.client() as client:
        with pytest.raises(NbdClientError) as e:
            list(client.launch(directory="/tmp", name="boom"))
    assert e.value.code == grpc.StatusCode.INTERNAL
    assert "secret-token" not in e.value.message
    assert str(fake_daemon.log_file) in e.value.message
    log = fake_daemon.log_text()
    assert "Traceback" in log and "RuntimeError" in log


@pytest.mark.parametrize(
    "call, what",
    [
        (
            lambda c: list(c.launch(directory="/tmp")),
            "launch is not available in this daemon build: the launch capability is not installed",
        ),
        (lambda c: c.stop("x"), "stop is not available in this daemon build"),
        (
            lambda c: list(c.logs("x")),
            "logs is not available in this daemon build: the logs capability is not installed",
        ),
        (
            lambda c: c.sync("x"),
            "sync is not available in this daemon build: the sync capability is not installed",
        ),
    ],
)
def test_missing_capabilities_answer_unimplemented(daemon_factory, call, what):
    d = daemon_factory(capabilities="none")
    with d.client() as client:
        with pytest.raises(NbdClientError) as e:
            call(client)
    assert e.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert what in e.value.message


def test_a_capability_that_fails_to_load_says_why(daemon_factory):
    d = daemon_factory(capabilities="no_such_capability_xyz")
    with d.client() as client:
        with pytest.raises(NbdClientError) as e:
            list(client.launch(directory="/tmp"))
    assert "no_such_capability_xyz: ModuleNotFoundError" in e.value.message


def test_start_hooks_run_on_persisted_sessions(fake_daemon, daemon_factory, tmp_path):
    with fake_daemon.client() as client:
        list(client.launch(directory=str(tmp_path), name="nb"))
    assert fake_daemon.stop() == 0
    from fixtures_daemon import TEST_CAPABILITY, TEST_PLUGINS

    again = daemon_factory(capabilities=TEST_CAPABILITY, env={"PYTHONPATH": str(TEST_PLUGINS)})
    with again.client() as client:
        for _ in range(200):
            if client.get("nb").message == "resumed":
                break
            threading.Event().wait(0.05)
        assert client.get("nb").message == "resumed"


def test_autostart_starts_the_daemon_and_stop_waits_for_it(nbd_isolated_env):
    with pytest.raises(DaemonNotRunning) as e:
        nbdclient.connect(autostart=False)
    assert str(nbd_isolated_env.socket) in e.value.message and "nbctl daemon start" in e.value.message
    with nbdclient.connect() as client:
        assert client.daemon is not None
        pid = client.daemon.pid
        assert client.list() == []
        client.shutdown()
    assert wait_for_exit(pid, 15)
    assert not nbd_isolated_env.socket.exists()


def test_autostart_failure_names_the_log(nbd_isolated_env, monkeypatch):
    monkeypatch.setenv("NBD_DAEMON_COMMAND", "sh -c 'echo cannot start: broken install >&2; exit 3'")
    with pytest.raises(DaemonStartError) as e:
        nbdclient.connect()
    assert "exited with code 3 while starting: cannot start: broken install" in e.value.message
    assert str(nbd_isolated_env.paths.log_file) in e.value.message


def test_autostart_timeout_names_the_log(nbd_isolated_env, monkeypatch):
    monkeypatch.setenv("NBD_DAEMON_COMMAND", "sleep 30")
    with pytest.raises(DaemonStartError) as e:
        nbdclient.connect(start_timeout=1.0)
    assert "did not become ready within 1s" in e.value.message
    assert str(nbd_isolated_env.paths.log_file) in e.value.message


def test_version_mismatch_is_one_clear_error(daemon_factory):
    d = daemon_factory(capabilities="none", env={"NBD_TEST_DAEMON_VERSION": "9.9.9"})
    with pytest.raises(VersionMismatch) as e:
        d.client()
    assert e.value.message == (
        f"nbd daemon is version 9.9.9 but this client is {nbdclient.__version__}; "
        "restart it with `nbctl daemon stop` (it restarts on next use)"
    )
    with d.client(check_version=False) as client:
        assert client.version().version == "9.9.9"


def test_socket_of_another_user_is_refused(nbd_isolated_env):
    sock = nbd_isolated_env.socket
    sock.parent.mkdir(parents=True)
    s = socketlib.socket(socketlib.AF_UNIX)
    s.bind(str(sock))
    try:
        os.chown(sock, 12345, 12345)
        with pytest.raises(NbdClientError) as e:
            nbdclient.connect(autostart=False)
        assert "belongs to another user (uid 12345)" in e.value.message
    finally:
        s.close()


def test_async_client_every_rpc(fake_daemon, tmp_path):
    async def main() -> None:
        from nbdclient.aio import connect_async

        client = await connect_async(fake_daemon.socket, state_dir=fake_daemon.state_dir, autostart=False)
        async with client:
            assert (await client.version()).pid == fake_daemon.pid
            events = [e async for e in client.launch(directory=str(tmp_path), name="anb")]
            assert events[-1].WhichOneof("event") == "ready"
            assert [s.name for s in await client.list()] == ["anb"]
            assert (await client.get("anb")).phase == pb.PHASE_READY
            assert [l.text async for l in client.logs("anb", tail_lines=1)] == ["notebook line 5"]
            assert (await client.sync("anb", "pause")).state == pb.SYNC_STATE_PAUSED
            stream = client.events(initial=True)
            async for event in stream:
                assert event.kind == pb.SESSION_EVENT_KIND_SNAPSHOT
                stream.cancel()
            assert (await client.stop("anb")).phase == pb.PHASE_STOPPED
            with pytest.raises(NbdClientError) as e:
                await client.get("nope")
            assert e.value.code == grpc.StatusCode.NOT_FOUND
            await client.shutdown()

    asyncio.run(main())
    assert fake_daemon.proc.wait(15) == 0


def test_launch_cancelled_by_the_client_reaches_the_daemon(fake_daemon, tmp_path):
    with fake_daemon.client() as client:
        stream = client.launch(directory=str(tmp_path), name="hang")
        for event in stream:
            assert event.WhichOneof("event") == "phase"
            stream.cancel()
        for _ in range(200):
            if client.get("hang").message == "launch cancelled":
                break
            threading.Event().wait(0.05)
        assert client.get("hang").message == "launch cancelled"


def test_the_daemon_answers_while_capabilities_load_and_launch_waits_for_them(daemon_factory, tmp_path):
    from fixtures_daemon import TEST_PLUGINS

    gate = tmp_path / "gate"
    d = daemon_factory(
        capabilities="nbdtestcap.gated",
        env={"PYTHONPATH": str(TEST_PLUGINS), "NBD_TEST_CAPABILITY_GATE": str(gate)},
    )
    with d.client() as client:
        assert client.list() == []  # Served while the capability module is still importing.
        events: list[pb.LaunchEvent] = []
        launching = threading.Thread(
            target=lambda: events.extend(client.launch(directory=str(tmp_path), name="nb"))
        )
        launching.start()
        launching.join(0.5)
        assert launching.is_alive() and events == [], "Launch must wait for the capabilities"
        gate.touch()
        launching.join(30)
        assert events and events[-1].WhichOneof("event") == "ready"


def _persist_ready_session(paths, name: str, directory: str) -> None:
    from nbd.session import Phase, Session
    from nbd.store import SessionStore

    SessionStore(paths.sessions_dir).save(
        Session(name=name, namespace="default", context="fake", directory=directory, phase=Phase.READY)
    )


def test_session_rpcs_answer_unavailable_while_the_resume_outlasts_their_wait(
    daemon_factory, nbd_isolated_env, tmp_path
):
    from fixtures_daemon import TEST_PLUGINS

    gate = tmp_path / "resume-gate"
    _persist_ready_session(nbd_isolated_env.paths, "nb", str(tmp_path))
    d = daemon_factory(
        capabilities="nbdtestcap.slowresume",
        env={
            "PYTHONPATH": str(TEST_PLUGINS),
            "NBD_TEST_RESUME_GATE": str(gate),
            "NBD_TEST_SESSIONS_WAIT": "0.2",
        },
    )
    with d.client() as client:
        client.resume_retry = 0.0  # See the daemon's own answer, not the client's retries.
        assert [s.name for s in client.list()] == ["nb"]  # Reads are served during the resume.
        for call in (
            lambda: client.sync("nb", "status"),
            lambda: client.stop("nb"),
            lambda: list(client.launch(directory=str(tmp_path), name="nb")),
        ):
            with pytest.raises(NbdClientError) as e:
                call()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
            assert e.value.reason == "SessionsResuming"
            assert "still resuming its sessions; try again" in str(e.value)
        assert client.get("nb").message != "resumed after the gate"
        gate.touch()
        wait_for(lambda: client.get("nb").message == "resumed after the gate", what="the resume")
        assert client.sync("nb", "status").local_root == str(tmp_path)


def test_a_launch_during_the_resume_waits_for_it(daemon_factory, nbd_isolated_env, tmp_path):
    from fixtures_daemon import TEST_PLUGINS

    gate = tmp_path / "resume-gate"
    _persist_ready_session(nbd_isolated_env.paths, "nb", str(tmp_path))
    d = daemon_factory(
        capabilities="nbdtestcap.slowresume",
        env={"PYTHONPATH": str(TEST_PLUGINS), "NBD_TEST_RESUME_GATE": str(gate)},
    )
    with d.client() as client:
        events: list[pb.LaunchEvent] = []
        launching = threading.Thread(
            target=lambda: events.extend(client.launch(directory=str(tmp_path), name="nb"))
        )
        launching.start()
        launching.join(0.5)
        assert launching.is_alive() and events == [], "Launch must wait for the resume"
        # The resume ran to its end before the launch touched the session.
        gate.touch()
        launching.join(30)
        assert events and events[-1].WhichOneof("event") == "ready"


def test_the_client_retries_a_call_until_the_resume_ends(daemon_factory, nbd_isolated_env, tmp_path):
    from fixtures_daemon import TEST_PLUGINS

    gate = tmp_path / "resume-gate"
    _persist_ready_session(nbd_isolated_env.paths, "nb", str(tmp_path))
    d = daemon_factory(
        capabilities="nbdtestcap.slowresume",
        env={
            "PYTHONPATH": str(TEST_PLUGINS),
            "NBD_TEST_RESUME_GATE": str(gate),
            "NBD_TEST_SESSIONS_WAIT": "0.2",
        },
    )
    with d.client() as client:
        opened = threading.Timer(1.0, gate.touch)
        opened.start()
        try:
            status = client.sync("nb", "status")  # UNAVAILABLE a few times, then answered.
        finally:
            opened.cancel()
        assert gate.exists() and status.local_root == str(tmp_path)
        assert client.get("nb").message == "resumed after the gate"
