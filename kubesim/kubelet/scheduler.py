"""Whether a pod fits the node, and the scheduler's message when it does not.

The decision is the real scheduler's filter stage reduced to one node, its plugins in the default
profile's order, the first failure deciding the message: every taint of the node whose effect is
`NoSchedule` or `NoExecute` must be tolerated by the pod (`PreferNoSchedule` only scores, so it never
blocks); node selector and required node affinity must match the node's labels; the pod's effective requests (per resource, the
larger of the sum over containers and the largest init container; a limit without a request
counts as the request) plus those of the pods already bound and not terminal must fit the
node's allocatable. Messages read like kube-scheduler 1.32's FailedScheduling events:
"0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available:
1 No preemption victims found for incoming pod."

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubesim.quantity import parse_quantity

__all__ = [
    "Fit",
    "claims_problem",
    "fit",
    "pod_claims",
    "pod_requests",
    "tolerates",
    "untolerated_taint",
    "volume_binding_message",
]


@dataclass(frozen=True)
class Fit:
    ok: bool
    message: str = ""


def _container_requests(c: dict[str, Any]) -> dict[str, float]:
    res = c.get("resources") or {}
    out: dict[str, float] = {}
    for k, v in (res.get("limits") or {}).items():
        out[k] = parse_quantity(v)
    for k, v in (res.get("requests") or {}).items():
        out[k] = parse_quantity(v)
    return out


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    """Effective requests of a pod (see module docstring)."""
    spec = pod.get("spec") or {}
    total: dict[str, float] = {}
    for c in spec.get("containers") or []:
        for k, v in _container_requests(c).items():
            total[k] = total.get(k, 0.0) + v
    for c in spec.get("initContainers") or []:
        for k, v in _container_requests(c).items():
            total[k] = max(total.get(k, 0.0), v)
    return total


def _match_expression(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            a, b = int(labels[key]), int(values[0])
        except (KeyError, ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def _selector_matches(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    spec = pod.get("spec") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        # Terms are ORed; expressions inside a term are ANDed.
        return any(
            all(_match_expression(e, labels) for e in (t.get("matchExpressions") or [])) for t in terms
        )
    return True


_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")

_NOT_HELPFUL = "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Does one toleration match one taint?

    An empty effect matches every effect; an empty key (only valid with `Exists`) matches every
    key; `Exists` ignores the value; `Equal`, the default operator, needs the same value, a missing
    value being the empty one.
    """
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if not key and operator != "Exists":
        return False
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(
    taints: Sequence[dict[str, Any]], tolerations: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """The first taint that blocks scheduling and that no toleration matches, or None."""
    for taint in taints:
        if taint.get("effect") not in _BLOCKING_EFFECTS:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def fit(
    pod: dict[str, Any],
    node_labels: dict[str, str],
    allocatable: dict[str, str],
    bound_pods: Iterable[dict[str, Any]],
    taints: Sequence[dict[str, Any]] = (),
) -> Fit:
    """Does `pod` fit, given the node's taints and the pods already bound to it (terminal ones skipped)?"""
    reasons: list[str] = []
    blocking = untolerated_taint(taints, (pod.get("spec") or {}).get("tolerations") or [])
    if blocking is not None:
        shown = f"{{{blocking.get('key', '')}: {blocking.get('value') or ''}}}"
        return Fit(False, f"0/1 nodes are available: 1 node(s) had untolerated taint {shown}. {_NOT_HELPFUL}")
    if not _selector_matches(pod, node_labels):
        return Fit(
            False,
            f"0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. {_NOT_HELPFUL}",
        )
    used: dict[str, float] = {}
    count = 0
    for other in bound_pods:
        if (other.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        count += 1
        for k, v in pod_requests(other).items():
            used[k] = used.get(k, 0.0) + v
    alloc = {k: parse_quantity(v) for k, v in allocatable.items()}
    if "pods" in alloc and count + 1 > alloc["pods"]:
        reasons.append("Too many pods")
    for k, v in sorted(pod_requests(pod).items()):
        if v <= 0:
            continue
        if used.get(k, 0.0) + v > alloc.get(k, 0.0) + 1e-9:
            reasons.append(f"Insufficient {k}")
    if not reasons:
        return Fit(True)
    parts = ", ".join(f"1 {r}" for r in sorted(reasons))
    return Fit(
        False,
        f"0/1 nodes are available: {parts}. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod.",
    )


def pod_claims(pod: dict[str, Any]) -> list[str]:
    """The claim names a pod's volumes use (ephemeral volumes' claims are named POD-VOLUME)."""
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        if "persistentVolumeClaim" in v:
            out.append(str((v["persistentVolumeClaim"] or {}).get("claimName", "")))
        elif "ephemeral" in v:
            out.append(f"{pod['metadata']['name']}-{v['name']}")
    return out


def claims_problem(pod: dict[str, Any], get_claim: Callable[[str], dict[str, Any] | None]) -> str | None:
    """The scheduler's VolumeBinding verdict on `pod`: None when its claims are usable, else why not."""
    unbound = False
    for name in pod_claims(pod):
        claim = get_claim(name)
        if claim is None:
            return f'persistentvolumeclaim "{name}" not found'
        if claim["metadata"].get("deletionTimestamp"):
            return f'persistentvolumeclaim "{name}" is being deleted'
        if (claim.get("status") or {}).get("phase") != "Bound":
            unbound = True
    return "pod has unbound immediate PersistentVolumeClaims" if unbound else None


def volume_binding_message(problem: str) -> str:
    """The FailedScheduling message of a VolumeBinding PreFilter rejection (no node can help)."""
    return f"0/1 nodes are available: {problem}. {_NOT_HELPFUL}"


_MESSAGE = re.compile(r"^0/1 nodes are available: (.*)\. preemption: 0/1 nodes are available: 1 (.*)\.$")


def merge_messages(messages: Sequence[str]) -> str:
    """One FailedScheduling message for several nodes, from each node's own (as the scheduler's FitError).

    Per-node reasons ("1 Insufficient cpu") are counted over the nodes and sorted; so are the
    preemption verdicts. A message of another shape is returned as it is.
    """
    if len(messages) == 1:
        return messages[0]
    reasons: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    for m in messages:
        found = _MESSAGE.match(m)
        if found is None:
            return m
        for part in found.group(1).split(", "):
            reason = part.split(" ", 1)[1] if part.startswith("1 ") else part
            reasons[reason] = reasons.get(reason, 0) + 1
        verdicts[found.group(2)] = verdicts.get(found.group(2), 0) + 1
    n = len(messages)
    said = ", ".join(sorted(f"{c} {r}" for r, c in reasons.items()))
    why = ", ".join(sorted(f"{c} {r}" for r, c in verdicts.items()))
    return f"0/{n} nodes are available: {said}. preemption: 0/{n} nodes are available: {why}."
