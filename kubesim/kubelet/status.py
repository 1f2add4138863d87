"""Pod status as the kubelet reports it, computed from the runtime's view of each container.

`ContainerView` is the kubelet's record of one container (current state, last termination,
restarts, readiness); `pod_phase` and `pod_status` turn a pod's views into `status`
(phase, conditions, containerStatuses, initContainerStatuses) with the real kubelet's rules:

* Pending until every init container has succeeded and every container has started once;
* Running while a container runs or will be restarted;
* Succeeded when all containers terminated with 0 and none will restart;
* Failed when all terminated, one failed, and the restart policy does not restart it (an init
  container failing under restartPolicy Never fails the pod).

Pure: no I/O, no clock (times are passed in as RFC 3339 strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ContainerView", "Terminated", "pod_phase", "pod_status", "will_restart"]


@dataclass
class Terminated:
    exit_code: int
    reason: str  # Completed | Error | OOMKilled | ContainerCannotRun
    started_at: str
    finished_at: str
    message: str = ""
    signal: int | None = None
    container_id: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.message:
            out["message"] = self.message
        if self.signal is not None:
            out["signal"] = self.signal
        return out


@dataclass
class ContainerView:
    """What the kubelet knows about one container.

    Invariant: exactly one of (waiting_reason set, running_since set, terminated set) describes
    the current state; `waiting_reason` wins when several are set during transitions.
    """

    name: str
    image: str
    image_id: str = ""
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str = ""
    running_since: str | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    container_id: str = ""
    # Set once the container has run at least once (used for phase: started before).
    ever_started: bool = False

    def state_json(self) -> dict[str, Any]:
        if self.waiting_reason is not None:
            w: dict[str, Any] = {"reason": self.waiting_reason}
            if self.waiting_message:
                w["message"] = self.waiting_message
            return {"waiting": w}
        if self.running_since is not None:
            return {"running": {"startedAt": self.running_since}}
        if self.terminated is not None:
            return {"terminated": self.terminated.to_json()}
        return {"waiting": {"reason": "ContainerCreating"}}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": self.state_json(),
            "lastState": {"terminated": self.last_terminated.to_json()} if self.last_terminated else {},
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.running_since is not None and self.waiting_reason is None,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out

    @property
    def is_running(self) -> bool:
        return self.waiting_reason is None and self.running_since is not None

    @property
    def is_terminated(self) -> bool:
        return self.waiting_reason is None and self.running_since is None and self.terminated is not None


def will_restart(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that exited with `exit_code` is restarted under `restart_policy`."""
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def pod_phase(
    restart_policy: str, init: list[ContainerView], main: list[ContainerView], init_done: bool
) -> str:
    """The pod's phase from its containers' views (see module docstring)."""
    for c in init:
        if c.is_terminated and c.terminated and c.terminated.exit_code != 0 and restart_policy == "Never":
            return "Failed"
    if not init_done:
        return "Pending"
    if any(c.waiting_reason is not None and not c.ever_started for c in main):
        return "Pending"
    if any(c.is_running for c in main):
        return "Running"
    # Every container is terminated or waiting to be restarted.
    pending_restart = any(c.waiting_reason is not None for c in main)
    if pending_restart:
        return "Running"
    codes = [c.terminated.exit_code for c in main if c.terminated is not None]
    if any(will_restart(restart_policy, code) for code in codes):
        return "Running"
    if codes and all(code == 0 for code in codes):
        return "Succeeded"
    return "Failed"


def _condition(
    ctype: str, ok: bool, now: str, previous: dict[str, dict[str, Any]], reason: str = "", message: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    since = (
        prev["lastTransitionTime"]
        if prev and prev.get("status") == status and prev.get("lastTransitionTime")
        else now
    )
    c: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if reason and not ok:
        c["reason"] = reason
    if message and not ok:
        c["message"] = message
    return c


@dataclass
class PodFacts:
    """Pod-level facts besides the containers' views."""

    start_time: str
    host_ip: str = "127.0.0.1"
    pod_ip: str = "127.0.0.1"
    sandbox_ready: bool = False
    init_done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def pod_status(
    pod: dict[str, Any], init: list[ContainerView], main: list[ContainerView], facts: PodFacts, now: str
) -> dict[str, Any]:
    """The full `status` of a bound pod (PodScheduled is carried over from the current status)."""
    spec = pod.get("spec") or {}
    restart_policy = spec.get("restartPolicy") or "Always"
    old = pod.get("status") or {}
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    phase = pod_phase(restart_policy, init, main, facts.init_done)
    terminal = phase in ("Succeeded", "Failed")
    containers_ready = bool(main) and all(c.ready for c in main) and not terminal
    not_ready = [c.name for c in main if not c.ready]
    cr_msg = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
    init_msg = ""
    if not facts.init_done:
        pending = [
            c.name for c in init if not (c.is_terminated and c.terminated and c.terminated.exit_code == 0)
        ]
        init_msg = f"containers with incomplete status: [{' '.join(pending)}]"
    conditions = [
        _condition("PodReadyToStartContainers", facts.sandbox_ready, now, previous),
        _condition("Initialized", facts.init_done, now, previous, "ContainersNotInitialized", init_msg),
        _condition(
            "Ready",
            containers_ready,
            now,
            previous,
            "PodCompleted" if terminal else "ContainersNotReady",
            "" if terminal else cr_msg,
        ),
        _condition(
            "ContainersReady",
            containers_ready,
            now,
            previous,
            "PodCompleted" if terminal else "ContainersNotReady",
            "" if terminal else cr_msg,
        ),
        _condition("PodScheduled", True, now, previous),
    ]
    # Conditions others own (DisruptionTarget of an eviction or preemption, readiness gates) stay,
    # as the kubelet keeps every condition type it does not manage.
    owned = {c["type"] for c in conditions}
    conditions += [c for c in old.get("conditions") or [] if c.get("type") not in owned]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": facts.host_ip,
        "hostIPs": [{"ip": facts.host_ip}],
        "podIP": facts.pod_ip,
        "podIPs": [{"ip": facts.pod_ip}],
        "startTime": facts.start_time,
        "qosClass": old.get("qosClass") or _qos(spec),
        "containerStatuses": [c.to_json() for c in main],
    }
    if init:
        status["initContainerStatuses"] = [c.to_json() for c in init]
    status.update(facts.extra)
    return status


def _qos(spec: dict[str, Any]) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits = res.get("limits") or {}
        requests = res.get("requests") or {}
        if limits or requests:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in limits or (r in requests and requests[r] != limits[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
