"""Whether a pod with no node is worth waiting for: the autoscaler's word, the nodes, the pools.

On a real cluster, Unschedulable is how a GPU pod's life starts: GPU pools scale from zero, the
cluster autoscaler adds a node *because* a pod is unschedulable, and the new node shows no
`nvidia.com/gpu` until its device plugin runs, minutes later. So `verdict` waits unless the cluster
says the pod can never run:

1. the autoscaler's latest event on the pod is `NotTriggerScaleUp` (no pool fits it): fail;
2. it is `TriggeredScaleUp`: wait, the cluster is scaling up;
3. there is an autoscaler (its status ConfigMap `kube-system/cluster-autoscaler-status`, an event
   of it on the pod, or the admin's NBD_AUTOSCALER=present for Karpenter and the like, which
   publish no such ConfigMap): wait for its word;
4. no autoscaler: wait while some node could take the pod once it has room (the nodes that fit
   are busy); fail when none could, whatever ran on it.

A failure names the GPU types the cluster's nodes carry (by the configured GPU label and the
well-known ones) and the autoscaler's node groups (its ConfigMap names them, but not their GPU
type: a pool with no node yet shows its type only in the name its admin gave it). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nbdcontract import REASON_UNSCHEDULABLE, REASON_WAITING_FOR_NODE

from .config import Config

__all__ = [
    "AUTOSCALER_EVENTS",
    "GPU_LABEL_KEYS",
    "NodeOffer",
    "SchedulingObserved",
    "Verdict",
    "node_groups",
    "verdict",
    "wanted",
]

TRIGGERED = "TriggeredScaleUp"
NOT_TRIGGERED = "NotTriggerScaleUp"
AUTOSCALER_EVENTS = (TRIGGERED, NOT_TRIGGERED)
# Node labels that name a node's GPU product: GKE, NVIDIA GPU Feature Discovery, EKS (managed node
# groups, Karpenter) and AKS. The configured key (NBD_GPU_LABEL_KEY) is looked at first.
GPU_LABEL_KEYS = (
    "cloud.google.com/gke-accelerator",
    "nvidia.com/gpu.product",
    "k8s.amazonaws.com/accelerator",
    "karpenter.k8s.aws/instance-gpu-name",
    "kubernetes.azure.com/accelerator",
    "accelerator",
)


@dataclass(frozen=True)
class NodeOffer:
    """A node as the verdict sees it: labels, taints, capacity and what is allocatable now."""

    name: str
    labels: dict[str, str]
    taints: tuple[dict[str, Any], ...] = ()
    capacity: dict[str, str] | None = None
    allocatable: dict[str, str] | None = None
    unschedulable: bool = False


@dataclass(frozen=True)
class SchedulingObserved:
    """What the reconciler saw about a pod the scheduler has not placed.

    `events` are the autoscaler's events on the pod as (reason, message, timestamp); `status` the
    autoscaler's status ConfigMap text (None: no such ConfigMap); `nodes` None when they could not
    be listed (then nothing is known to be impossible)."""

    events: tuple[tuple[str, str, str], ...] = ()
    status: str | None = None
    nodes: tuple[NodeOffer, ...] | None = ()


@dataclass(frozen=True)
class Verdict:
    wait: bool
    reason: str
    message: str


_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 10**-3,
}


def _quantity(value: Any) -> float:
    text = str(value).strip()
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * _UNITS[suffix]
            except ValueError:
                return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0


def _requests(pod: dict[str, Any]) -> dict[str, float]:
    """The pod's requests per resource (a limit without a request counts as the request)."""
    total: dict[str, float] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        mine = {k: _quantity(v) for k, v in (resources.get("limits") or {}).items()}
        mine.update({k: _quantity(v) for k, v in (resources.get("requests") or {}).items()})
        for k, v in mine.items():
            total[k] = total.get(k, 0.0) + v
    return total


def _gpu_keys(config: Config) -> tuple[str, ...]:
    return (config.gpu_label_key, *(k for k in GPU_LABEL_KEYS if k != config.gpu_label_key))


