"""A cluster autoscaler for kubesim: node pools that scale from zero, as GKE's and EKS's GPU pools do.

A pool (`NodePool`) is a template node (labels, taints, a GPU count) and a maximum size. Every
`scan_interval` the autoscaler looks at the pods the scheduler marked Unschedulable, as the real
cluster-autoscaler does:

- a pod that would fit on a new node of some pool that has room makes it grow by one node: the
  pod gets a `TriggeredScaleUp` event ("pod triggered scale-up: [{POOL 0->1 (max: 3)}]"), and the
  node registers `scale_up_delay` seconds later *without* its `nvidia.com/gpu` allocatable; the
  GPUs appear `device_plugin_delay` seconds after that, when the device plugin would have started;
- a pod no pool can help gets a `NotTriggerScaleUp` event ("pod didn't trigger scale-up: 1
  Insufficient nvidia.com/gpu, 1 max node group size reached"), the per-pool reasons counted;
- a pod already waiting for a node being added gets nothing more (the real one leaves pods that
  fit on upcoming nodes alone, and counts a GPU node without allocatable GPUs as upcoming); once
  that node is complete, a pod still unschedulable a few seconds later (another pod took the node)
  is looked at again like any other.

Each scale-up adds one node for one pod. The autoscaler publishes `kube-system/
cluster-autoscaler-status` (data.status, the YAML of cluster-autoscaler 1.30 and later: node groups
with their name, min, max and target size), so a client can tell that an autoscaler is there.
Nodes are never removed. The decisions (`pool_verdict`, `not_triggered_message`) are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubesim.errors import ApiError, now_rfc3339
from kubesim.kubelet.node import NodeConfig, parse_label, parse_taint
from kubesim.kubelet.scheduler import fit
from kubesim.store import PODS, Store

__all__ = [
    "Autoscaler",
    "NodePool",
    "STATUS_CONFIGMAP",
    "not_triggered_message",
    "parse_pool",
    "pool_verdict",
]

log = logging.getLogger("kubesim.autoscaler")

CONFIGMAPS = ("", "v1", "configmaps")
# Where cluster-autoscaler publishes its status.
STATUS_CONFIGMAP = ("kube-system", "cluster-autoscaler-status")
COMPONENT = "cluster-autoscaler"
# After the node a pod waited for is complete, the scheduler has this long to place the pod there
# before the pod is looked at again.
SETTLE_SECONDS = 3.0
_POOL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")


@dataclass(frozen=True)
class NodePool:
    """One node group: what each of its nodes is, and how many it may have."""

    name: str
    gpus: int = 0
    max_nodes: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    scale_up_delay: float = 2.0
    device_plugin_delay: float = 2.0

    def node_config(self, index: int, gpus: int) -> NodeConfig:
        labels = {**self.labels, "kubesim.dev/node-pool": self.name}
        return NodeConfig(
            name=f"{self.name}-{index}", gpus=gpus, labels=labels, taints=[dict(t) for t in self.taints]
        )


_POOL_KEYS = {"name", "gpus", "maxNodes", "labels", "taints", "scaleUpDelay", "devicePluginDelay"}


def parse_pool(text: str) -> NodePool:
    """`--node-pool` JSON → a NodePool; ValueError with a one-line message otherwise.

    {"name": "l4", "gpus": 1, "maxNodes": 3, "labels": {"k": "v"} or ["k=v"],
     "taints": ["nvidia.com/gpu=present:NoSchedule"], "scaleUpDelay": 2, "devicePluginDelay": 2}
    """
    example = (
        '{"name": "l4", "gpus": 1, "maxNodes": 3, "labels": ["cloud.google.com/gke-accelerator=nvidia-l4"]}'
    )
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"--node-pool {text!r} is not JSON; give e.g. {example}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"--node-pool needs a JSON object with a name, e.g. {example}")
    unknown = sorted(set(data) - _POOL_KEYS)
    if unknown:
        raise ValueError(
            f"--node-pool: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_POOL_KEYS))}"
        )
    name = data["name"]
    if not _POOL_NAME.fullmatch(name):
        raise ValueError(f"--node-pool name {name!r} must be a short DNS label (it names the pool's nodes)")
    labels_raw = data.get("labels") or {}
    if isinstance(labels_raw, list):
        labels = dict(parse_label(str(x)) for x in labels_raw)
    elif isinstance(labels_raw, dict):
        labels = {str(k): str(v) for k, v in labels_raw.items()}
    else:
        raise ValueError("--node-pool labels must be a list of key=value or an object")
    taints = tuple(parse_taint(str(t)) for t in data.get("taints") or [])
    numbers: dict[str, float] = {}
    for key, default, lo in (
        ("gpus", 0, 0),
        ("maxNodes", 1, 1),
        ("scaleUpDelay", 2.0, 0),
        ("devicePluginDelay", 2.0, 0),
    ):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < lo:
            raise ValueError(f"--node-pool {name}: {key} must be a number ≥ {lo}, got {value!r}")
        numbers[key] = value
    return NodePool(
        name=name,
        gpus=int(numbers["gpus"]),
        max_nodes=int(numbers["maxNodes"]),
        labels=labels,
        taints=taints,
        scale_up_delay=float(numbers["scaleUpDelay"]),
        device_plugin_delay=float(numbers["devicePluginDelay"]),
    )


_FIT_REASON = re.compile(r"^0/1 nodes are available: (.*?)\. preemption:")


def pool_verdict(pod: dict[str, Any], pool: NodePool, size: int) -> str | None:
    """None when a new node of `pool` (now of `size` nodes) would take `pod`, else why not ("1 ...")."""
    template = pool.node_config(size + 1, pool.gpus)
    result = fit(pod, template.all_labels(), template.allocatable(), [], template.taints)
    if not result.ok:
        found = _FIT_REASON.match(result.message)
        return found.group(1) if found else "1 node(s) didn't fit"
    if size >= pool.max_nodes:
        return "1 max node group size reached"
    return None


def not_triggered_message(reasons: list[str]) -> str:
    """The NotTriggerScaleUp message: each pool's reason, the same ones counted, sorted."""
    counts: dict[str, int] = {}
    for reason in reasons:
        text = reason.split(" ", 1)[1] if reason.startswith("1 ") else reason
        counts[text] = counts.get(text, 0) + 1
    return "pod didn't trigger scale-up: " + ", ".join(sorted(f"{n} {r}" for r, n in counts.items()))


