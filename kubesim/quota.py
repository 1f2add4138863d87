"""ResourceQuota admission of pods, as the API server's quota plugin does it.

A pod created in a namespace with ResourceQuotas is admitted only if, for every quota, the usage of
the namespace's live pods plus the new pod stays within `spec.hard`. The answer to a pod that does
not fit is the real 403 (`exceeded quota: NAME, requested: …, used: …, limited: …`, naming only the
resources that overflow), and a quota on cpu or memory refuses a pod that does not say how much it
needs (`failed quota: NAME: must specify …`). Pods of Jobs go through the same path, so a Job whose
pods do not fit shows `FailedCreate` events, as on a real cluster.

Tracked: `pods` (and `count/pods`), `cpu`, `memory`, `ephemeral-storage` (which mean their
`requests.` form), `requests.X` and `limits.X` for any resource, extended ones such as
`requests.nvidia.com/gpu` included. Terminal pods (Succeeded, Failed) use nothing. After each
admission and each pod deletion the quota's `status.hard` and `status.used` are written, as the
quota controller does, so `kubectl describe quota` shows the usage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubesim.quantity import parse_quantity

__all__ = ["pod_usage", "check", "usage_of", "format_quantity", "status"]

# Resources whose quota makes every container state its amount (the "must specify" rule).
_MUST_SPECIFY = {"requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}
_ALIASES = {
    "cpu": "requests.cpu",
    "memory": "requests.memory",
    "ephemeral-storage": "requests.ephemeral-storage",
    "count/pods": "pods",
}


def _canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def _containers_total(spec: dict[str, Any], kind: str, resource: str) -> float:
    """A pod's effective amount: the larger of the containers' sum and the largest init container."""

    def amount(c: dict[str, Any]) -> float:
        value = ((c.get("resources") or {}).get(kind) or {}).get(resource)
        return parse_quantity(value) if value is not None else 0.0

    regular = sum(amount(c) for c in spec.get("containers") or [])
    init = max((amount(c) for c in spec.get("initContainers") or []), default=0.0)
    return max(regular, init)


def pod_usage(pod: dict[str, Any], names: Iterable[str]) -> dict[str, float]:
    """What `pod` uses of each quota resource in `names` (canonical names)."""
    spec = pod.get("spec") or {}
    out: dict[str, float] = {}
    for name in names:
        if name == "pods":
            out[name] = 1.0
        elif name.startswith(("requests.", "limits.")):
            kind, _, resource = name.partition(".")
            out[name] = _containers_total(spec, kind, resource)
    return out


def _live(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def usage_of(pods: Iterable[dict[str, Any]], names: Iterable[str]) -> dict[str, float]:
    names = list(names)
    total = {name: 0.0 for name in names}
    for pod in pods:
        if _live(pod):
            for name, value in pod_usage(pod, names).items():
                total[name] += value
    return total


def format_quantity(name: str, value: float) -> str:
    """A quantity as Kubernetes prints it: `2`, `500m`, `1Gi`."""
    if value == int(value):
        number = int(value)
        if name.endswith(("memory", "storage")) and number:
            for suffix, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
                if number % size == 0:
                    return f"{number // size}{suffix}"
        return str(number)
    return f"{round(value * 1000)}m"


def _pretty(name_values: dict[str, float]) -> str:
    return ",".join(f"{k}={format_quantity(k, v)}" for k, v in sorted(name_values.items()))


def check(pod: dict[str, Any], quotas: list[dict[str, Any]], pods: list[dict[str, Any]]) -> str | None:
    """Why the quota plugin refuses `pod` (the message after `is forbidden: `), or None."""
    spec = pod.get("spec") or {}
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        qname = quota["metadata"]["name"]
        hard = {
            _canonical(k): parse_quantity(v) for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()
        }
        if not hard:
            continue
        missing: list[str] = []
        for name in sorted(set(hard) & _MUST_SPECIFY):
            kind, _, resource = name.partition(".")
            lacking = [
                c.get("name", "")
                for c in spec.get("containers") or []
                if ((c.get("resources") or {}).get(kind) or {}).get(resource) is None
            ]
            if lacking:
                missing.append(f"{name} for: {','.join(lacking)}")
        if missing:
            return f"failed quota: {qname}: must specify {'; '.join(missing)}"
        requested = pod_usage(pod, hard)
        used = usage_of(pods, hard)
        exceeded = sorted(
            n for n in hard if n in requested and requested[n] > 0 and used[n] + requested[n] > hard[n]
        )
        if exceeded:
            return (
                f"exceeded quota: {qname}, requested: {_pretty({n: requested[n] for n in exceeded})}, "
                f"used: {_pretty({n: used[n] for n in exceeded})}, "
                f"limited: {_pretty({n: hard[n] for n in exceeded})}"
            )
    return None


def status(quota: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The quota's status as the quota controller writes it (`hard` as given, `used` by name)."""
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    used = usage_of(pods, {_canonical(k) for k in hard})
    return {"hard": hard, "used": {k: format_quantity(_canonical(k), used[_canonical(k)]) for k in hard}}
