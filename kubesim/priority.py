"""The Priority admission plugin: a pod's `priorityClassName` must name a PriorityClass.

Upstream resolves the name at pod creation and writes the class's value to `spec.priority` (and its
`preemptionPolicy`); a name that matches no class refuses the pod with "no PriorityClass with name X
was found"; a pod without a name gets the class marked `globalDefault`, or priority 0. The two system
classes exist on every cluster (the API server creates them at start), so they always resolve.

Pure: the caller passes the PriorityClass objects in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["SYSTEM_CLASSES", "Refusal", "resolve"]

SYSTEM_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


@dataclass(frozen=True)
class Refusal:
    message: str


def resolve(pod: dict[str, Any], classes: Iterable[dict[str, Any]]) -> Refusal | None:
    """Fill `spec.priority`, `spec.preemptionPolicy` (and a defaulted `priorityClassName`) in place.

    Returns the refusal when the pod names no existing class, or when it sets an integer
    priority or a preemption policy that differs from the one its class gives, as upstream does.
    """
    spec = pod.setdefault("spec", {})
    by_name = {(c.get("metadata") or {}).get("name", ""): c for c in classes}
    name = spec.get("priorityClassName") or ""
    value = 0
    policy = "PreemptLowerPriority"
    if not name:
        default = next((c for c in by_name.values() if c.get("globalDefault")), None)
        if default is not None:
            spec["priorityClassName"] = default["metadata"]["name"]
            value = int(default.get("value", 0))
            policy = default.get("preemptionPolicy") or policy
    elif name in SYSTEM_CLASSES:
        value = SYSTEM_CLASSES[name]
    elif name in by_name:
        value = int(by_name[name].get("value", 0))
        policy = by_name[name].get("preemptionPolicy") or policy
    else:
        return Refusal(f"no PriorityClass with name {name} was found")
    given = spec.get("priority")
    if given is not None and int(given) != value:
        return Refusal(
            f"the integer value of priority ({int(given)}) must not be provided in pod spec; "
            f"priority admission controller computed {value} from the given PriorityClass name"
        )
    given_policy = spec.get("preemptionPolicy")
    if given_policy is not None and given_policy != policy:
        return Refusal(
            f"the string value of PreemptionPolicy ({given_policy}) must not be provided in pod spec; "
            f"priority admission controller computed {policy} from the given PriorityClass name"
        )
    spec["priority"] = value
    spec["preemptionPolicy"] = policy
    return None
