"""The sync session against a pod of kubesim, through `exec`, with the real agent in the pod.

The pod's /content is private to the pod's container (a mount namespace); the tests look at it
from this machine through the container instance's folder under kubesim's state directory, and act inside the pod with
`kubectl exec` where that matters (a Jupyter server saving through its contents API).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbd.sync import StateChanged, SyncState

from .conftest import Pair, run, tree, until

kubesim_testing = pytest.importorskip("kubesim.testing")


class PodSide:
    def __init__(self, server: Any, name: str) -> None:
        self.server, self.name = server, name
        roots = list(Path(server.state_dir).rglob(f"default_{name}_*/containers/notebook/*/fs/content"))
        if not roots:
            pytest.fail(f"cannot find pod {name}'s /content under {server.state_dir}")
        self.content = roots[0]

    @contextlib.asynccontextmanager
    async def factory(self) -> AsyncIterator[Any]:
        """An exec transport factory for this pod (its API connection closed afterwards)."""
        from nbd.kube.target import load_target
        from nbd.kube.transport import close_transport
        from nbd.sync.exec_transport import exec_transport_factory

        target = await load_target(str(self.server.kubeconfig), None, "default")
        try:
            yield exec_transport_factory(target, "default", self.name)
        finally:
            await close_transport(target)


def _start_pod(server: Any, name: str, command: list[str]) -> PodSide:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "notebook", "image": "python", "workingDir": "/content", "command": command}
            ]
        },
    }
    server.kubectl("apply", "-f", "-", input=json.dumps(pod))
    server.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    return PodSide(server, name)


@pytest.fixture
def sync_kubesim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        server = kubesim_testing.start_kubesim(tmp_path_factory.mktemp("kubesim"))
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"kubesim cannot start here: {e}")
    try:
        yield server
    finally:
        server.stop()


def test_sync_with_a_pod_through_exec(sync_kubesim: Any, pair: Pair) -> None:
    pod = _start_pod(sync_kubesim, "nb-sync", ["python3", "-c", "import time; time.sleep(1e9)"])
    (pair.local / "train.py").write_bytes(b"print('hi')\n")
    (pair.local / "data").mkdir()
    (pair.local / "data" / "blob.bin").write_bytes(os.urandom(3 << 20))
    pair.remote = pod.content

    async def go() -> None:
        async with (
            pod.factory() as factory,
            pair.session(factory, remote_root="/content", agent_cache_dir="/tmp") as s,
        ):
            st = await s.flush(60)
            assert st.state == SyncState.WATCHING
            assert tree(pod.content) == tree(pair.local)
            # Inside the pod, the notebook writes a file: it arrives locally.
            sync_kubesim.kubectl("exec", pod.name, "--", "sh", "-c", "echo result > /content/out.txt")
            await until(
                lambda: (
                    (pair.local / "out.txt").exists() and (pair.local / "out.txt").read_bytes() == b"result\n"
                ),
                what="file from the pod",
            )
            (pair.local / "train.py").write_bytes(b"print('edited')\n")
            await until(
                lambda: (pod.content / "train.py").read_bytes() == b"print('edited')\n",
                what="edit to the pod",
            )
            # Every exec stream dropped: the session reconnects and converges without conflicts.
            dropped = sync_kubesim.admin.drop_streams()
            assert dropped >= 1
            (pair.local / "after-drop.txt").write_bytes(b"x")
            sync_kubesim.kubectl(
                "exec", pod.name, "--", "sh", "-c", "echo y > /content/remote-after-drop.txt"
            )
            await until(
                lambda: any(isinstance(e, StateChanged) and "reconnect" in e.message for e in pair.events),
                what="reconnect",
            )
            st = await s.flush(60)
            assert st.conflicts == ()
            assert tree(pod.content) == tree(pair.local)
            assert (pair.local / "remote-after-drop.txt").read_bytes() == b"y\n"

    run(go())


def test_a_new_pod_with_empty_content_is_refilled(sync_kubesim: Any, pair: Pair) -> None:
    first = _start_pod(sync_kubesim, "nb-one", ["python3", "-c", "import time; time.sleep(1e9)"])
    for i in range(25):
        (pair.local / f"f{i}.txt").write_bytes(b"%d" % i)

    async def go(pod: PodSide) -> None:
        async with (
            pod.factory() as factory,
            pair.session(factory, remote_root="/content", agent_cache_dir="/tmp") as s,
        ):
            await s.flush(60)
            assert tree(pod.content) == tree(pair.local)

    run(go(first))
    sync_kubesim.kubectl("delete", "pod", "nb-one", "--wait=true")
    second = _start_pod(sync_kubesim, "nb-one", ["python3", "-c", "import time; time.sleep(1e9)"])
    assert second.content != first.content and list(second.content.iterdir()) == []
    run(go(second))
    assert len(list(pair.local.iterdir())) == 25


def test_jupyter_saves_arrive_locally(sync_kubesim: Any, pair: Pair) -> None:
    pytest.importorskip("jupyter_server")
    token = secrets.token_hex(8)
    pod = _start_pod(
        sync_kubesim,
        "nb-jupyter",
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.port=8888",
            f"--IdentityProvider.token={token}",
            "--ServerApp.root_dir=/content",
            "--allow-root",
            "--ServerApp.open_browser=False",
        ],
    )
    save = (
        "import json,sys,time,urllib.request\n"
        "body=json.dumps({'type':'notebook','format':'json','content':{'cells':[{'cell_type':'code','source':"
        "'1+1','metadata':{},'outputs':[],'execution_count':None}],'metadata':{},'nbformat':4,'nbformat_minor':5}})\n"
        "for i in range(100):\n"
        "    try:\n"
        f"        r=urllib.request.Request('http://127.0.0.1:8888/api/contents/analysis.ipynb?token={token}',"
        "data=body.encode(),method='PUT',headers={'Content-Type':'application/json'})\n"
        "        print(urllib.request.urlopen(r,timeout=5).status); break\n"
        "    except Exception as e:\n"
        "        time.sleep(0.2)\n"
        "else:\n"
        "    sys.exit(1)\n"
    )

    async def go() -> None:
        async with (
            pod.factory() as factory,
            pair.session(factory, remote_root="/content", agent_cache_dir="/tmp") as s,
        ):
            await s.flush(60)
            await asyncio.to_thread(sync_kubesim.kubectl, "exec", pod.name, "--", "python3", "-c", save)
            await until(
                lambda: (pair.local / "analysis.ipynb").exists(), timeout=20, what="the saved notebook"
            )
            nb = json.loads((pair.local / "analysis.ipynb").read_text())
            assert "".join(nb["cells"][0]["source"]) == "1+1"
            st = await s.flush(30)
            # Jupyter's checkpoints stay in the pod: they are ignored by default.
            assert not (pair.local / ".ipynb_checkpoints").exists()
            assert st.conflicts == ()

    run(go())


def test_pod_recreated_under_a_running_session_is_refilled(sync_kubesim: Any, pair: Pair) -> None:
    pod = _start_pod(sync_kubesim, "nb-again", ["python3", "-c", "import time; time.sleep(1e9)"])
    for i in range(30):
        (pair.local / f"f{i}.txt").write_bytes(b"%d" % i)

    async def go() -> None:
        async with (
            pod.factory() as factory,
            pair.session(factory, remote_root="/content", agent_cache_dir="/tmp") as s,
        ):
            await s.flush(60)
            old = pod.content
            await asyncio.to_thread(sync_kubesim.admin.recreate_pod, "default", pod.name)

            def replaced() -> bool:
                try:  # pods' folders come and go while we look
                    roots = list(
                        Path(sync_kubesim.state_dir).rglob(
                            f"default_{pod.name}_*/containers/notebook/*/fs/content"
                        )
                    )
                    return any(r != old and len(list(r.iterdir())) == 30 for r in roots)
                except OSError:
                    return False

            await until(replaced, timeout=60, what="the new pod refilled")
            st = await s.flush(60)
            assert st.conflicts == () and len(list(pair.local.iterdir())) == 30

    run(go())


def test_streams_dropped_mid_transfer_leave_no_partial_file(sync_kubesim: Any, pair: Pair) -> None:
    pod = _start_pod(sync_kubesim, "nb-drop", ["python3", "-c", "import time; time.sleep(1e9)"])
    data = os.urandom(200 << 20)
    (pair.local / "weights.bin").write_bytes(data)

    async def go() -> None:
        async with (
            pod.factory() as factory,
            pair.session(factory, remote_root="/content", agent_cache_dir="/tmp", max_file_size=1 << 30) as s,
        ):
            # Drop every exec stream as soon as the transfer is under way.
            await until(
                lambda: any(n.startswith(".nbd-tmp-") for n in os.listdir(pod.content)),
                timeout=30,
                what="a transfer in flight",
            )
            assert await asyncio.to_thread(sync_kubesim.admin.drop_streams) >= 1
            for name in os.listdir(pod.content):
                assert name.startswith(".nbd-tmp-") or (pod.content / name).read_bytes() == data
            st = await s.flush(120)
            assert st.conflicts == ()
            assert (pod.content / "weights.bin").read_bytes() == data
            assert not [n for n in os.listdir(pod.content) if n.startswith(".nbd-tmp-")]

    run(go())


def test_missing_python_in_the_pod_is_named(sync_kubesim: Any, pair: Pair) -> None:
    pod = _start_pod(sync_kubesim, "nb-nopython", ["python3", "-c", "import time; time.sleep(1e9)"])

    async def go() -> None:
        async with (
            pod.factory() as factory,
            pair.session(
                factory,
                remote_root="/content",
                agent_cache_dir="/tmp",
                python="/nonexistent/python3",
                reconnect_max=1.0,
            ) as s,
        ):
            await until(
                lambda: "python3" in s.status().message and s.status().state == SyncState.CONNECTING,
                timeout=30,
                what="a message naming python3",
            )
            assert "needs python3" in s.status().message or "python3" in s.status().message

    run(go())


def test_a_stalled_stream_is_detected_and_the_session_reconnects(
    sync_kubesim: Any, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that dies silently (no FIN, no RST: every byte lost both ways) is found by the
    WebSocket heartbeat; the session reconnects and an edit made meanwhile arrives."""
    import time

    import nbd.kube.transport as transport

    monkeypatch.setattr(transport, "STREAM_HEARTBEAT", 1.0)
    pod = _start_pod(sync_kubesim, "nb-stall", ["python3", "-c", "import time; time.sleep(1e9)"])
    (pair.local / "before.txt").write_bytes(b"1")
    pair.remote = pod.content

    async def go() -> None:
        async with (
            pod.factory() as factory,
            pair.session(factory, remote_root="/content", agent_cache_dir="/tmp") as s,
        ):
            await s.flush(60)
            assert (pod.content / "before.txt").read_bytes() == b"1"
            stalled = await asyncio.to_thread(sync_kubesim.admin.stall_streams)
            assert stalled >= 1
            started = time.monotonic()
            (pair.local / "during-stall.txt").write_bytes(b"made while the stream was dead")
            await until(
                lambda: any(isinstance(e, StateChanged) and "reconnect" in e.message for e in pair.events),
                timeout=30,
                what="the stalled stream to be found dead",
            )
            detected = time.monotonic() - started
            await until(
                lambda: (pod.content / "during-stall.txt").exists(),
                timeout=60,
                what="the edit made during the stall to reach the pod",
            )
            st = await s.flush(60)
            assert st.conflicts == ()
            assert tree(pod.content) == tree(pair.local)
            # A ping after 1 s of quiet, given up 0.5 s later: well within the deadline.
            assert detected < 20, detected

    run(go())


