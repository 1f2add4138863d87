"""metav1.Condition bookkeeping: setting a condition keeps its lastTransitionTime unless its status
changes, so a reconcile that finds nothing new writes nothing new."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["set_condition", "get_condition", "rfc3339"]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return condition
    return None


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Returns a new list with condition `type_` set; other conditions keep their order."""
    status_text = "True" if status else "False"
    previous = get_condition(conditions, type_)
    transition = rfc3339(now)
    if previous is not None and previous.get("status") == status_text:
        transition = str(previous.get("lastTransitionTime") or transition)
    condition = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    out = [c for c in conditions if c.get("type") != type_]
    index = next((i for i, c in enumerate(conditions) if c.get("type") == type_), len(out))
    out.insert(index, condition)
    return out
