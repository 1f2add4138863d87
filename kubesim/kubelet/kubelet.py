"""The kubelet of kubesim's one node: node registration, scheduling, pod workers, faults.

It lives in the API server's process and event loop, and talks to the `Store` directly: it
subscribes to pods (callbacks only mark work to do; the work runs in tasks), binds pods that fit
(else PodScheduled=False/Unschedulable and a FailedScheduling event, retried whenever capacity
may have freed), runs one `PodWorker` per bound pod, and writes status and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubesim.errors import ApiError, now_rfc3339
from kubesim.images import ImageStore, normalize
from kubesim.kubelet import namespaces
from kubesim.kubelet.dns import DnsServer
from kubesim.kubelet.network import NetworkError, PodNetwork
from kubesim.kubelet.node import NodeConfig, node_object, parse_label, parse_taint
from kubesim.kubelet.pod import PodWorker, _Gone
from kubesim.kubelet.scheduler import claims_problem, fit, merge_messages, pod_claims, volume_binding_message
from kubesim.kubelet.spec import Lookup
from kubesim.store import NODES, PODS, Store, WatchEvent

__all__ = ["Kubelet", "KubeletConfig"]

log = logging.getLogger("kubesim.kubelet")

SECRETS = ("", "v1", "secrets")
CONFIGMAPS = ("", "v1", "configmaps")
PVCS = ("", "v1", "persistentvolumeclaims")
PVS = ("", "v1", "persistentvolumes")


@dataclass
class KubeletConfig:
    """Node and runtime settings (all have test-friendly defaults).

    Restart and image-pull backoffs are `backoff_initial * 2**n` capped at `backoff_max`
    (the real kubelet: 10 s doubling to 300 s).
    """

    state_dir: Path
    node: NodeConfig = field(default_factory=NodeConfig)
    host_ports: list[int] = field(default_factory=list)
    api_port: int | None = None
    backoff_initial: float = 1.0
    backoff_max: float = 10.0
    # Extra node labels (`k=v` strings or a dict), merged into `node.labels`, e.g.
    # {"nvidia.com/gpu.product": "NVIDIA-L4"}; the form `--node-label k=v` maps to.
    node_labels: dict[str, str] | list[str] = field(default_factory=dict)
    # Extra node taints in kubectl's `key[=value]:Effect` form, appended to `node.taints`.
    node_taints: list[str] = field(default_factory=list)
    # Where the node's images are (default STATE/images). Nodes that share one folder see what any
    # of them built or was given, as nodes pulling from one registry do.
    image_dir: Path | None = None

    def __post_init__(self) -> None:
        labels = self.node_labels
        pairs = dict(parse_label(x) for x in labels) if isinstance(labels, list) else dict(labels)
        self.node.labels.update(pairs)
        self.node.taints.extend(parse_taint(t) for t in self.node_taints)

    def backoff_delay(self, attempt: int) -> float:
        return float(min(self.backoff_initial * (2 ** min(attempt, 20)), self.backoff_max))


def _machine_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


class Kubelet:
    """The node agent. Construct with a `KubeletConfig`, or with the keyword arguments
    `kubesim.cluster` passes (state_dir, node_name, gpus, node_labels, host_ports, api_url, ...).
    """

    def __init__(
        self,
        store: Store,
        config: KubeletConfig | None = None,
        faults: Any = None,
        *,
        state_dir: Path | str | None = None,
        node_name: str = "kubesim-node",
        gpus: int = 0,
        node_labels: dict[str, str] | list[str] | None = None,
        node_taints: list[str] | None = None,
        host_ports: list[int] | None = None,
        api_url: str | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 10.0,
    ) -> None:
        if config is None:
            if state_dir is None:
                raise ValueError("Kubelet needs a state_dir (or a KubeletConfig)")
            labels = (
                dict(parse_label(x) for x in node_labels)
                if isinstance(node_labels, list)
                else dict(node_labels or {})
            )
            api_port = None
            if api_url:
                from urllib.parse import urlsplit

                parts = urlsplit(api_url)
                api_port = parts.port or (443 if parts.scheme == "https" else 80)
            config = KubeletConfig(
                state_dir=Path(state_dir),
                node=NodeConfig(
                    name=node_name,
                    gpus=gpus,
                    labels=labels,
                    taints=[parse_taint(t) for t in node_taints or []],
                ),
                host_ports=list(host_ports or []),
                api_port=api_port,
                backoff_initial=backoff_initial,
                backoff_max=backoff_max,
            )
        self.store = store
        self.config: KubeletConfig = config
        self.faults = faults
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.images = ImageStore(Path(config.image_dir) if config.image_dir else self.state_dir / "images")
        # nbd's build images: the BuildKit/kaniko stand-in and the utility image.
        from kubesim.images import buildkit, utility

        buildkit.register(self.images)
        utility.register(self.images)
        self.host_ports: set[int] = set(config.host_ports)
        if config.api_port:
            self.host_ports.add(config.api_port)
        self.python_bin_dir = os.path.dirname(sys.executable)
        self.workers: dict[str, PodWorker] = {}  # by uid
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_node: Callable[[], None] | None = None
        self._unsubscribe_claims: Callable[[], None] | None = None
        self._schedule_needed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._stopped = False
        # The pod network and cluster DNS (root only; None: pods keep only `lo`).
        self.network: PodNetwork | None = None
        self.dns: DnsServer | None = None
        self.network_problem = ""
        # Several nodes: the first kubelet (the leader) schedules for all, owns the pod network and
        # DNS, and records which node each ReadWriteOnce volume is attached to.
        self.leader: Kubelet = self
        self.peers: list[Kubelet] = [self]
        self.attachments: dict[str, tuple[str, set[str]]] = {}  # PV name -> (node, pod uids)
        if faults is not None:
            faults.on_kill_pod = self.kill_pod
            faults.on_recreate_pod = self.recreate_pod

    # ------------------------------------------------------------------ start / stop

    @property
    def node_name(self) -> str:
        return self.config.node.name

    async def start(self) -> None:
        """Register the node, adopt existing pods, and start scheduling."""
        node = self.config.node
        if node.memory_bytes == NodeConfig().memory_bytes:
            node.memory_bytes = _machine_memory()
        if node.cpu == NodeConfig().cpu:
            node.cpu = os.cpu_count() or 2
        # The first namespace check runs `unshare` once; keep it off the event loop.
        isolated, why = await asyncio.to_thread(namespaces.namespaces_available)
        if self.leader is not self:
            self.network, self.dns = self.leader.network, self.leader.dns
            self.network_problem = self.leader.network_problem
        elif isolated:
            await self._start_network()
        else:
            self.network_problem = why
        self._register_node()
        if self.leader is not self:
            self._unsubscribe = self.store.subscribe(PODS, self._on_pod_event)
            for pod in self.store.list(PODS)[0]:
                self._consider(pod)
            return
        self._unsubscribe = self.store.subscribe(PODS, self._on_pod_event)
        # A node change (a taint removed, a label added, capacity grown) can make a pending pod fit.
        self._unsubscribe_node = self.store.subscribe(NODES, lambda _ev: self._schedule_needed.set())
        # A claim bound (or created) can make a pending pod schedulable.
        self._unsubscribe_claims = self.store.subscribe(PVCS, lambda _ev: self._schedule_needed.set())
        self._scheduler = asyncio.ensure_future(self._schedule_loop())
        items, _ = self.store.list(PODS)
        for pod in items:
            self._consider(pod)
        self._schedule_needed.set()

    async def _start_network(self) -> None:
        network = PodNetwork()
        try:
            await network.start()
        except NetworkError as e:
            self.network_problem = f"the pod network could not be made: {e}"
            log.error("%s", self.network_problem)
            return
        dns = DnsServer(self.store, network.gateway, 53)
        try:
            await dns.start()
        except Exception as e:
            await dns.stop()
            await network.stop()
            self.network_problem = f"cluster DNS could not listen on {network.gateway}:53: {e}"
            log.error("%s", self.network_problem)
            return
        self.network, self.dns = network, dns

    @property
    def dns_address(self) -> str | None:
        """The cluster DNS server's address (the bridge's), None without a pod network."""
        return self.dns.address if self.dns is not None else None

    def _register_node(self) -> None:
        obj = node_object(self.config.node, now_rfc3339())
        existing = self.store.get(NODES, None, self.node_name)
        if existing is None:
            self.store.create(NODES, obj)
        else:

            def mutate(o: dict[str, Any]) -> None:
                o["metadata"].setdefault("labels", {}).update(obj["metadata"]["labels"])
                o["status"] = obj["status"]

            self.store.update(NODES, None, self.node_name, mutate)

    async def stop(self) -> None:
        """Kill every pod's processes and namespaces (kubesim is shutting down)."""
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._unsubscribe_node is not None:
            self._unsubscribe_node()
        if self._unsubscribe_claims is not None:
            self._unsubscribe_claims()
        if self._scheduler is not None:
            self._scheduler.cancel()
        await asyncio.gather(*(w.kill() for w in list(self.workers.values())), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        if self.leader is not self:
            self.network = self.dns = None  # the leader's, stopped with it
        if self.dns is not None:
            await self.dns.stop()
            self.dns = None
        if self.network is not None:
            await self.network.stop()
            self.network = None

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ configuration at run time

    def set_gpus(self, count: int) -> None:
        """Change the node's `nvidia.com/gpu` capacity; pending pods are reconsidered."""
        self.config.node.gpus = count
        self._register_node()
        self._schedule_needed.set()

    def add_host_port(self, port: int) -> None:
        """Relay 127.0.0.1:`port` inside every pod (now and later) to the host's 127.0.0.1:`port`."""
        self.host_ports.add(port)
        for w in list(self.workers.values()):
            if w.sandbox_ready:
                self._spawn(w.add_relay(port))

    def normalize_image(self, ref: str) -> str:
        try:
            return normalize(ref)
        except ValueError:
            return ref

    # ------------------------------------------------------------------ store access

    def lookup_fn(self, namespace: str) -> Lookup:
        def lookup(kind: str, name: str) -> dict[str, Any] | None:
            key = {"Secret": SECRETS, "PersistentVolumeClaim": PVCS, "PersistentVolume": PVS}.get(
                kind, CONFIGMAPS
            )
            try:
                return self.store.get(key, None if kind == "PersistentVolume" else namespace, name)
            except ApiError:
                return None

        return lookup

    def write_status(self, worker: PodWorker, compute: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        def mutate(pod: dict[str, Any]) -> None:
            if pod["metadata"].get("uid") != worker.uid:
                raise _Gone()
            pod["status"] = compute(pod)

        try:
            self.store.update_status(PODS, worker.namespace, worker.name, mutate)
        except ApiError as e:
            if e.code == 404:
                raise _Gone() from e
            raise

    def event(
        self,
        namespace: str,
        ref: dict[str, Any],
        reason: str,
        message: str,
        type: str = "Normal",
        component: str = "kubelet",
    ) -> None:
        with contextlib.suppress(ApiError):
            self.store.add_event(namespace, ref, reason, message, type=type, component=component)

    def worker(self, namespace: str, name: str) -> PodWorker | None:
        """The pod's worker on this node or, asked of the leader, on any node (streams, faults)."""
        for k in self.leader.peers if self.leader is self else [self]:
            for w in k.workers.values():
                if w.namespace == namespace and w.name == name and not w.removed:
                    return w
        return None

    # ------------------------------------------------------------------ pod events

    def _on_pod_event(self, ev: WatchEvent) -> None:
        pod = ev.object
        uid = pod["metadata"].get("uid", "")
        if ev.type == "DELETED":
            w = self.workers.pop(uid, None)
            if w is not None:
                self._spawn(self._forget(w))
            self._schedule_needed.set()
            return
        self._consider(pod)

    def _consider(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"].get("uid", "")
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node:
            if not pod["metadata"].get("deletionTimestamp"):
                self._schedule_needed.set()
            return
        if node != self.node_name:
            if self.leader is self and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                self._schedule_needed.set()  # room freed on another node
            return
        w = self.workers.get(uid)
        if w is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return  # a terminal pod kubesim did not run (e.g. before a restart)
            w = PodWorker(self, pod)
            self.workers[uid] = w
            if pod["metadata"].get("deletionTimestamp"):
                w.deleting = True
                self._spawn(self._finish_delete(w, 0))
                return
            w.start()
            return
        w.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not w.deleting:
            # Invariant: one deletion per worker, however many MODIFIED events arrive meanwhile.
            w.deleting = True
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            self._spawn(self._finish_delete(w, grace))
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self._schedule_needed.set()

    async def _finish_delete(self, w: PodWorker, grace: float) -> None:
        await w.terminate(grace)
        with contextlib.suppress(ApiError):
            current = self.store.get(PODS, w.namespace, w.name)
            if (
                current is not None
                and current["metadata"].get("uid") == w.uid
                and (current.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure")
                and (current.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ):
                # As the kubelet does, a deleted pod whose containers will not run again ends in a
                # terminal phase before it goes: the Job controller sees it fail (and why: its
                # conditions, e.g. DisruptionTarget, stay).
                def terminal(pod: dict[str, Any]) -> None:
                    if pod["metadata"].get("uid") == w.uid:
                        pod.setdefault("status", {})["phase"] = "Failed"

                self.store.update_status(PODS, w.namespace, w.name, terminal)
            if current is not None and current["metadata"].get("uid") == w.uid:
                self.store.delete(
                    PODS, w.namespace, w.name, grace_period_seconds=0, preconditions={"uid": w.uid}
                )

    async def _forget(self, w: PodWorker) -> None:
        await w.kill()
        await asyncio.to_thread(shutil.rmtree, w.dir, True)

    # ------------------------------------------------------------------ scheduling

    async def _schedule_loop(self) -> None:
        while True:
            await self._schedule_needed.wait()
            self._schedule_needed.clear()
            try:
                self._schedule_pending()
            except Exception:
                log.exception("scheduling failed")
            await asyncio.sleep(0.05)

    def attach_conflict(self, pod: dict[str, Any], node: str) -> str | None:
        """The attach-detach controller's verdict: None once every ReadWriteOnce volume of `pod` is
        attached to `node` (it is, from now on), else the Multi-Attach error of the first that is
        attached to another node."""
        leader = self.leader
        ns = pod["metadata"].get("namespace", "default")
        uid = pod["metadata"]["uid"]
        wanted: list[str] = []
        for claim_name in pod_claims(pod):
            claim = self.store.get(PVCS, ns, claim_name)
            if claim is None:
                continue
            modes = set(
                (claim.get("status") or {}).get("accessModes")
                or (claim.get("spec") or {}).get("accessModes")
                or []
            )
            pv = (claim.get("spec") or {}).get("volumeName")
            if not pv or modes & {"ReadWriteMany", "ReadOnlyMany"}:
                continue
            held = leader.attachments.get(pv)
            if held is not None and held[0] != node and held[1]:
                users = []
                for other in held[1]:
                    for k in leader.peers:
                        w = k.workers.get(other)
                        if w is not None and w.namespace == ns:
                            users.append(w.name)
                if users:
                    return f'Multi-Attach error for volume "{pv}" Volume is already used by pod(s) {", ".join(sorted(users))}'
                return (
                    f'Multi-Attach error for volume "{pv}" Volume is already exclusively attached to one node '
                    "and can't be attached to another"
                )
            wanted.append(pv)
        for pv in wanted:
            held = leader.attachments.get(pv)
            if held is None or not held[1]:
                leader.attachments[pv] = (node, {uid})
            else:
                held[1].add(uid)
        return None

    def detach_volumes(self, uid: str) -> None:
        """A pod is gone from its node: a volume no pod of that node uses any more is detached."""
        for pv, (_node, users) in list(self.leader.attachments.items()):
            users.discard(uid)
            if not users:
                del self.leader.attachments[pv]

    def _schedule_pending(self) -> None:
        pods, _ = self.store.list(PODS)
        pending = [
            p
            for p in pods
            if not (p.get("spec") or {}).get("nodeName")
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"
        ]
        pending.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
        nodes = []
        for k in self.peers:
            node = self.store.get(NODES, None, k.node_name)
            if node is None:
                k._register_node()
                node = self.store.get(NODES, None, k.node_name)
            assert node is not None
            nodes.append(
                (
                    k.node_name,
                    node["metadata"].get("labels") or {},
                    (node.get("status") or {}).get("allocatable") or k.config.node.allocatable(),
                    (node.get("spec") or {}).get("taints") or [],
                )
            )
        for pod in pending:
            ns, name = pod["metadata"].get("namespace", "default"), pod["metadata"]["name"]
            # VolumeBinding's PreFilter first: a missing, deleted or unbound claim fits no node.
            problem = claims_problem(pod, functools.partial(self.store.get, PVCS, ns))
            if problem is not None:
                self._unschedulable(pod, volume_binding_message(problem))
                continue
            fits: list[tuple[int, int, str]] = []
            messages: list[str] = []
            for node_name, labels, allocatable, taints in nodes:
                bound = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node_name]
                result = fit(pod, labels, allocatable, bound, taints)
                if result.ok:
                    live = sum(
                        1
                        for p in bound
                        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                    )
                    fits.append((live, len(fits), node_name))
                else:
                    messages.append(result.message)
            if fits:
                # Spread, as the default scoring does for equal nodes: the node with fewest live pods.
                self._bind(pod, min(fits)[2])
                refreshed = self.store.get(PODS, ns, name)
                if refreshed is not None:
                    pods = [
                        refreshed if p["metadata"]["uid"] == refreshed["metadata"]["uid"] else p for p in pods
                    ]
            else:
                self._unschedulable(pod, merge_messages(messages))

    def _bind(self, pod: dict[str, Any], node_name: str) -> None:
        ns, name, uid = (
            pod["metadata"].get("namespace", "default"),
            pod["metadata"]["name"],
            pod["metadata"]["uid"],
        )
        now = now_rfc3339()

        def mutate(o: dict[str, Any]) -> None:
            if o["metadata"]["uid"] != uid:
                raise _Gone()
            o.setdefault("spec", {})["nodeName"] = node_name
            st = o.setdefault("status", {})
            st["phase"] = "Pending"
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append(
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            )
            st["conditions"] = conds
            st.setdefault("qosClass", "BestEffort")

        try:
            self.store.update(PODS, ns, name, mutate)
        except (_Gone, ApiError):
            return
        self.event(
            ns,
            {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
            "Scheduled",
            f"Successfully assigned {ns}/{name} to {node_name}",
            component="default-scheduler",
        )

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        ns, name, uid = (
            pod["metadata"].get("namespace", "default"),
            pod["metadata"]["name"],
            pod["metadata"]["uid"],
        )
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("message") == message:
                return  # already reported; retried silently until something changes

        def mutate(o: dict[str, Any]) -> None:
            if o["metadata"]["uid"] != uid:
                raise _Gone()
            st = o.setdefault("status", {})
            st["phase"] = "Pending"
            conds = [c for c in st.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": now_rfc3339(),
                }
            )
            st["conditions"] = conds

        try:
            self.store.update_status(PODS, ns, name, mutate)
        except (_Gone, ApiError):
            return
        self.event(
            ns,
            {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
            "FailedScheduling",
            message,
            "Warning",
            component="default-scheduler",
        )

    # ------------------------------------------------------------------ faults

    async def kill_pod(self, namespace: str, name: str) -> None:
        """Fault: SIGKILL the pod's running containers; the restart policy decides what follows."""
        w = self.worker(namespace, name)
        if w is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found on node {self.node_name}')
        w.kill_main_processes()

    async def recreate_pod(self, namespace: str, name: str) -> None:
        """Fault: delete the pod at once and create it again (same spec, new uid), as a controller would."""
        pod = self.store.read(PODS, namespace, name)
        md = pod["metadata"]
        fresh = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                k: md[k]
                for k in ("name", "namespace", "labels", "annotations", "ownerReferences")
                if md.get(k) is not None
            },
            "spec": {k: v for k, v in (pod.get("spec") or {}).items() if k != "nodeName"},
        }
        self.store.delete(PODS, namespace, name, grace_period_seconds=0)
        self.store.create(PODS, fresh, namespace)