def _agent_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"NBD-AGENT" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("guarded", [True, False], ids=["with-idle-exit", "without"])
def test_an_orphaned_agent_exits_once_its_daemon_is_silent(sync_kubesim: Any, guarded: bool) -> None:
    """On a real cluster an exec'd process outlives a client that vanished (kubesim's exec-orphans
    mode does the same). The agent leaves by itself once its daemon has been silent for its idle
    limit; without the limit it would stay for ever, which the second case shows."""
    import signal
    import time

    from nbd.sync.remote import RemoteEndpoint

    sync_kubesim.admin.exec_orphans(True)
    pod = _start_pod(
        sync_kubesim, f"nb-orphan-{int(guarded)}", ["python3", "-c", "import time; time.sleep(1e9)"]
    )
    marker = f"/tmp/orphan-{secrets.token_hex(4)}"
    sync_kubesim.kubectl("exec", pod.name, "--", "mkdir", "-p", marker)

    async def start_and_vanish() -> None:
        async with pod.factory() as factory:
            remote = RemoteEndpoint(
                factory,
                root="/content",
                cache_dir=marker,
                ping_interval=0.5 if guarded else 0,
                agent_idle_exit=3.0,
            )
            await remote.start(lambda paths: None)
            assert _agent_pids(marker), "the agent runs in the pod"
            # The daemon goes away without a word (its pings stop); the stream ends, stdin stays open.
            await remote.close()

    run(start_and_vanish())
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert _agent_pids(marker), "the agent outlives its client, as on a real cluster"
        time.sleep(0.1)
    if guarded:
        deadline = time.monotonic() + 20
        while _agent_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _agent_pids(marker), "the orphaned agent exited after its idle limit"
    else:
        time.sleep(6)  # twice the idle limit the other case exits after
        pids = _agent_pids(marker)
        assert pids, "with no idle limit the orphan stays"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
