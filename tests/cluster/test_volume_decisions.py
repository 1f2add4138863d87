"""The controller's decisions about the claims a notebook or run pod mounts: the workspace claim
(created with the pod, grown when its class allows, never shrunk, reported when not provisioned) and
spec.volumes' data claims (no pod while one is missing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from nbd_controller.config import Config
from nbd_controller.decisions import (
    CreateObject,
    CreatePod,
    Observed,
    ResizeClaim,
    RunObserved,
    decide,
    decide_run,
)
from nbd_controller.manifests import notebook_pod

CONFIG = Config(bucket="b", registry="reg", prefix="ctx")
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def nb(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "nb1", "namespace": "team", "uid": "u1", "generation": 3}, "spec": spec}


def pod_for(notebook: dict[str, Any], image: str) -> dict[str, Any]:
    pod = notebook_pod(CONFIG, notebook, image)
    pod["status"] = {}
    return pod


@dataclass
class Case:
    id: str
    notebook: dict[str, Any]
    observed: dict[str, Any] = field(default_factory=dict)
    actions: list[type] = field(default_factory=list)
    phase: str = ""
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, reason)
    requeue: float | None = None


WS = {"image": "jupyter/base", "workspace": {"size": "50Gi", "storageClass": "fast"}}
WS_NB = nb(WS)


def claim(size: str = "50Gi", phase: str = "Bound", storage_class: str = "fast") -> dict[str, Any]:
    return {
        "metadata": {"name": "nb1-workspace"},
        "spec": {"storageClassName": storage_class, "resources": {"requests": {"storage": size}}},
        "status": {"phase": phase},
    }


CASES = [
    Case(
        "a workspace claim is created with the pod",
        WS_NB,
        {"secret_exists": True},
        actions=[CreateObject, CreatePod],
        phase="Starting",
    ),
    Case(
        "a bound workspace lets the pod start",
        WS_NB,
        {"secret_exists": True, "workspace": claim()},
        actions=[CreatePod],
        phase="Starting",
    ),
    Case(
        "a claim not provisioned names its class",
        WS_NB,
        {
            "secret_exists": True,
            "workspace": claim(phase="Pending"),
            "workspace_warning": 'ProvisioningFailed: storageclass.storage.k8s.io "fast" not found',
        },
        phase="Failed",
        conditions={"Ready": ("False", "WorkspacePending")},
        requeue=3.0,
    ),
    Case(
        "a pending claim without a warning waits (first consumer)",
        WS_NB,
        {"secret_exists": True, "workspace": claim(phase="Pending")},
        actions=[CreatePod],
        phase="Starting",
    ),
    Case(
        "a workspace never shrinks",
        WS_NB,
        {"secret_exists": True, "workspace": claim("100Gi")},
        phase="Failed",
        conditions={"Ready": ("False", "WorkspaceSizeUnchangeable")},
    ),
    Case(
        "a workspace grows when its class allows expansion",
        WS_NB,
        {"secret_exists": True, "workspace": claim("10Gi"), "workspace_expandable": True},
        actions=[ResizeClaim, CreatePod],
        phase="Starting",
    ),
    Case(
        "a workspace whose class cannot expand is not grown",
        WS_NB,
        {"secret_exists": True, "workspace": claim("10Gi"), "workspace_expandable": False},
        phase="Failed",
        conditions={"Ready": ("False", "WorkspaceSizeUnchangeable")},
    ),
    Case(
        "a workspace claim being deleted is waited for",
        WS_NB,
        {"secret_exists": True, "workspace": {**claim(), "metadata": {"deletionTimestamp": "x"}}},
        phase="Failed",
        conditions={"Ready": ("False", "WorkspaceDeleting")},
        requeue=1.0,
    ),
    Case(
        "a missing data claim keeps the pod from being created",
        nb({"image": "jupyter/base", "volumes": [{"claim": "data", "mountPath": "/data"}]}),
        {"secret_exists": True, "missing_claims": ("data",)},
        phase="Failed",
        conditions={"Ready": ("False", "ClaimMissing")},
        requeue=3.0,
    ),
    Case(
        "a missing data claim does not touch a running pod",
        nb({"image": "jupyter/base", "volumes": [{"claim": "data", "mountPath": "/data"}]}),
        {
            "secret_exists": True,
            "pod": pod_for(
                nb({"image": "jupyter/base", "volumes": [{"claim": "data", "mountPath": "/data"}]}),
                "jupyter/base",
            ),
        },
        phase="Starting",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide_claims(case: Case) -> None:
    plan = decide(CONFIG, Observed(notebook=case.notebook, now=NOW, **case.observed))
    assert [type(a) for a in plan.actions if not type(a).__name__ == "CreateTokenSecret"] == case.actions
    assert plan.status["phase"] == case.phase
    got = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    for type_, expected in case.conditions.items():
        assert got[type_] == expected, (type_, plan.status["conditions"])
    assert plan.requeue_after == case.requeue


def _ready(plan: Any) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == "Ready")


def test_claim_messages_say_what_to_do() -> None:
    pending = decide(
        CONFIG,
        Observed(
            notebook=WS_NB,
            now=NOW,
            workspace=claim(phase="Pending"),
            workspace_warning='ProvisioningFailed: storageclass.storage.k8s.io "fast" not found',
        ),
    )
    assert "nb1-workspace" in _ready(pending)["message"] and "StorageClass fast" in _ready(pending)["message"]
    shrink = decide(CONFIG, Observed(notebook=WS_NB, now=NOW, workspace=claim("100Gi")))
    assert "cannot shrink" in _ready(shrink)["message"] and "100Gi" in _ready(shrink)["message"]
    grow = decide(CONFIG, Observed(notebook=WS_NB, now=NOW, workspace=claim("10Gi")))
    assert "allowVolumeExpansion" in _ready(grow)["message"]
    resized = decide(
        CONFIG, Observed(notebook=WS_NB, now=NOW, workspace=claim("10Gi"), workspace_expandable=True)
    )
    assert ResizeClaim("nb1-workspace", "50Gi") in resized.actions
    created = decide(CONFIG, Observed(notebook=WS_NB, now=NOW))
    (made,) = [a for a in created.actions if isinstance(a, CreateObject)]
    assert made.manifest["metadata"]["name"] == "nb1-workspace"


def test_a_run_with_a_missing_data_claim_has_no_job() -> None:
    run = {
        "kind": "Run",
        "metadata": {"name": "train", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"image": "img", "command": ["python"], "volumes": [{"claim": "data", "mountPath": "/data"}]},
    }
    plan = decide_run(CONFIG, RunObserved(run=run, now=NOW, missing_claims=("data",)))
    assert not any(type(a).__name__ == "CreateRunJob" for a in plan.actions)
    assert plan.status["phase"] == "Failed" and "data" in plan.status["message"]
    started = next(c for c in plan.status["conditions"] if c["type"] == "Started")
    assert started["reason"] == "ClaimMissing"
    plan = decide_run(CONFIG, RunObserved(run=run, now=NOW, claim_exists=True))
    assert any(type(a).__name__ == "CreateRunJob" for a in plan.actions)
