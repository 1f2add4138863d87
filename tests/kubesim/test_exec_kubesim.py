"""pods/exec against the real kubectl and the Python client: stdin, exit codes, cp, drops."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("exec"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    core = client.CoreV1Api(api)
    manifest = {
        "metadata": {"name": "box"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sleep", "3600"],
                    "workingDir": "/content",
                    "env": [{"name": "GREETING", "value": "hi"}],
                }
            ],
        },
    }
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: core.read_namespaced_pod("box", "default").status.phase == "Running", what="box Running")
    yield core
    api.close()


def test_kubectl_exec_stdin_and_exit_code(ks: KubesimServer, core: Any) -> None:
    out = ks.kubectl("exec", "-i", "box", "--", "sh", "-c", "cat; exit 3", input="from stdin\n", check=False)
    assert out.stdout == "from stdin\n"
    assert out.returncode == 3


def test_kubectl_exec_sees_container_env_workdir_and_namespaces(ks: KubesimServer, core: Any) -> None:
    out = ks.kubectl("exec", "box", "--", "sh", "-c", "echo $GREETING; pwd; hostname; echo oops >&2")
    assert out.stdout == "hi\n/content\nbox\n"
    assert "oops" in out.stderr


def test_kubectl_exec_unknown_command_fails(ks: KubesimServer, core: Any) -> None:
    out = ks.kubectl("exec", "box", "--", "no-such-command-here", check=False)
    assert out.returncode != 0
    assert "executable file not found in $PATH" in out.stderr


def test_kubectl_exec_unknown_container_is_rejected(ks: KubesimServer, core: Any) -> None:
    out = ks.kubectl("exec", "box", "-c", "nope", "--", "true", check=False)
    assert out.returncode != 0 and "container nope is not valid for pod box" in out.stderr


def test_kubectl_cp_both_ways(ks: KubesimServer, core: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    ks.kubectl("cp", str(src), "box:/content/copied")
    out = ks.kubectl(
        "exec", "box", "--", "sh", "-c", "cat /content/copied/a.txt; wc -c < /content/copied/sub/b.bin"
    )
    assert out.stdout.split() == ["alpha", "25600"]
    back = tmp_path / "back"
    ks.kubectl("cp", "box:/content/copied", str(back))
    assert (back / "a.txt").read_text() == "alpha\n"
    assert (back / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 100


def test_python_client_exec_stdin_stdout_returncode(core: Any) -> None:
    from kubernetes.stream import stream

    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "box",
        "default",
        command=["sh", "-c", "cat; echo err >&2; exit 4"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("hello\n")
    resp.close_channel(0)
    resp.run_forever(timeout=10)
    assert resp.read_stdout() == "hello\n"
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 4
    out = stream(
        core.connect_get_namespaced_pod_exec,
        "box",
        "default",
        command=["echo", "simple"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
    )
    assert out == "simple\n"


def test_drop_streams_closes_an_open_exec(ks: KubesimServer, core: Any) -> None:
    from kubernetes.stream import stream

    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "box",
        "default",
        command=["sleep", "67.25"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    wait_for(lambda: ks.admin.status()["openStreams"] >= 1, what="stream tracked")
    assert ks.admin.drop_streams() >= 1

    def closed() -> bool:
        try:
            resp.update(timeout=0.2)
        except Exception:
            return True
        return not resp.is_open()

    wait_for(closed, 10, "exec stream closed")
    # The command went with its stream (a distinctive argument tells it from anything else running).
    wait_for(
        lambda: (
            subprocess.run(
                ["sh", "-c", "ps -eo args | grep -c '^sleep 67.25$'"], capture_output=True, text=True
            ).stdout.strip()
            == "0"
        ),
        10,
        "exec'd process gone",
    )


def test_python_client_exec_with_tty(core: Any) -> None:
    from kubernetes.stream import stream

    out = stream(
        core.connect_get_namespaced_pod_exec,
        "box",
        "default",
        command=["sh", "-c", "[ -t 1 ] && echo is-a-tty; echo err >&2"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=True,
    )
    assert "is-a-tty" in out and "err" in out  # one terminal carries both streams


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "channel.k8s.io"])
def test_raw_websocket_exec_older_protocols_get_a_status(ks: KubesimServer, core: Any, protocol: str) -> None:
    import asyncio
    import json

    import aiohttp

    async def run() -> tuple[str | None, bytes, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {ks.token}"} if ks.token else {}
        url = (
            f"{ks.url}/api/v1/namespaces/default/pods/box/exec?command=sh&command=-c&command=echo%20out%3B%20exit%205"
            "&stdout=true&stderr=true"
        )
        out = b""
        status: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, protocols=[protocol], headers=headers) as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        continue
                    if msg.data[0] == 1:
                        out += msg.data[1:]
                    elif msg.data[0] == 3:
                        status = json.loads(msg.data[1:])
                return ws.protocol, out, status

    chosen, out, status = asyncio.run(run())
    assert chosen == protocol
    assert out == b"out\n"
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "5"