def wanted(config: Config, pod: dict[str, Any]) -> str:
    """What the pod waits for, in a person's words: "a node with 1 nvidia.com/gpu (nvidia-l4)"."""
    gpus = int(_requests(pod).get(config.gpu_resource, 0))
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    gpu_type = next((selector[k] for k in _gpu_keys(config) if k in selector), "")
    if gpus > 0:
        return f"a node with {gpus} {config.gpu_resource}" + (f" ({gpu_type})" if gpu_type else "")
    return "a node with room for the pod"


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        operator = t.get("operator") or "Equal"
        if not t.get("key"):
            if operator == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if operator == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _could_ever_fit(pod: dict[str, Any], node: NodeOffer, *, but: str = "") -> bool:
    """Would the pod fit on `node` if nothing else ran there (taints, node selector, capacity, the
    resource `but` left out)?"""
    spec = pod.get("spec") or {}
    tolerations = list(spec.get("tolerations") or [])
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(taint, tolerations):
            return False
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return False
    capacity = node.capacity or {}
    return all(
        amount <= _quantity(capacity.get(resource, 0)) + 1e-9
        for resource, amount in _requests(pod).items()
        if amount > 0 and resource != but
    )


_GROUP_YAML = re.compile(r"^ {2}name: (\S+)$", re.M)
_GROUP_TEXT = re.compile(r"^\s*Name:\s+(\S+)\s*$", re.M)


def node_groups(status: str | None) -> list[str]:
    """The node group names of the autoscaler's status text (the YAML of cluster-autoscaler 1.30+,
    or the older `Name:` layout)."""
    if not status:
        return []
    names = _GROUP_YAML.findall(status) or _GROUP_TEXT.findall(status)
    return list(dict.fromkeys(names))


def _offers(config: Config, observed: SchedulingObserved) -> str:
    types: dict[str, int] = {}
    for node in observed.nodes or ():
        gpu_type = next((node.labels[k] for k in _gpu_keys(config) if node.labels.get(k)), "")
        if gpu_type:
            types[gpu_type] = types.get(gpu_type, 0) + 1
        elif _quantity((node.capacity or {}).get(config.gpu_resource, 0)) > 0:
            types["an unlabelled GPU"] = types.get("an unlabelled GPU", 0) + 1
    said = (
        "the cluster's nodes offer "
        + ", ".join(f"{t} ({n} node{'s' if n > 1 else ''})" for t, n in sorted(types.items()))
        if types
        else "no node of the cluster has a GPU"
    )
    groups = node_groups(observed.status)
    if groups:
        said += f"; the autoscaler's node pools are {', '.join(groups)}"
    return said


_HINT = (
    "ask for fewer GPUs (--gpus) or another --gpu-type, add the tolerations or nodeSelector the GPU "
    "nodes need to notebook.yaml, or ask your admin for a node pool that fits"
)


def verdict(
    config: Config, pod: dict[str, Any], scheduler_message: str, observed: SchedulingObserved
) -> Verdict:
    """Wait for a node, or fail with what the cluster offers (see the module docstring)."""
    what = wanted(config, pod)
    # Event times have a resolution of a second: on a tie the scale-up counts (a timeout bounds it).
    latest = max(observed.events, key=lambda e: (e[2], e[0] == TRIGGERED), default=None)
    if latest is not None and latest[0] == NOT_TRIGGERED:
        return Verdict(
            False,
            REASON_UNSCHEDULABLE,
            f"No node can run the pod and the cluster autoscaler will not add one ({latest[1]}); "
            f"{_offers(config, observed)}. To run it, {_HINT}.",
        )
    if latest is not None and latest[0] == TRIGGERED:
        starting = [
            n.name
            for n in observed.nodes or ()
            if _could_ever_fit(pod, n, but=config.gpu_resource)
            and _quantity((n.allocatable or {}).get(config.gpu_resource, 0)) == 0
            and _requests(pod).get(config.gpu_resource, 0) > 0
        ]
        why = (
            f"the new node {starting[0]} is up and waits for its GPU device plugin"
            if starting
            else "the cluster is scaling up"
        )
        return Verdict(True, REASON_WAITING_FOR_NODE, f"Waiting for {what}: {why}.")
    if config.autoscaler != "none" and (
        config.autoscaler == "present" or observed.status is not None or latest is not None
    ):
        return Verdict(
            True,
            REASON_WAITING_FOR_NODE,
            f"Waiting for {what}: the cluster autoscaler is looking for a node pool.",
        )
    if observed.nodes is None:
        return Verdict(True, REASON_WAITING_FOR_NODE, f"Waiting for {what}: {scheduler_message}")
    fitting = [n.name for n in observed.nodes if not n.unschedulable and _could_ever_fit(pod, n)]
    if fitting:
        return Verdict(
            True,
            REASON_WAITING_FOR_NODE,
            f"Waiting for {what}: the nodes that fit ({', '.join(sorted(fitting)[:5])}) are busy.",
        )
    return Verdict(
        False,
        REASON_UNSCHEDULABLE,
        f"No node can run the pod and the cluster has no autoscaler to add one ({scheduler_message}); "
        f"{_offers(config, observed)}. To run it, {_HINT}.",
    )
