"""The kubelet against real clients: lifecycle, restarts, init containers, scheduling, images,
isolation, host-port relays, deletion and pod faults. One kubesim subprocess per module."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

from kubesim.testing import KubesimServer, start_inprocess, start_kubesim

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("kubelet"), gpus=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def pod(name: str, command: list[str], image: str = "busybox", **spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": image, "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 2, **spec},
    }


def status(core: Any, name: str) -> Any:
    return core.read_namespaced_pod(name, "default").status


def phase(core: Any, name: str) -> str:
    return str(status(core, name).phase)


def events(core: Any, name: str) -> list[Any]:
    return list(core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items)


def log(core: Any, name: str, **kw: Any) -> str:
    return str(core.read_namespaced_pod_log(name, "default", **kw))


def delete(core: Any, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    except ApiException:
        pass


def test_pod_runs_to_success_with_status_fields(core: Any) -> None:
    core.create_namespaced_pod("default", pod("ok", ["sh", "-c", "echo hello"], restartPolicy="Never"))
    wait_for(lambda: phase(core, "ok") == "Succeeded", what="Succeeded")
    st = status(core, "ok")
    cs = st.container_statuses[0]
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    # Its own address on the pod network (a 10.N.0.0/16 of the bridge); the node is the host.
    assert st.pod_ip.startswith("10.") and st.pod_ips[0].ip == st.pod_ip
    assert st.host_ip == "127.0.0.1" and st.start_time is not None
    assert {c.type: c.status for c in st.conditions}["PodScheduled"] == "True"
    assert log(core, "ok") == "hello\n"
    reasons = [e.reason for e in events(core, "ok")]
    for r in ("Scheduled", "Pulled", "Created", "Started"):
        assert r in reasons
    delete(core, "ok")


def test_failing_pod_with_never_fails(core: Any) -> None:
    core.create_namespaced_pod("default", pod("fails", ["sh", "-c", "exit 7"], restartPolicy="Never"))
    wait_for(lambda: phase(core, "fails") == "Failed", what="Failed")
    t = status(core, "fails").container_statuses[0].state.terminated
    assert (t.exit_code, t.reason) == (7, "Error")
    delete(core, "fails")


def test_crashing_container_is_restarted_with_backoff(core: Any) -> None:
    core.create_namespaced_pod("default", pod("crash", ["sh", "-c", "echo boom; exit 2"]))

    def crash_looping() -> bool:
        cs = status(core, "crash").container_statuses
        return bool(
            cs
            and cs[0].restart_count >= 2
            and cs[0].state.waiting
            and cs[0].state.waiting.reason == "CrashLoopBackOff"
        )

    wait_for(crash_looping, 30, "CrashLoopBackOff with restarts")
    cs = status(core, "crash").container_statuses[0]
    assert cs.last_state.terminated.exit_code == 2 and phase(core, "crash") == "Running"
    assert any(e.reason == "BackOff" and e.type == "Warning" for e in events(core, "crash"))
    assert log(core, "crash", previous=True) == "boom\n"
    delete(core, "crash")


def test_init_containers_run_first_in_order(core: Any) -> None:
    manifest = pod(
        "init",
        ["sh", "-c", "cat /work/order; echo main >> /work/order; sleep 3600"],
        container={"volumeMounts": [{"name": "w", "mountPath": "/work"}]},
        volumes=[{"name": "w", "emptyDir": {}}],
    )
    manifest["spec"]["initContainers"] = [
        {
            "name": f"i{i}",
            "image": "busybox",
            "command": ["sh", "-c", f"sleep 0.2; echo i{i} >> /work/order"],
            "volumeMounts": [{"name": "w", "mountPath": "/work"}],
        }
        for i in (1, 2)
    ]
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: phase(core, "init") == "Running", what="Running")
    wait_for(lambda: log(core, "init", container="c") == "i1\ni2\n", what="main log")
    st = status(core, "init")
    assert [s.state.terminated.reason for s in st.init_container_statuses] == ["Completed", "Completed"]
    assert {c.type: c.status for c in st.conditions}["Initialized"] == "True"
    delete(core, "init")


def test_pod_needing_more_gpus_stays_pending_until_capacity_frees(core: Any) -> None:
    core.create_namespaced_pod(
        "default",
        pod("gpu-a", ["sleep", "3600"], container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}),
    )
    wait_for(lambda: phase(core, "gpu-a") == "Running", what="gpu-a Running")
    core.create_namespaced_pod(
        "default",
        pod("gpu-b", ["sleep", "3600"], container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}),
    )

    def unschedulable() -> Any:
        conds = status(core, "gpu-b").conditions or []
        return [c for c in conds if c.type == "PodScheduled" and c.status == "False"]

    cond = wait_for(unschedulable, what="PodScheduled=False")[0]
    assert cond.reason == "Unschedulable"
    assert cond.message.startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    ev = [e for e in events(core, "gpu-b") if e.reason == "FailedScheduling"]
    assert ev and ev[0].type == "Warning" and "Insufficient nvidia.com/gpu" in ev[0].message
    time.sleep(0.5)
    assert phase(core, "gpu-b") == "Pending"
    delete(core, "gpu-a")
    wait_for(lambda: phase(core, "gpu-b") == "Running", what="gpu-b scheduled after gpu-a went")
    delete(core, "gpu-b")


def test_taint_keeps_an_intolerant_pod_pending_until_it_is_removed(core: Any) -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    core.patch_node("kubesim-node", {"spec": {"taints": [taint]}})
    try:
        core.create_namespaced_pod(
            "default",
            pod(
                "tol",
                ["sleep", "3600"],
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            ),
        )
        core.create_namespaced_pod("default", pod("intol", ["sleep", "3600"]))
        wait_for(lambda: phase(core, "tol") == "Running", what="tolerating pod Running")

        def unschedulable() -> Any:
            conds = status(core, "intol").conditions or []
            return [c for c in conds if c.type == "PodScheduled" and c.status == "False"]

        cond = wait_for(unschedulable, what="PodScheduled=False")[0]
        assert cond.reason == "Unschedulable"
        assert cond.message == (
            "0/1 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}. "
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        )
        ev = wait_for(
            lambda: [e for e in events(core, "intol") if e.reason == "FailedScheduling"],
            what="FailedScheduling",
        )
        assert ev[0].type == "Warning" and "untolerated taint" in ev[0].message
    finally:
        core.patch_node("kubesim-node", {"spec": {"taints": None}})
    # Removing the taint is a node change: the scheduler retries without any pod event.
    wait_for(lambda: phase(core, "intol") == "Running", what="intolerant pod scheduled once the taint went")
    delete(core, "tol")
    delete(core, "intol")


def test_node_selector_must_match_labels(core: Any) -> None:
    node = core.read_node("kubesim-node")
    assert node.metadata.labels["kubernetes.io/os"] == "linux"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    core.create_namespaced_pod("default", pod("sel", ["sleep", "1"], nodeSelector={"disktype": "ssd"}))
    cond = wait_for(
        lambda: [c for c in status(core, "sel").conditions or [] if c.type == "PodScheduled"],
        what="PodScheduled",
    )[0]
    assert cond.status == "False" and "didn't match Pod's node affinity/selector" in cond.message
    delete(core, "sel")


def test_missing_image_is_err_image_pull_then_backoff(core: Any) -> None:
    core.create_namespaced_pod("default", pod("noimg", ["sleep", "1"], image="nosuch/image:v1"))
    seen: set[str] = set()

    def reasons() -> bool:
        cs = status(core, "noimg").container_statuses
        if cs and cs[0].state.waiting:
            seen.add(cs[0].state.waiting.reason)
        return {"ErrImagePull", "ImagePullBackOff"} <= seen

    wait_for(reasons, 20, "ErrImagePull and ImagePullBackOff")
    assert phase(core, "noimg") == "Pending"
    failed = [e for e in events(core, "noimg") if e.reason == "Failed"]
    assert any('Failed to pull image "nosuch/image:v1"' in e.message and e.type == "Warning" for e in failed)
    delete(core, "noimg")


def test_missing_secret_is_create_container_config_error(core: Any) -> None:
    manifest = pod(
        "nosecret",
        ["sleep", "1"],
        container={"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
    )
    core.create_namespaced_pod("default", manifest)

    def waiting() -> Any:
        cs = status(core, "nosecret").container_statuses
        return (
            cs
            and cs[0].state.waiting
            and cs[0].state.waiting.reason == "CreateContainerConfigError"
            and cs[0]
        )

    cs = wait_for(waiting, what="CreateContainerConfigError")
    assert cs.state.waiting.message == 'secret "gone" not found'
    delete(core, "nosecret")


def test_env_sources_and_secret_volume(core: Any) -> None:
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "s1"}, "stringData": {"token": "t0ps3cret"}}
    )
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm1"}, "data": {"mode": "fast"}})
    manifest = pod(
        "envs",
        ["sh", "-c", "echo $TOKEN $MODE $ME $NS; cat /etc/s1/token; echo; pwd"],
        restartPolicy="Never",
        container={
            "workingDir": "/content",
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "token"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "mode"}}},
                {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ],
            "volumeMounts": [{"name": "sv", "mountPath": "/etc/s1", "readOnly": True}],
        },
        volumes=[{"name": "sv", "secret": {"secretName": "s1"}}],
    )
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: phase(core, "envs") == "Succeeded", what="Succeeded")
    assert log(core, "envs") == "t0ps3cret fast envs default\nt0ps3cret\n/content\n"
    delete(core, "envs")


def test_content_is_private_per_pod(core: Any) -> None:
    for name in ("priv-a", "priv-b"):
        core.create_namespaced_pod(
            "default",
            pod(
                name,
                ["sh", "-c", f"echo {name} > mine; sleep 0.3; ls"],
                restartPolicy="Never",
                container={"workingDir": "/content"},
            ),
        )
    for name in ("priv-a", "priv-b"):
        wait_for(lambda: phase(core, name) == "Succeeded", what=f"{name} Succeeded")  # noqa: B023
        assert log(core, name) == "mine\n"
    assert not Path("/content/mine").exists()
    for name in ("priv-a", "priv-b"):
        delete(core, name)


def test_a_volume_below_a_folder_the_image_lacks_leaves_the_host_alone(core: Any) -> None:
    # busybox has no /zz-kubesim-top: the mount point's parent is made in the container, as a
    # runtime makes it in the container's root, never on this machine for later pods to see.
    top = Path("/zz-kubesim-top")
    assert not top.exists() or not any(top.iterdir())  # an empty mount point of an earlier run
    for name in ("deep-a", "deep-b"):
        core.create_namespaced_pod(
            "default",
            pod(
                name,
                [
                    "sh",
                    "-c",
                    f"echo {name} > /zz-kubesim-top/{name}; ls /zz-kubesim-top; ls /zz-kubesim-top/out",
                ],
                restartPolicy="Never",
                volumes=[{"name": "o", "emptyDir": {}}],
                container={"volumeMounts": [{"name": "o", "mountPath": "/zz-kubesim-top/out"}]},
            ),
        )
    for name in ("deep-a", "deep-b"):
        wait_for(lambda: phase(core, name) == "Succeeded", what=f"{name} Succeeded")  # noqa: B023
        assert log(core, name) == f"{name}\nout\n"
    assert not top.exists() or not any(top.iterdir())
    for name in ("deep-a", "deep-b"):
        delete(core, name)


def test_empty_dir_over_tmp_does_not_hide_the_pods_own_folders(core: Any) -> None:
    # kubesim's state dir (the sources of the pod's mounts) is under /tmp in tests.
    core.create_namespaced_pod(
        "default",
        pod(
            "tmpvol",
            ["sh", "-c", "echo a > /tmp/x; echo b > y; ls /tmp; pwd"],
            restartPolicy="Never",
            container={
                "workingDir": "/zz-kubesim-workdir",
                "volumeMounts": [{"name": "t", "mountPath": "/tmp"}],
            },
            volumes=[{"name": "t", "emptyDir": {}}],
        ),
    )
    wait_for(lambda: phase(core, "tmpvol") in ("Succeeded", "Failed"), what="tmpvol finished")
    assert phase(core, "tmpvol") == "Succeeded"
    # "/tmp" sorts before "/zz-...": made first, it would hide the workdir's source under /tmp.
    assert log(core, "tmpvol") == "x\n/zz-kubesim-workdir\n"
    delete(core, "tmpvol")


def test_pod_reaches_the_api_server_through_the_host_port_relay(core: Any, ks: KubesimServer) -> None:
    port = int(ks.url.rsplit(":", 1)[1])
    script = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/version').read().decode())"
    core.create_namespaced_pod("default", pod("relay", ["python3", "-c", script], restartPolicy="Never"))
    wait_for(lambda: phase(core, "relay") in ("Succeeded", "Failed"), what="relay pod finished")
    assert '"minor"' in log(core, "relay")
    assert phase(core, "relay") == "Succeeded"
    delete(core, "relay")


def test_readiness_probe_gates_ready(core: Any, ks: KubesimServer) -> None:
    go = ks.state_dir / "go-probe"
    script = f"while [ ! -e {go} ]; do sleep 0.05; done; exec python3 -m http.server 8080 --bind 127.0.0.1"
    manifest = pod(
        "probe",
        ["sh", "-c", script],
        container={"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}},
    )
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: phase(core, "probe") == "Running", what="Running")
    time.sleep(1.5)  # a few failed probes
    assert not status(core, "probe").container_statuses[0].ready
    assert {c.type: c.status for c in status(core, "probe").conditions}["Ready"] == "False"
    go.write_text("")
    wait_for(lambda: status(core, "probe").container_statuses[0].ready, 15, "ready")
    assert {c.type: c.status for c in status(core, "probe").conditions}["Ready"] == "True"
    delete(core, "probe")


def test_graceful_delete_sends_sigterm_then_removes(core: Any, ks: KubesimServer) -> None:
    marker = ks.state_dir / "graceful-marker"
    script = f"trap 'echo term > {marker}; exit 0' TERM; while true; do sleep 0.1; done"
    core.create_namespaced_pod("default", pod("grace", ["sh", "-c", script], restartPolicy="Never"))
    wait_for(lambda: phase(core, "grace") == "Running", what="Running")
    core.delete_namespaced_pod("grace", "default")
    from kubernetes.client.exceptions import ApiException

    def gone() -> bool:
        try:
            core.read_namespaced_pod("grace", "default")
            return False
        except ApiException as e:
            return e.status == 404

    wait_for(gone, 15, "pod removed")
    assert marker.read_text() == "term\n"


def test_fault_kill_pod_restarts_container(core: Any, ks: KubesimServer) -> None:
    core.create_namespaced_pod("default", pod("victim", ["sleep", "3600"]))
    wait_for(lambda: phase(core, "victim") == "Running", what="Running")
    ks.admin.kill_pod("default", "victim")

    def restarted() -> bool:
        cs = status(core, "victim").container_statuses[0]
        return bool(cs.restart_count >= 1 and cs.state.running)

    wait_for(restarted, 20, "restart after kill")
    assert status(core, "victim").container_statuses[0].last_state.terminated.exit_code == 137
    delete(core, "victim")


def test_fault_recreate_pod_gives_new_uid(core: Any, ks: KubesimServer) -> None:
    core.create_namespaced_pod("default", pod("phoenix", ["sleep", "3600"]))
    wait_for(lambda: phase(core, "phoenix") == "Running", what="Running")
    old = core.read_namespaced_pod("phoenix", "default").metadata.uid
    ks.admin.recreate_pod("default", "phoenix")

    def new_running() -> bool:
        p = core.read_namespaced_pod("phoenix", "default")
        return bool(p.metadata.uid != old and p.status.phase == "Running")

    wait_for(new_running, 20, "recreated pod running")
    delete(core, "phoenix")


def test_liveness_probe_failure_restarts_the_container(core: Any) -> None:
    manifest = pod(
        "unlive",
        ["sleep", "3600"],
        container={"livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 1}},
    )
    core.create_namespaced_pod("default", manifest)

    def restarted() -> bool:
        cs = status(core, "unlive").container_statuses
        return bool(cs and cs[0].restart_count >= 1)

    wait_for(restarted, 20, "restart after failed liveness probe")
    assert any(e.reason == "Unhealthy" for e in events(core, "unlive"))
    delete(core, "unlive")


def test_host_network_pod_listens_on_the_host(core: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    core.create_namespaced_pod(
        "default",
        pod(
            "hostnet",
            ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            hostNetwork=True,
            container={"workingDir": "/content"},
        ),
    )
    wait_for(lambda: phase(core, "hostnet") == "Running", what="Running")

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return c.recv(12).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    wait_for(answers, 15, "pod's server reachable on the host")
    delete(core, "hostnet")


# ---------------------------------------------------------------------- in-process: run-time changes


@pytest.fixture
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_inprocess(tmp_path_factory.mktemp("kubelet-inproc"), gpus=0)
    yield server
    server.stop()


def _call(server: KubesimServer, fn: Callable[[], Any]) -> None:
    loop: asyncio.AbstractEventLoop = server.extra["loop"]
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        finally:
            done.set()

    loop.call_soon_threadsafe(run)
    assert done.wait(10)


def test_gpu_capacity_change_schedules_pending_pod_and_host_port_added(inproc: KubesimServer) -> None:
    from kubernetes import client

    api = inproc.api_client()
    core = client.CoreV1Api(api)
    kubelet = inproc.extra["cluster"].kubelet
    core.create_namespaced_pod(
        "default",
        pod("wants-gpu", ["sleep", "3600"], container={"resources": {"limits": {"nvidia.com/gpu": "1"}}}),
    )
    wait_for(
        lambda: any(
            c.type == "PodScheduled" and c.status == "False"
            for c in status(core, "wants-gpu").conditions or []
        ),
        what="Unschedulable",
    )
    _call(inproc, lambda: kubelet.set_gpus(1))
    wait_for(lambda: phase(core, "wants-gpu") == "Running", what="scheduled after capacity grew")

    # A host service on a port kubesim did not know at start becomes reachable from the pod.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        conn.sendall(b"hello from the host\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    _call(inproc, lambda: kubelet.add_host_port(port))
    script = (
        f"import socket,time\nfor i in range(50):\n    try:\n        s=socket.create_connection(('127.0.0.1',{port}))\n"
        f"        break\n    except OSError:\n        time.sleep(0.1)\nprint(s.recv(100).decode(), end='')"
    )
    core.create_namespaced_pod(
        "default", pod("host-client", ["python3", "-c", script], restartPolicy="Never")
    )
    wait_for(lambda: phase(core, "host-client") in ("Succeeded", "Failed"), what="host-client finished")
    assert log(core, "host-client") == "hello from the host\n"
    t.join(5)
    server.close()
    api.close()


def test_without_namespaces_pods_still_run_and_say_so(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client

    import kubesim.kubelet.namespaces as namespaces

    monkeypatch.setattr(
        namespaces, "namespaces_available", lambda: (False, "namespaces disabled for this test")
    )
    server = start_inprocess(tmp_path_factory.mktemp("kubelet-noiso"))
    try:
        api = server.api_client()
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(
            "default",
            pod(
                "plain",
                ["sh", "-c", "echo here > f; cat f; pwd"],
                restartPolicy="Never",
                container={"workingDir": "/content"},
            ),
        )
        wait_for(lambda: phase(core, "plain") == "Succeeded", what="Succeeded")
        out = log(core, "plain").splitlines()
        assert out[0] == "here"
        assert out[1].startswith(str(server.state_dir)) and out[1].endswith("/fs/content")
        warnings = [e for e in events(core, "plain") if e.reason == "NoIsolation"]
        assert (
            warnings
            and warnings[0].type == "Warning"
            and "namespaces disabled for this test" in warnings[0].message
            and "no address of its own (podIP 127.0.0.1) and no cluster DNS" in warnings[0].message
        )
        assert status(core, "plain").pod_ip == "127.0.0.1"
        assert not Path("/content/f").exists()
        api.close()
    finally:
        server.stop()
