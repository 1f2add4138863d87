"""pods/log against the real kubectl and the Python client: follow, previous, errors, options."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def make(core: Any, name: str, script: str, restart: str = "Never", **extra: Any) -> None:
    spec = {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
    }
    spec.update(extra)
    core.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": spec})


def running(core: Any, name: str) -> bool:
    return core.read_namespaced_pod(name, "default").status.phase in ("Running", "Succeeded", "Failed")


def test_kubectl_logs_follow_streams_lines_as_written(ks: KubesimServer, core: Any) -> None:
    # The pod waits for a go file before finishing: the first line must arrive while it still runs.
    go = ks.state_dir / "go-follow"
    make(core, "ticker", f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second")
    wait_for(lambda: running(core, "ticker"), what="Running")
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(ks.kubeconfig),
            "--cache-dir",
            str(ks.cache_dir),
            "logs",
            "-f",
            "ticker",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        assert proc.poll() is None
        go.write_text("")
        assert proc.stdout.readline() == "second\n"
        assert proc.wait(15) == 0  # follow ends when the container ends
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_python_client_follow(ks: KubesimServer, core: Any) -> None:
    go = ks.state_dir / "go-python"
    make(core, "pyfollow", f"echo one; while [ ! -e {go} ]; do sleep 0.05; done; echo two; echo three")
    wait_for(lambda: running(core, "pyfollow"), what="Running")
    resp = core.read_namespaced_pod_log("pyfollow", "default", follow=True, _preload_content=False)
    lines = resp.stream(amt=None)
    got = b""
    while b"one\n" not in got:
        got += next(lines)
    go.write_text("")
    for chunk in lines:
        got += chunk
    assert got == b"one\ntwo\nthree\n"


def test_multi_container_pod_needs_a_container_name(ks: KubesimServer, core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    make(
        core,
        "pair",
        "echo a",
        containers=[
            {"name": "a", "image": "busybox", "command": ["sh", "-c", "echo from-a; sleep 30"]},
            {"name": "b", "image": "busybox", "command": ["sh", "-c", "echo from-b; sleep 30"]},
        ],
        initContainers=[{"name": "setup", "image": "busybox", "command": ["echo", "from-init"]}],
    )
    wait_for(lambda: running(core, "pair"), what="Running")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("pair", "default")
    assert err.value.status == 400
    assert (
        "a container name must be specified for pod pair, choose one of: [a b] "
        "or one of the init containers: [setup]"
    ) in json.loads(err.value.body)["message"]
    wait_for(
        lambda: core.read_namespaced_pod_log("pair", "default", container="b") == "from-b\n", what="b log"
    )
    assert core.read_namespaced_pod_log("pair", "default", container="setup") == "from-init\n"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("pair", "default", container="zz")
    assert "container zz is not valid for pod pair" in json.loads(err.value.body)["message"]
    core.delete_namespaced_pod("pair", "default", grace_period_seconds=0)


def test_previous_tail_and_timestamps(ks: KubesimServer, core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    make(core, "restarts", "echo run; echo l2; echo l3; exit 1", restart="Always")

    def restarted() -> bool:
        cs = core.read_namespaced_pod("restarts", "default").status.container_statuses
        return bool(cs and cs[0].restart_count >= 1)

    wait_for(restarted, 20, "a restart")
    assert core.read_namespaced_pod_log("restarts", "default", previous=True) == "run\nl2\nl3\n"
    out = ks.kubectl("logs", "restarts", "--previous", "--tail=1", "--timestamps").stdout
    stamp, _, text = out.partition(" ")
    assert text == "l3\n" and stamp.endswith("Z") and "T" in stamp
    core.delete_namespaced_pod("restarts", "default", grace_period_seconds=0)
    make(core, "fresh", "echo only; sleep 30", restart="Always")
    wait_for(lambda: running(core, "fresh"), what="Running")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("fresh", "default", previous=True)
    assert (
        'previous terminated container "c" in pod "fresh" not found' in json.loads(err.value.body)["message"]
    )
    core.delete_namespaced_pod("fresh", "default", grace_period_seconds=0)


def test_logs_of_a_pod_waiting_for_its_image(ks: KubesimServer, core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "waits"},
            "spec": {"containers": [{"name": "c", "image": "nosuch/thing", "command": ["true"]}]},
        },
    )
    time.sleep(0.3)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("waits", "default")
    assert (
        err.value.status == 400
        and 'container "c" in pod "waits" is waiting to start' in json.loads(err.value.body)["message"]
    )
    core.delete_namespaced_pod("waits", "default", grace_period_seconds=0)


def test_drop_streams_ends_a_log_follow(ks: KubesimServer, core: Any) -> None:
    make(core, "longlog", "echo start; sleep 3600", restart="Always")
    wait_for(lambda: running(core, "longlog"), what="Running")
    resp = core.read_namespaced_pod_log("longlog", "default", follow=True, _preload_content=False)
    chunks = resp.stream(amt=None)
    assert next(chunks) == b"start\n"
    wait_for(lambda: ks.admin.status()["openStreams"] >= 1, what="tracked")
    ks.admin.drop_streams()
    # The stream ends either with urllib3's protocol error or cleanly (then EOFError below).
    with pytest.raises(Exception):  # noqa: B017
        for _ in chunks:
            pass
        raise EOFError("stream ended")
    core.delete_namespaced_pod("longlog", "default", grace_period_seconds=0)