def _unschedulable(pod: dict[str, Any]) -> bool:
    if (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


AddNode = Callable[[NodeConfig], Awaitable[Any]]


class Autoscaler:
    """Grows `pools` for unschedulable pods; `add_node(NodeConfig)` starts a node (a kubelet) and
    returns it (an object with `set_gpus(count)`)."""

    def __init__(
        self, store: Store, pools: list[NodePool], add_node: AddNode, *, scan_interval: float = 0.5
    ) -> None:
        self.store = store
        self.pools = pools
        self.add_node = add_node
        self.scan_interval = scan_interval
        self.sizes: dict[str, int] = {p.name: 0 for p in pools}
        self.ready: dict[str, int] = {p.name: 0 for p in pools}
        # Pod uid -> pool whose new node it waits for; pod uid -> when that node was complete;
        # pod uid -> the refusal it was told.
        self.waiting: dict[str, str] = {}
        self.completed: dict[str, float] = {}
        self.refused: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._growing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._publish()
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        for task in [self._task, *self._growing]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._growing]:
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task

    async def _loop(self) -> None:
        while True:
            try:
                self.scan()
            except Exception:
                log.exception("autoscaler scan failed")
            await asyncio.sleep(self.scan_interval)

    def scan(self) -> None:
        pods, _ = self.store.list(PODS)
        live = {p["metadata"]["uid"] for p in pods}
        now = asyncio.get_running_loop().time()
        for uid in list(self.waiting):
            done = self.completed.get(uid)
            if uid not in live or (done is not None and now - done > SETTLE_SECONDS):
                self.waiting.pop(uid, None)
                self.completed.pop(uid, None)
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if not _unschedulable(pod):
                self.waiting.pop(uid, None)
                continue
            if uid in self.waiting:
                continue  # a node is being added for it
            reasons = []
            chosen = None
            for pool in self.pools:
                why = pool_verdict(pod, pool, self.sizes[pool.name])
                if why is None:
                    chosen = pool
                    break
                reasons.append(why)
            if chosen is None:
                message = not_triggered_message(reasons) if reasons else "pod didn't trigger scale-up:"
                if self.refused.get(uid) != message:
                    self.refused[uid] = message
                    self._event(pod, "NotTriggerScaleUp", message)
                continue
            self.refused.pop(uid, None)
            before = self.sizes[chosen.name]
            self.sizes[chosen.name] = before + 1
            self.waiting[uid] = chosen.name
            self._event(
                pod,
                "TriggeredScaleUp",
                f"pod triggered scale-up: [{{{chosen.name} {before}->{before + 1} (max: {chosen.max_nodes})}}]",
            )
            self._publish()
            task = asyncio.ensure_future(self._grow(chosen, before + 1, uid))
            self._growing.add(task)
            task.add_done_callback(self._growing.discard)

    async def _grow(self, pool: NodePool, index: int, uid: str) -> None:
        await asyncio.sleep(pool.scale_up_delay)
        # The node registers before its device plugin runs: no GPU allocatable yet.
        node = await self.add_node(pool.node_config(index, 0))
        self.ready[pool.name] += 1
        self._publish()
        if pool.gpus:
            await asyncio.sleep(pool.device_plugin_delay)
            node.set_gpus(pool.gpus)
        self.completed[uid] = asyncio.get_running_loop().time()

    def _event(self, pod: dict[str, Any], reason: str, message: str) -> None:
        ns = pod["metadata"].get("namespace", "default")
        with contextlib.suppress(ApiError):
            self.store.add_event(ns, pod, reason, message, type="Normal", component=COMPONENT)

    def status_text(self) -> str:
        """data.status of the status ConfigMap (the YAML layout of cluster-autoscaler ≥ 1.30)."""
        now = now_rfc3339()
        lines = ["autoscalerStatus: Running", "nodeGroups:"]
        for pool in self.pools:
            target, ready = self.sizes[pool.name], self.ready[pool.name]
            lines += [
                "- health:",
                f"    cloudProviderTarget: {target}",
                f"    maxSize: {pool.max_nodes}",
                "    minSize: 0",
                "    nodeCounts:",
                "      registered:",
                f"        ready: {ready}",
                f"        total: {ready}",
                "    status: Healthy",
                f"  name: {pool.name}",
                "  scaleUp:",
                f"    status: {'InProgress' if target > ready else 'NoActivity'}",
            ]
        lines.append(f"time: {now}")
        return "\n".join(lines) + "\n"

    def _publish(self) -> None:
        ns, name = STATUS_CONFIGMAP
        text = self.status_text()
        try:
            if self.store.get(CONFIGMAPS, ns, name) is None:
                self.store.create(
                    CONFIGMAPS,
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": name},
                        "data": {"status": text},
                    },
                    ns,
                )
            else:

                def mutate(o: dict[str, Any]) -> None:
                    o["data"] = {"status": text}

                self.store.update(CONFIGMAPS, ns, name, mutate)
        except ApiError:
            log.exception("publishing %s/%s failed", ns, name)
