"""The Run's decisions, table-driven: observations in, actions and status out (no cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from nbd_controller.config import Config
from nbd_controller.decisions import (
    CreateBuildJob,
    CreateObject,
    CreatePod,
    CreateRunJob,
    DeletePod,
    DeleteRunJob,
    IssueUploadURL,
    RunObserved,
    decide_run,
    run_job_outcome,
)
from nbd_controller.manifests import outputs_reader_pod
from nbd_controller.scheduling import SchedulingObserved

CONFIG = Config(bucket="b", registry="reg", prefix="ctx")
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
MD5 = "0123456789abcdef0123456789abcdef"
IMAGE = f"reg/nbd/team-context:{MD5}"


def run(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, name: str = "train"
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "nbd.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name, "namespace": "team", "uid": "u1", "generation": 2},
        "spec": {
            "build": {"upload": {"md5": MD5, "requestID": "r1"}},
            "command": ["python", "t.py"],
            **(spec or {}),
        },
    }
    if status is not None:
        out["status"] = status
    return out


def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "m",
        "lastTransitionTime": "2025-12-31T00:00:00Z",
        "observedGeneration": 1,
    }


def job(*conditions: tuple[str, str], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "train", "uid": "j1"},
        "status": {
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": f"{t} {r}",
                    "lastTransitionTime": "2026-01-01T11:59:00Z",
                }
                for t, r in conditions
            ],
            **status,
        },
    }


def pod(
    index: int | None,
    phase: str,
    exit_code: int | None = None,
    finished: str = "2026-01-01T11:58:00Z",
    created: str = "2026-01-01T11:00:00Z",
    deleting: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    state: dict[str, Any] = (
        {"running": {}} if phase == "Running" else {"waiting": {"reason": "ContainerCreating"}}
    )
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "finishedAt": finished,
                "reason": "Error" if exit_code else "Completed",
            }
        }
    return {
        "metadata": {
            "name": f"train-{index}-{created[14:16]}",
            "annotations": annotations,
            "creationTimestamp": created,
            **({"deletionTimestamp": "2026-01-01T11:58:00Z"} if deleting else {}),
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "run", "state": state}], **extra},
    }


STARTED = {"job": "train", "image": IMAGE, "outputsClaim": "train-outputs", "masterAddr": "127.0.0.1"}


@dataclass
class Case:
    id: str
    run: dict[str, Any]
    observed: dict[str, Any] = field(default_factory=dict)
    actions: list[type] = field(default_factory=list)
    phase: str = ""
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "a new context asks for an upload, like a Notebook",
        run(),
        {},
        [IssueUploadURL],
        "Uploading",
        {
            "Uploaded": ("False", "AwaitingUpload"),
            "Started": ("False", "WaitingForUpload"),
            "Finished": ("False", "NotStarted"),
        },
    ),
    Case(
        "stored content is built in the shared build Job",
        run(),
        {"stored_md5": MD5},
        [CreateBuildJob],
        "Building",
        {"Built": ("False", "Building"), "Started": ("False", "WaitingForBuild")},
        {"build": {"md5": MD5, "image": IMAGE, "job": f"nbd-build-{MD5}"}},
    ),
    Case(
        "content built before (by any kind): no upload, no build, the claim and the Job at once",
        run(),
        {"built_image": IMAGE},
        [CreateObject, CreateRunJob],
        "Starting",
        {
            "Uploaded": ("True", "AlreadyBuilt"),
            "Built": ("True", "AlreadyBuilt"),
            "Started": ("False", "Creating"),
        },
        {
            "upload": {"requestID": "r1", "storedMD5": MD5},
            "job": "train",
            "outputsClaim": "train-outputs",
            "masterAddr": "127.0.0.1",
            "image": IMAGE,
        },
    ),
    Case(
        "two nodes: a headless Service too, and rank 0's name",
        run({"nodes": 2}),
        {"built_image": IMAGE},
        [CreateObject, CreateObject, CreateRunJob],
        "Starting",
        {},
        {"service": "train", "masterAddr": "train-0.train.team.svc.cluster.local"},
    ),
    Case(
        "objects already there are not created again",
        run({"nodes": 2}),
        {"built_image": IMAGE, "claim_exists": True, "service_exists": True},
        [CreateRunJob],
        "Starting",
    ),
    Case(
        "a failed build fails the run (Finished BuildFailed)",
        run(),
        {
            "job": {
                "metadata": {"name": f"nbd-build-{MD5}", "uid": "b1"},
                "status": {"conditions": [{"type": "Failed", "status": "True"}]},
            },
            "build_log_tail": "boom",
        },
        [],
        "Failed",
        {
            "Built": ("False", "BuildFailed"),
            "Finished": ("True", "BuildFailed"),
            "Started": ("False", "NotBuilt"),
        },
    ),
    Case(
        "the Job refused by the API server is reported and tried again",
        run(),
        {"built_image": IMAGE, "claim_exists": True, "run_create_error": "exceeded quota"},
        [],
        "Failed",
        {"Started": ("False", "FailedCreate"), "Finished": ("False", "NotStarted")},
    ),
    Case(
        "a running pod: Running",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(startTime="2026-01-01T11:50:00Z", active=1),
            "run_pods": (pod(None, "Running"),),
        },
        [],
        "Running",
        {"Started": ("True", "Started"), "Finished": ("False", "Running")},
        {
            "startTime": "2026-01-01T11:50:00Z",
            "ranks": [{"index": 0, "pod": "train-None-00", "phase": "Running"}],
        },
    ),
    Case(
        "a pod no node fits says so",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(active=1),
            "run_pods": (
                pod(
                    None,
                    "Pending",
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/1 nodes: Insufficient nvidia.com/gpu.",
                        }
                    ],
                ),
            ),
            "scheduling": SchedulingObserved(
                events=(
                    ("NotTriggerScaleUp", "pod didn't trigger scale-up: 1 Insufficient nvidia.com/gpu", "t1"),
                ),
                status="",
            ),
        },
        [],
        "Starting",
        {"Started": ("False", "Unschedulable")},
    ),
    Case(
        "a pod waits while the cluster scales up",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(active=1),
            "run_pods": (
                pod(
                    None,
                    "Pending",
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/1 nodes: Insufficient nvidia.com/gpu.",
                        }
                    ],
                ),
            ),
            "scheduling": SchedulingObserved(
                events=(
                    ("NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached", "t1"),
                    ("TriggeredScaleUp", "pod triggered scale-up: [{a100 1->2 (max: 4)}]", "t2"),
                ),
                status="",
            ),
        },
        [],
        "Starting",
        {"Started": ("False", "WaitingForNode")},
    ),
    Case(
        "a pod whose image does not pull says so",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(active=1),
            "run_pods": (
                {
                    **pod(None, "Pending"),
                    "status": {
                        "phase": "Pending",
                        "containerStatuses": [
                            {
                                "name": "run",
                                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
                            }
                        ],
                    },
                },
            ),
        },
        [],
        "Starting",
        {"Started": ("False", "ErrImagePull")},
    ),
    Case(
        "pods refused by a quota (a Job without pods) are reported",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(),
            "run_create_error": "exceeded quota: pods",
        },
        [],
        "Starting",
        {"Started": ("False", "FailedCreate")},
    ),
    Case(
        "success: exit code 0, completion time",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(
                ("SuccessCriteriaMet", "CompletionsReached"),
                ("Complete", "CompletionsReached"),
                completionTime="2026-01-01T11:59:30Z",
            ),
            "run_pods": (pod(None, "Succeeded", 0),),
        },
        [],
        "Succeeded",
        {"Started": ("True", "Started"), "Finished": ("True", "Succeeded")},
        {
            "exitCode": 0,
            "completionTime": "2026-01-01T11:59:30Z",
            "ranks": [{"index": 0, "pod": "train-None-00", "phase": "Succeeded", "exitCode": 0}],
        },
    ),
    Case(
        "one node exits 3: ScriptFailed, exit code 3",
        run(status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(("FailureTarget", "PodFailurePolicy")),
            "run_pods": (pod(None, "Failed", 3),),
        },
        [],
        "Failed",
        {"Finished": ("True", "ScriptFailed")},
        {"exitCode": 3, "failedRank": 0, "completionTime": "2026-01-01T11:59:00Z"},
    ),
    Case(
        "one rank of three fails first: RankFailed names it, the others' kills do not count",
        run({"nodes": 3}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "service_exists": True,
            "run_job": job(("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")),
            "run_pods": (
                pod(0, "Failed", 137, finished="2026-01-01T11:58:05Z"),
                pod(1, "Failed", 7, finished="2026-01-01T11:58:00Z"),
                pod(2, "Succeeded", 0, finished="2026-01-01T11:57:00Z"),
            ),
        },
        [],
        "Failed",
        {"Finished": ("True", "RankFailed")},
        {"exitCode": 7, "failedRank": 1},
    ),
    Case(
        "the same second: the rank that failed by itself counts, not the ones the Job stopped",
        run({"nodes": 3}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "service_exists": True,
            "run_job": job(("FailureTarget", "PodFailurePolicy")),
            "run_pods": (
                pod(0, "Failed", 143, finished="2026-01-01T11:58:00Z"),
                pod(1, "Failed", 2, finished="2026-01-01T11:58:00Z", deleting=True),
                pod(2, "Failed", 7, finished="2026-01-01T11:58:00Z"),
            ),
        },
        [],
        "Failed",
        {"Finished": ("True", "RankFailed")},
        {"exitCode": 7, "failedRank": 2},
    ),
    Case(
        "a rank replaced after a disruption: its newest pod counts",
        run({"nodes": 2}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "service_exists": True,
            "run_job": job(active=2),
            "run_pods": (
                pod(0, "Running"),
                pod(1, "Failed", 143, created="2026-01-01T11:00:00Z"),
                pod(1, "Running", created="2026-01-01T11:10:00Z"),
            ),
        },
        [],
        "Running",
        {},
        {
            "ranks": [
                {"index": 0, "pod": "train-0-00", "phase": "Running"},
                {"index": 1, "pod": "train-1-10", "phase": "Running"},
            ]
        },
    ),
    Case(
        "the deadline: DeadlineExceeded",
        run({"activeDeadlineSeconds": 60}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(("Failed", "DeadlineExceeded")),
            "run_pods": (pod(None, "Failed", 137),),
        },
        [],
        "Failed",
        {"Finished": ("True", "DeadlineExceeded")},
    ),
    Case(
        "a Job failed with no exit code to show (its pods are gone): JobFailed",
        run(status=STARTED),
        {"built_image": IMAGE, "claim_exists": True, "run_job": job(("Failed", "BackoffLimitExceeded"))},
        [],
        "Failed",
        {"Finished": ("True", "JobFailed")},
    ),
    Case(
        "stop while running: the Job goes, phase Stopped",
        run({"stop": True}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(active=1),
            "run_pods": (pod(None, "Running"),),
        },
        [DeleteRunJob],
        "Stopped",
        {"Finished": ("True", "Stopped")},
    ),
    Case(
        "stop before the build ends: no Job, phase Stopped",
        run({"stop": True}),
        {"stored_md5": MD5},
        [CreateBuildJob],
        "Stopped",
        {"Finished": ("True", "Stopped"), "Started": ("False", "Stopped")},
    ),
    Case(
        "stop with the image ready but no Job yet: none is created",
        run({"stop": True}),
        {"built_image": IMAGE, "claim_exists": True},
        [],
        "Stopped",
        {"Finished": ("True", "Stopped")},
    ),
    Case(
        "a stop racing the end: the Job's outcome wins",
        run({"stop": True}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": job(("Complete", "CompletionsReached")),
            "run_pods": (pod(None, "Succeeded", 0),),
        },
        [],
        "Succeeded",
        {"Finished": ("True", "Succeeded")},
    ),
    Case(
        "finished stays finished when the TTL deletes the Job",
        run(
            status={
                **STARTED,
                "phase": "Failed",
                "exitCode": 3,
                "conditions": [cond("Finished", "True", "ScriptFailed")],
            }
        ),
        {"built_image": IMAGE, "claim_exists": True},
        [],
        "Failed",
        {"Finished": ("True", "ScriptFailed")},
        {"exitCode": 3},
    ),
    Case(
        "stopped stays stopped after stop is unset",
        run(status={**STARTED, "phase": "Stopped", "conditions": [cond("Finished", "True", "Stopped")]}),
        {"built_image": IMAGE, "claim_exists": True},
        [],
        "Stopped",
    ),
    Case(
        "a Job of a stopped run that is still there is deleted again",
        run(status={**STARTED, "phase": "Stopped", "conditions": [cond("Finished", "True", "Stopped")]}),
        {"built_image": IMAGE, "claim_exists": True, "run_job": job(active=1)},
        [DeleteRunJob],
        "Stopped",
    ),
    Case(
        "a Job gone before its outcome was seen: JobDeleted, never a second Job",
        run(status=STARTED),
        {"built_image": IMAGE, "claim_exists": True},
        [],
        "Failed",
        {"Finished": ("True", "JobDeleted")},
    ),
    Case(
        "a Job someone else deletes while it runs: wait for it to go (then JobDeleted)",
        run(status={**STARTED, "phase": "Running"}),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "run_job": {
                **job(active=1),
                "metadata": {"name": "train", "deletionTimestamp": "2026-01-01T11:59:00Z"},
            },
            "run_pods": (pod(None, "Running"),),
        },
        [],
        "Running",
    ),
    Case(
        "every rank succeeded but the Job has not said so yet",
        run({"nodes": 2}, status=STARTED),
        {
            "built_image": IMAGE,
            "claim_exists": True,
            "service_exists": True,
            "run_job": job(succeeded=2),
            "run_pods": (pod(0, "Succeeded", 0), pod(1, "Succeeded", 0)),
        },
        [],
        "Running",
        {"Started": ("True", "Started"), "Finished": ("False", "Running")},
    ),
    Case(
        "a name that cannot be a Service's: InvalidName",
        run(name="1train"),
        {"built_image": IMAGE},
        [],
        "Failed",
        {"Finished": ("True", "InvalidName"), "Started": ("False", "InvalidName")},
    ),
    Case(
        "a prebuilt image: no upload, no build",
        {**run(), "spec": {"image": "python:3.12", "command": ["python", "-V"]}},
        {},
        [CreateObject, CreateRunJob],
        "Starting",
        {"Uploaded": ("True", "NotNeeded"), "Built": ("True", "PrebuiltImage")},
        {"image": "python:3.12"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide_run(case: Case) -> None:
    plan = decide_run(CONFIG, RunObserved(run=case.run, now=NOW, **case.observed))
    assert [type(a) for a in plan.actions] == case.actions
    assert plan.status["phase"] == case.phase
    got = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    for type_, want in case.conditions.items():
        assert got.get(type_) == want, (type_, plan.status["conditions"])
    for key, want in case.status.items():
        assert plan.status.get(key) == want, key


def test_a_failed_rank_message_names_the_rank_pod_and_code() -> None:
    case = next(c for c in CASES if c.id.startswith("one rank of three"))
    plan = decide_run(CONFIG, RunObserved(run=case.run, now=NOW, **case.observed))
    assert (
        plan.status["message"] == "Rank 1 (pod train-1-00) exited with code 7; the other ranks were stopped."
    )


def test_decisions_are_stable_a_second_round_changes_nothing() -> None:
    observed = {
        "built_image": IMAGE,
        "claim_exists": True,
        "run_job": job(("FailureTarget", "PodFailurePolicy")),
        "run_pods": (pod(None, "Failed", 3),),
    }
    first = decide_run(CONFIG, RunObserved(run=run(status=STARTED), now=NOW, **observed))
    second = decide_run(CONFIG, RunObserved(run=run(status=first.status), now=NOW, **observed))
    assert second.status == first.status and second.actions == []


def test_job_outcome_reads_only_conditions() -> None:
    assert run_job_outcome(job(failed=1, active=1))[0] == "running"  # a pod to be replaced
    assert run_job_outcome(job(("FailureTarget", "PodFailurePolicy")))[0] == "failed"
    assert run_job_outcome(job(("SuccessCriteriaMet", "CompletionsReached")))[0] == "succeeded"


# --- fetch --------------------------------------------------------------------------------------


def reader(request_id: str, phase: str = "Running", ready: bool = True, **meta: Any) -> dict[str, Any]:
    out = outputs_reader_pod(CONFIG, run(), request_id)
    out["metadata"].update(meta)
    out["status"] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return out


FINISHED = {
    **STARTED,
    "phase": "Failed",
    "exitCode": 3,
    "conditions": [cond("Finished", "True", "ScriptFailed")],
}


@pytest.mark.parametrize(
    ("spec", "status", "observed", "actions", "fetch"),
    [
        ({}, FINISHED, {"claim_exists": True}, [], None),
        ({}, FINISHED, {"claim_exists": True, "reader": reader("f1")}, [DeletePod], None),
        (
            {"fetch": {"requestID": "f1"}},
            FINISHED,
            {"claim_exists": True},
            [CreatePod],
            {"requestID": "f1", "ready": False, "pod": "train-outputs-reader"},
        ),
        (
            {"fetch": {"requestID": "f1"}},
            FINISHED,
            {"claim_exists": True, "reader": reader("f1", ready=False)},
            [],
            {"requestID": "f1", "ready": False, "pod": "train-outputs-reader"},
        ),
        (
            {"fetch": {"requestID": "f1"}},
            FINISHED,
            {"claim_exists": True, "reader": reader("f1")},
            [],
            {"requestID": "f1", "ready": True, "pod": "train-outputs-reader"},
        ),
        (
            {"fetch": {"requestID": "f2"}},
            FINISHED,
            {"claim_exists": True, "reader": reader("f1")},
            [DeletePod],
            {"requestID": "f2", "ready": False},
        ),
        (
            {"fetch": {"requestID": "f2"}},
            FINISHED,
            {"claim_exists": True, "reader": reader("f1", deletionTimestamp="x")},
            [],
            {"requestID": "f2", "ready": False},
        ),
        (
            {"fetch": {"requestID": "f1"}},
            FINISHED,
            {"claim_exists": True, "reader": reader("f1", phase="Failed", ready=False)},
            [DeletePod],
            {"requestID": "f1", "ready": False, "expired": True},
        ),
        (
            {"fetch": {"requestID": "f1"}},
            {**FINISHED, "fetch": {"requestID": "f1", "ready": False, "expired": True, "message": "m"}},
            {"claim_exists": True},
            [],
            {"requestID": "f1", "ready": False, "expired": True},
        ),
        (
            {"fetch": {"requestID": "f1"}},
            FINISHED,
            {"claim_exists": True, "reader_create_error": "quota"},
            [],
            {"requestID": "f1", "ready": False},
        ),
        (
            {"fetch": {"requestID": "f1"}},
            None,
            {"stored_md5": MD5},
            [CreateBuildJob],
            {"requestID": "f1", "ready": False},
        ),
    ],
    ids=[
        "none",
        "unset-deletes",
        "create",
        "not-ready",
        "ready",
        "replace",
        "replacing",
        "expired",
        "expired-stays",
        "refused",
        "no-claim-yet",
    ],
)
def test_fetch_reader(
    spec: dict[str, Any],
    status: dict[str, Any] | None,
    observed: dict[str, Any],
    actions: list[type],
    fetch: dict[str, Any] | None,
) -> None:
    plan = decide_run(
        CONFIG,
        RunObserved(
            run=run(spec, status),
            now=NOW,
            built_image=observed.pop("built_image", None) if "stored_md5" in observed else IMAGE,
            **observed,
        ),
    )
    assert [type(a) for a in plan.actions] == actions
    got = plan.status.get("fetch")
    if fetch is None:
        assert got is None
    else:
        assert got is not None and {k: v for k, v in got.items() if k != "message"} == fetch
    if CreatePod in actions:
        manifest = next(a for a in plan.actions if isinstance(a, CreatePod)).manifest
        assert manifest["metadata"]["annotations"]["nbd.dev/fetch-request"] == spec["fetch"]["requestID"]


def test_pods_created_but_pending_say_starting() -> None:
    observed = {
        "built_image": IMAGE,
        "claim_exists": True,
        "run_job": job(active=1),
        "run_pods": (pod(None, "Pending"),),
    }
    status = {**STARTED, "conditions": [cond("Started", "False", "Creating")]}
    plan = decide_run(CONFIG, RunObserved(run=run(status=status), now=NOW, **observed))
    assert plan.status["phase"] == "Starting" and plan.actions == []
    started = next(c for c in plan.status["conditions"] if c["type"] == "Started")
    assert (started["status"], started["reason"]) == ("False", "Starting")
