"""Several nodes: scheduling over them, pods talking across them, and ReadWriteOnce volumes held by one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.kubelet.scheduler import merge_messages
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)

GPU = (
    "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: "
    "1 No preemption victims found for incoming pod."
)
TAINT = (
    "0/1 nodes are available: 1 node(s) had untolerated taint {a: b}. preemption: 0/1 nodes are available: "
    "1 Preemption is not helpful for scheduling."
)


def test_messages_of_several_nodes_merge_as_the_schedulers() -> None:
    assert merge_messages([GPU]) == GPU
    assert merge_messages([GPU, GPU]) == (
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: "
        "2 No preemption victims found for incoming pod."
    )
    assert merge_messages([GPU, TAINT]) == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint {a: b}. "
        "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, "
        "1 Preemption is not helpful for scheduling."
    )
    assert merge_messages(["odd", GPU]) == "odd"


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("nodes"), extra_args=["--nodes", "2"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def on(node: str, name: str, script: str, claim: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [{"name": "c", "image": "python:3.12", "command": ["sh", "-c", script]}],
    }
    if claim:
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {"metadata": {"name": name, "labels": {"app": name}}, "spec": spec}


def phase(core: Any, name: str) -> str:
    return str(core.read_namespaced_pod(name, "default").status.phase)


def test_both_nodes_are_ready_and_pods_spread(ks: KubesimServer, core: Any) -> None:
    nodes = {n.metadata.name for n in core.list_node().items}
    assert nodes == {"kubesim-node", "kubesim-node-2"}
    for n in ("spread-a", "spread-b"):
        body = on("x", n, "exec sleep 300")
        del body["spec"]["nodeSelector"]
        core.create_namespaced_pod("default", body)
    wait_for(
        lambda: phase(core, "spread-a") == "Running" and phase(core, "spread-b") == "Running",
        timeout=30,
        what="both running",
    )
    placed = {core.read_namespaced_pod(n, "default").spec.node_name for n in ("spread-a", "spread-b")}
    assert placed == nodes
    assert ks.kubectl("logs", "spread-b").returncode == 0  # streams reach a pod on the second node
    for n in ("spread-a", "spread-b"):
        core.delete_namespaced_pod(n, "default")


def test_pods_on_two_nodes_talk_by_dns_name(core: Any) -> None:
    core.create_namespaced_service(
        "default",
        {"metadata": {"name": "far"}, "spec": {"clusterIP": "None", "selector": {"app": "far-server"}}},
    )
    server = on("kubesim-node", "far-server", "exec python3 -m http.server 8080 --bind 0.0.0.0")
    server["spec"]["hostname"], server["spec"]["subdomain"] = "web", "far"
    core.create_namespaced_pod("default", server)
    client = on(
        "kubesim-node-2",
        "far-client",
        'for i in $(seq 1 150); do python3 -c "import urllib.request as u; '
        "print(u.urlopen('http://web.far:8080/', timeout=2).status)\" 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
    )
    core.create_namespaced_pod("default", client)
    wait_for(
        lambda: phase(core, "far-client") in ("Succeeded", "Failed"), timeout=60, what="the client to finish"
    )
    assert phase(core, "far-client") == "Succeeded"
    assert core.read_namespaced_pod_log("far-client", "default") == "200\n"
    core.delete_namespaced_pod("far-server", "default")


def claim(core: Any, name: str, mode: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "metadata": {"name": name},
            "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim(name, "default").status.phase == "Bound",
        what="Bound",
    )


def test_a_read_write_once_volume_is_attached_to_one_node(core: Any) -> None:
    claim(core, "rwo", "ReadWriteOnce")
    volume = core.read_namespaced_persistent_volume_claim("rwo", "default").spec.volume_name
    core.create_namespaced_pod(
        "default", on("kubesim-node", "holder", "echo held > /data/f; exec sleep 300", "rwo")
    )
    wait_for(lambda: phase(core, "holder") == "Running", timeout=30, what="holder running")
    core.create_namespaced_pod("default", on("kubesim-node", "neighbour", "cat /data/f", "rwo"))
    wait_for(
        lambda: phase(core, "neighbour") == "Succeeded", timeout=30, what="the same node's pod to use it"
    )
    core.create_namespaced_pod("default", on("kubesim-node-2", "elsewhere", "cat /data/f", "rwo"))
    expected = f'Multi-Attach error for volume "{volume}" Volume is already used by pod(s) holder'

    def refused() -> bool:
        evs = core.list_namespaced_event("default", field_selector="involvedObject.name=elsewhere").items
        return any(
            e.reason == "FailedAttachVolume" and e.message == expected and e.type == "Warning" for e in evs
        )

    wait_for(refused, timeout=30, what="the Multi-Attach error")
    assert phase(core, "elsewhere") == "Pending"
    core.delete_namespaced_pod("holder", "default")
    wait_for(
        lambda: phase(core, "elsewhere") == "Succeeded",
        timeout=60,
        what="the pod to run once the volume is free",
    )
    assert core.read_namespaced_pod_log("elsewhere", "default") == "held\n"


def test_a_read_write_many_volume_is_used_on_both_nodes(core: Any) -> None:
    claim(core, "rwx", "ReadWriteMany")
    core.create_namespaced_pod(
        "default",
        on("kubesim-node", "left", "echo l > /data/l; until [ -f /data/r ]; do sleep 0.1; done", "rwx"),
    )
    core.create_namespaced_pod(
        "default",
        on("kubesim-node-2", "right", "echo r > /data/r; until [ -f /data/l ]; do sleep 0.1; done", "rwx"),
    )
    wait_for(
        lambda: phase(core, "left") == "Succeeded" and phase(core, "right") == "Succeeded",
        timeout=60,
        what="both done",
    )
