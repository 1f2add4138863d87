"""A run's follow ends at once on the controller's verdict that no node will ever take a rank."""

from __future__ import annotations

from typing import Any

import pytest

from nbd.runs.runner import _never_starts


def run(reason: str, message: str = "", *, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "train", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": [{"type": "Started", "status": "False", "reason": reason, "message": message}],
        },
    }


@pytest.mark.parametrize(
    ("obj", "verdict"),
    [
        (run("Unschedulable", "Rank 0: No node can run the pod."), "rank 0: no node can run the pod"),
        (run("Unschedulable", "No node fits."), "no node fits"),
        # Waiting for a node (a pool scaling up) is not a verdict.
        (run("WaitingForNode", "Rank 0: Waiting for a node with 1 nvidia.com/gpu"), None),
        (run("Starting"), None),
        # A status of an earlier spec says nothing about this one.
        (run("Unschedulable", "old", generation=3, observed=2), None),
        ({"metadata": {"name": "train"}}, None),
    ],
)
def test_never_starts(obj: dict[str, Any], verdict: str | None) -> None:
    assert _never_starts(obj) == verdict
