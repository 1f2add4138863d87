"""The simulated cluster autoscaler: a GPU pool that scales from zero, its events and its status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.autoscaler import NodePool, not_triggered_message, parse_pool, pool_verdict
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)

L4 = {
    "name": "l4",
    "gpus": 1,
    "maxNodes": 1,
    "labels": ["cloud.google.com/gke-accelerator=nvidia-l4"],
    "taints": ["nvidia.com/gpu=present:NoSchedule"],
    "scaleUpDelay": 1,
    "devicePluginDelay": 1.5,
}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_pod(
    name: str, *, gpus: int = 1, gpu_type: str = "nvidia-l4", tolerate: bool = True
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "nodeSelector": {"cloud.google.com/gke-accelerator": gpu_type},
        "containers": [
            {
                "name": "c",
                "image": "python:3.12",
                "command": ["sh", "-c", "exec sleep 300"],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ],
    }
    if tolerate:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("pod", "size", "expected"),
    [
        (gpu_pod("a"), 0, None),
        (gpu_pod("a", gpus=2), 0, "1 Insufficient nvidia.com/gpu"),
        (gpu_pod("a", gpu_type="nvidia-h100"), 0, "1 node(s) didn't match Pod's node affinity/selector"),
        (gpu_pod("a", tolerate=False), 0, "1 node(s) had untolerated taint {nvidia.com/gpu: present}"),
        (gpu_pod("a"), 1, "1 max node group size reached"),
    ],
)
def test_whether_a_new_node_of_the_pool_takes_the_pod(
    pod: dict[str, Any], size: int, expected: str | None
) -> None:
    assert pool_verdict(pod, parse_pool(json.dumps(L4)), size) == expected


def test_the_refusal_counts_each_pools_reason() -> None:
    assert (
        not_triggered_message(
            [
                "1 Insufficient nvidia.com/gpu",
                "1 max node group size reached",
                "1 Insufficient nvidia.com/gpu",
            ]
        )
        == "pod didn't trigger scale-up: 1 max node group size reached, 2 Insufficient nvidia.com/gpu"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "is not JSON"),
        ('{"gpus": 1}', "needs a JSON object with a name"),
        ('{"name": "x", "size": 1}', "unknown field(s) size"),
        ('{"name": "X_Y"}', "must be a short DNS label"),
        ('{"name": "x", "maxNodes": 0}', "maxNodes must be a number ≥ 1"),
        ('{"name": "x", "taints": ["a:Sometimes"]}', "must look like key[=value]:Effect"),
    ],
)
def test_a_bad_pool_is_refused_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        parse_pool(text)
    assert problem in str(e.value) and "\n" not in str(e.value)


def test_a_pool_parses_with_its_defaults() -> None:
    pool = parse_pool('{"name": "cpu", "labels": {"team": "ml"}}')
    assert pool == NodePool(name="cpu", labels={"team": "ml"})


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("autoscaler"), extra_args=["--node-pool", json.dumps(L4)])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def events(core: Any, pod: str) -> list[tuple[str, str, str]]:
    items = core.list_namespaced_event("default", field_selector=f"involvedObject.name={pod}").items
    return [(e.reason, e.message, e.source.component if e.source else "") for e in items]


def test_a_pool_grows_from_zero_and_its_gpus_come_after_the_node(core: Any) -> None:
    status = core.read_namespaced_config_map("cluster-autoscaler-status", "kube-system").data["status"]
    assert "name: l4" in status and "maxSize: 1" in status and "cloudProviderTarget: 0" in status
    core.create_namespaced_pod("default", gpu_pod("trainer"))
    wait_for(
        lambda: (
            ("TriggeredScaleUp", "pod triggered scale-up: [{l4 0->1 (max: 1)}]", "cluster-autoscaler")
            in events(core, "trainer")
        ),
        timeout=20,
        what="the scale-up event",
    )
    # The node registers first, without the GPU its device plugin has not announced yet.
    node = wait_for(
        lambda: next(iter(core.list_node(label_selector="kubesim.dev/node-pool=l4").items), None), 20
    )
    assert node.metadata.name == "l4-1"
    assert node.metadata.labels["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
        ("nvidia.com/gpu", "present", "NoSchedule")
    ]
    assert node.status.allocatable["nvidia.com/gpu"] == "0"
    assert core.read_namespaced_pod("trainer", "default").spec.node_name is None
    wait_for(
        lambda: core.read_namespaced_pod("trainer", "default").status.phase == "Running",
        timeout=30,
        what="the pod to run on the new node",
    )
    assert core.read_namespaced_pod("trainer", "default").spec.node_name == "l4-1"
    assert core.read_node("l4-1").status.allocatable["nvidia.com/gpu"] == "1"
    status = core.read_namespaced_config_map("cluster-autoscaler-status", "kube-system").data["status"]
    assert "cloudProviderTarget: 1" in status
    # Waiting for its node, the pod was told nothing else by the autoscaler.
    assert not [e for e in events(core, "trainer") if e[0] == "NotTriggerScaleUp"]


def test_a_pod_no_pool_fits_is_told_why(core: Any) -> None:
    core.create_namespaced_pod("default", gpu_pod("too-big", gpus=4))
    core.create_namespaced_pod("default", gpu_pod("untolerated", tolerate=False))
    wait_for(
        lambda: (
            (
                "NotTriggerScaleUp",
                "pod didn't trigger scale-up: 1 Insufficient nvidia.com/gpu",
                "cluster-autoscaler",
            )
            in events(core, "too-big")
        ),
        timeout=20,
        what="the refusal",
    )
    wait_for(
        lambda: any(
            e[0] == "NotTriggerScaleUp" and "untolerated taint {nvidia.com/gpu: present}" in e[1]
            for e in events(core, "untolerated")
        ),
        timeout=20,
        what="the refusal of the pod without the toleration",
    )
    assert len(core.list_node(label_selector="kubesim.dev/node-pool=l4").items) == 1


def test_a_bad_node_pool_flag_stops_kubesim_in_one_line(tmp_path: Any) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubesim",
            "serve",
            "--state-dir",
            str(tmp_path),
            "--node-pool",
            '{"name": "x", "gpu": 1}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "kubesim: --node-pool: unknown field(s) gpu; allowed: devicePluginDelay, gpus, labels, maxNodes, name, "
        "scaleUpDelay, taints\n"
    )


def test_each_pod_gets_its_node_up_to_the_pools_maximum(tmp_path_factory: pytest.TempPathFactory) -> None:
    from kubernetes import client

    pool = {**L4, "name": "pair", "maxNodes": 2, "devicePluginDelay": 0.5}
    server = start_kubesim(tmp_path_factory.mktemp("pair"), extra_args=["--node-pool", json.dumps(pool)])
    api = server.api_client()
    try:
        core = client.CoreV1Api(api)
        for name in ("first", "second", "third"):
            core.create_namespaced_pod("default", gpu_pod(name))
        wait_for(
            lambda: all(
                core.read_namespaced_pod(n, "default").status.phase == "Running" for n in ("first", "second")
            ),
            timeout=30,
            what="two pods on two new nodes",
        )
        placed = {core.read_namespaced_pod(n, "default").spec.node_name for n in ("first", "second")}
        assert placed == {"pair-1", "pair-2"}
        said = {e[1] for n in ("first", "second") for e in events(core, n) if e[0] == "TriggeredScaleUp"}
        assert said == {
            "pod triggered scale-up: [{pair 0->1 (max: 2)}]",
            "pod triggered scale-up: [{pair 1->2 (max: 2)}]",
        }
        wait_for(
            lambda: (
                (
                    "NotTriggerScaleUp",
                    "pod didn't trigger scale-up: 1 max node group size reached",
                    "cluster-autoscaler",
                )
                in events(core, "third")
            ),
            timeout=20,
            what="the third pod's refusal",
        )
        assert core.read_namespaced_pod("third", "default").spec.node_name is None
    finally:
        api.close()
        server.stop()
