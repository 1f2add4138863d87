"""Wait for a node or fail: the verdict on a pod the scheduler could not place, by table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from nbd_controller.config import Config
from nbd_controller.scheduling import NodeOffer, SchedulingObserved, node_groups, verdict, wanted

CONFIG = Config(bucket="b", registry="r", gpu_label_key="cloud.google.com/gke-accelerator")
SCHEDULER = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TOLERATE_GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CPU = NodeOffer("cpu-1", {}, capacity={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "0"})
L4 = NodeOffer(
    "l4-1",
    {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    (GPU_TAINT,),
    capacity={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
    allocatable={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
)
L4_STARTING = NodeOffer(
    "l4-2",
    {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    (GPU_TAINT,),
    capacity={"nvidia.com/gpu": "0"},
    allocatable={"nvidia.com/gpu": "0"},
)
T4 = NodeOffer("t4-1", {"nvidia.com/gpu.product": "Tesla-T4"}, capacity={"nvidia.com/gpu": "4"})
STATUS = (
    "autoscalerStatus: Running\nnodeGroups:\n- health:\n    maxSize: 3\n  name: l4-pool\n"
    "- health:\n    maxSize: 2\n  name: a100-pool\n"
)
TRIGGERED = ("TriggeredScaleUp", "pod triggered scale-up: [{l4-pool 0->1 (max: 3)}]", "2026-01-01T00:00:02Z")
REFUSED = (
    "NotTriggerScaleUp",
    "pod didn't trigger scale-up: 2 Insufficient nvidia.com/gpu",
    "2026-01-01T00:00:01Z",
)
REFUSED_LATER = (REFUSED[0], REFUSED[1], "2026-01-01T00:00:03Z")


def pod(
    gpus: int = 1, gpu_type: str = "nvidia-l4", tolerate: bool = True, memory: str = ""
) -> dict[str, Any]:
    limits: dict[str, str] = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    if memory:
        limits["memory"] = memory
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": limits}}]}
    if gpu_type:
        spec["nodeSelector"] = {"cloud.google.com/gke-accelerator": gpu_type}
    if tolerate:
        spec["tolerations"] = [TOLERATE_GPU]
    return {"spec": spec}


@dataclass(frozen=True)
class Case:
    id: str
    pod: dict[str, Any]
    observed: SchedulingObserved
    wait: bool
    says: str
    config: Config = CONFIG


CASES = [
    Case(
        "the autoscaler scales up",
        pod(),
        SchedulingObserved((TRIGGERED,), STATUS, (CPU,)),
        True,
        "Waiting for a node with 1 nvidia.com/gpu (nvidia-l4): the cluster is scaling up.",
    ),
    Case(
        "the new node waits for its device plugin",
        pod(),
        SchedulingObserved((TRIGGERED,), STATUS, (CPU, L4_STARTING)),
        True,
        "the new node l4-2 is up and waits for its GPU device plugin.",
    ),
    Case(
        "the autoscaler says no pool fits",
        pod(gpus=2),
        SchedulingObserved((REFUSED,), STATUS, (CPU, T4)),
        False,
        "will not add one (pod didn't trigger scale-up: 2 Insufficient nvidia.com/gpu); the cluster's nodes offer "
        "Tesla-T4 (1 node); the autoscaler's node pools are l4-pool, a100-pool.",
    ),
    Case(
        "a later scale-up outweighs an earlier refusal",
        pod(),
        SchedulingObserved((REFUSED, TRIGGERED), STATUS, ()),
        True,
        "the cluster is scaling up",
    ),
    Case(
        "a later refusal outweighs an earlier scale-up",
        pod(),
        SchedulingObserved((TRIGGERED, REFUSED_LATER), STATUS, ()),
        False,
        "will not add one",
    ),
    Case(
        "a scale-up in the same second as a refusal counts",
        pod(),
        SchedulingObserved(((TRIGGERED[0], TRIGGERED[1], REFUSED[2]), REFUSED), STATUS, ()),
        True,
        "scaling up",
    ),
    Case(
        "an autoscaler that has not spoken yet",
        pod(),
        SchedulingObserved((), STATUS, (CPU,)),
        True,
        "the cluster autoscaler is looking for a node pool.",
    ),
    Case(
        "an autoscaler the admin declared",
        pod(),
        SchedulingObserved((), None, (CPU,)),
        True,
        "the cluster autoscaler is looking for a node pool.",
        Config(bucket="b", registry="r", autoscaler="present"),
    ),
    Case(
        "no autoscaler and no GPU node",
        pod(),
        SchedulingObserved((), None, (CPU,)),
        False,
        "the cluster has no autoscaler to add one (0/1 nodes are available: 1 Insufficient nvidia.com/gpu.); "
        "no node of the cluster has a GPU. To run it, ask for fewer GPUs",
    ),
    Case(
        "no autoscaler, the GPU node is busy",
        pod(),
        SchedulingObserved((), None, (CPU, L4)),
        True,
        "the nodes that fit (l4-1) are busy.",
    ),
    Case(
        "no autoscaler, the GPU node lacks the toleration",
        pod(tolerate=False),
        SchedulingObserved((), None, (L4,)),
        False,
        "the cluster's nodes offer nvidia-l4 (1 node)",
    ),
    Case(
        "no autoscaler, too many GPUs",
        pod(gpus=2),
        SchedulingObserved((), None, (L4, T4)),
        False,
        "Tesla-T4 (1 node), nvidia-l4 (1 node)",
    ),
    Case(
        "no autoscaler, more memory than any node",
        pod(gpus=0, gpu_type="", memory="64Gi"),
        SchedulingObserved((), None, (CPU,)),
        False,
        "no autoscaler",
    ),
    Case(
        "the admin says there is no autoscaler",
        pod(),
        SchedulingObserved((), STATUS, (CPU,)),
        False,
        "no autoscaler",
        Config(bucket="b", registry="r", autoscaler="none"),
    ),
    Case("nodes that may not be listed", pod(), SchedulingObserved((), None, None), True, SCHEDULER),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdict(case: Case) -> None:
    found = verdict(case.config, case.pod, SCHEDULER, case.observed)
    assert (found.wait, found.reason) == (case.wait, "WaitingForNode" if case.wait else "Unschedulable")
    assert case.says in found.message
    assert "\n" not in found.message


def test_what_a_pod_waits_for() -> None:
    assert wanted(CONFIG, pod(gpus=2)) == "a node with 2 nvidia.com/gpu (nvidia-l4)"
    assert wanted(CONFIG, pod(gpu_type="")) == "a node with 1 nvidia.com/gpu"
    assert wanted(CONFIG, pod(gpus=0)) == "a node with room for the pod"


def test_node_groups_of_both_status_layouts() -> None:
    assert node_groups(STATUS) == ["l4-pool", "a100-pool"]
    old = "Cluster-wide:\n  Health: Healthy\nNodeGroups:\n  Name:        gpu-pool\n  Health:      Healthy (ready=0)\n"
    assert node_groups(old) == ["gpu-pool"]
    assert node_groups(None) == [] and node_groups("") == []
