"""The controller's decisions, table-driven: observations in, actions and status out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from nbd_controller.config import Config
from nbd_controller.decisions import (
    CreateBuildJob,
    CreatePod,
    CreateTokenSecret,
    DeleteBuildJob,
    DeleteObject,
    DeletePod,
    ForgetBuild,
    IssueUploadURL,
    Observed,
    RecordBuild,
    decide,
)
from nbd_controller.manifests import notebook_pod
from nbd_controller.patching import merge_patch
from nbd_controller.scheduling import NodeOffer, SchedulingObserved

CONFIG = Config(bucket="b", registry="reg", prefix="ctx")
CPU_NODE = NodeOffer(name="cpu-1", labels={}, capacity={"cpu": "8", "memory": "32Gi"})
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
MD5 = "0123456789abcdef0123456789abcdef"
OTHER = "ffffffffffffffffffffffffffffffff"
IMAGE = f"reg/nbd/team-context:{MD5}"


def nb(spec: dict[str, Any], status: dict[str, Any] | None = None, name: str = "nb1") -> dict[str, Any]:
    out: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "team", "uid": "u1", "generation": 3},
        "spec": spec,
    }
    if status is not None:
        out["status"] = status
    return out


def upload(request_id: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"build": {"upload": {"md5": MD5, "requestID": request_id}, **extra}}


def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "m",
        "lastTransitionTime": "2025-12-31T00:00:00Z",
        "observedGeneration": 2,
    }


def job(outcome: str) -> dict[str, Any]:
    conditions = {
        "running": [],
        "succeeded": [{"type": "Complete", "status": "True"}],
        "failed": [{"type": "Failed", "status": "True"}],
    }[outcome]
    return {"metadata": {"name": f"nbd-build-{MD5}"}, "status": {"conditions": conditions}}


def pod_for(notebook: dict[str, Any], image: str = IMAGE, **status: Any) -> dict[str, Any]:
    pod = notebook_pod(CONFIG, notebook, image)
    pod["status"] = status
    return pod


@dataclass
class Case:
    id: str
    notebook: dict[str, Any]
    observed: dict[str, Any] = field(default_factory=dict)
    actions: list[type] = field(default_factory=list)
    phase: str = ""
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, reason)
    status: dict[str, Any] = field(default_factory=dict)  # subset of the status expected
    requeue: float | None = None


MISSING = (
    f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = failed to pull and unpack image '
    f'"{IMAGE}": failed to resolve reference "{IMAGE}": {IMAGE}: not found'
)
UNAUTHORIZED = (
    f'Failed to pull image "{IMAGE}": rpc error: code = Unknown desc = failed to pull and unpack image '
    f'"{IMAGE}": failed to resolve reference "{IMAGE}": pull access denied, repository does not exist '
    f"or may require authorization: authorization failed: 401 Unauthorized"
)
VALID_URL = {"requestID": "r1", "signedURL": "https://u", "expiresAt": "2026-01-01T12:10:00Z"}
READY_NB = nb({"image": "jupyter/base"})
GPU_NB = nb({"image": "img", "resources": {"gpu": {"count": 8}}})

CASES = [
    Case(
        "prebuilt image starts a pod",
        nb({"image": "jupyter/base"}),
        actions=[CreateTokenSecret, CreatePod],
        phase="Starting",
        conditions={
            "Uploaded": ("True", "NotNeeded"),
            "Built": ("True", "PrebuiltImage"),
            "Ready": ("False", "Starting"),
        },
        status={
            "image": "jupyter/base",
            "pod": "nb1-notebook",
            "tokenSecret": "nb1-token",
            "observedGeneration": 3,
        },
    ),
    Case(
        "neither image nor upload",
        nb({}),
        phase="Failed",
        conditions={"Built": ("False", "InvalidSpec"), "Ready": ("False", "NotBuilt")},
    ),
    Case(
        "name too long",
        nb({"image": "x"}, name="n" * 64),
        phase="Failed",
        conditions={"Ready": ("False", "InvalidName")},
    ),
    Case(
        "nothing stored: a URL is issued",
        nb(upload()),
        actions=[IssueUploadURL],
        phase="Uploading",
        conditions={
            "Uploaded": ("False", "AwaitingUpload"),
            "Built": ("False", "WaitingForUpload"),
            "Ready": ("False", "WaitingForUpload"),
        },
        status={"upload": {"requestID": "r1"}, "build": {"md5": MD5, "image": IMAGE}},
        requeue=5.0,
    ),
    Case(
        "a valid URL for the same request is kept",
        nb(upload(), {"upload": VALID_URL}),
        phase="Uploading",
        status={"upload": VALID_URL},
        requeue=5.0,
        conditions={"Uploaded": ("False", "AwaitingUpload")},
    ),
    Case(
        "an expiring URL is renewed",
        nb(upload(), {"upload": {**VALID_URL, "expiresAt": "2026-01-01T12:00:30Z"}}),
        actions=[IssueUploadURL],
        phase="Uploading",
        requeue=5.0,
    ),
    Case(
        "a new request gets a new URL",
        nb(upload("r2"), {"upload": VALID_URL}),
        actions=[IssueUploadURL],
        phase="Uploading",
        status={"upload": {"requestID": "r2"}},
        requeue=5.0,
    ),
    Case(
        "stored and matching: build",
        nb(upload(), {"upload": VALID_URL}),
        {"stored_md5": MD5},
        actions=[CreateBuildJob],
        phase="Building",
        conditions={
            "Uploaded": ("True", "Stored"),
            "Built": ("False", "Building"),
            "Ready": ("False", "WaitingForBuild"),
        },
        status={
            "upload": {"requestID": "r1", "storedMD5": MD5},
            "build": {"md5": MD5, "image": IMAGE, "job": f"nbd-build-{MD5}"},
        },
    ),
    Case(
        "stored but different: delete, never build",
        nb(upload("r1", uploaded="r1")),
        {"stored_md5": OTHER},
        actions=[DeleteObject],
        phase="Failed",
        conditions={"Uploaded": ("False", "MD5Mismatch"), "Built": ("False", "WaitingForUpload")},
        status={"upload": {"requestID": "r1"}},
    ),
    Case(
        "after a mismatch the same request waits",
        nb(
            upload("r1", uploaded="r1"),
            {"upload": {"requestID": "r1"}, "conditions": [cond("Uploaded", "False", "MD5Mismatch")]},
        ),
        phase="Failed",
        conditions={"Uploaded": ("False", "MD5Mismatch")},
    ),
    Case(
        "after a mismatch a new request gets a URL",
        nb(
            upload("r2", uploaded="r1"),
            {"upload": {"requestID": "r1"}, "conditions": [cond("Uploaded", "False", "MD5Mismatch")]},
        ),
        actions=[IssueUploadURL],
        phase="Uploading",
        conditions={"Uploaded": ("False", "AwaitingUpload")},
        requeue=5.0,
    ),
    Case(
        "marked uploaded but nothing stored",
        nb(upload("r1", uploaded="r1"), {"upload": VALID_URL}),
        phase="Failed",
        conditions={"Uploaded": ("False", "UploadMissing")},
    ),
    Case(
        "a stale mark is ignored",
        nb(upload("r2", uploaded="r1"), {"upload": VALID_URL}),
        actions=[IssueUploadURL],
        phase="Uploading",
        requeue=5.0,
    ),
    Case(
        "build running",
        nb(upload()),
        {"job": job("running")},
        phase="Building",
        conditions={"Uploaded": ("True", "Stored"), "Built": ("False", "Building")},
    ),
    Case(
        "build succeeded: record, secret, pod",
        nb(upload()),
        {"job": job("succeeded")},
        actions=[RecordBuild, CreateTokenSecret, CreatePod],
        phase="Starting",
        conditions={"Built": ("True", "Built")},
        status={"image": IMAGE},
    ),
    Case(
        "the build's pod refused by a quota",
        nb(upload()),
        {"job": job("running"), "build_create_error": 'pods "b" is forbidden: exceeded quota: q'},
        phase="Failed",
        requeue=10.0,
        conditions={"Built": ("False", "FailedCreate"), "Ready": ("False", "NotBuilt")},
    ),
    Case(
        "the notebook pod refused by a quota",
        READY_NB,
        {"secret_exists": True, "pod_create_error": 'pods "nb1-notebook" is forbidden: exceeded quota: q'},
        phase="Failed",
        requeue=10.0,
        conditions={"Ready": ("False", "FailedCreate")},
    ),
    Case(
        "build failed",
        nb(upload()),
        {"job": job("failed"), "build_log_tail": "#1 ERROR: boom\n"},
        phase="Failed",
        conditions={"Built": ("False", "BuildFailed"), "Ready": ("False", "NotBuilt")},
    ),
    Case(
        "built before: no upload, no build",
        nb(upload()),
        {"built_image": IMAGE, "secret_exists": True},
        actions=[CreatePod],
        phase="Starting",
        conditions={"Uploaded": ("True", "AlreadyBuilt"), "Built": ("True", "AlreadyBuilt")},
        status={"upload": {"requestID": "r1", "storedMD5": MD5}},
    ),
    Case(
        "the record of its own build keeps the Job and the reasons",
        nb(upload(), {"build": {"md5": MD5, "image": IMAGE, "job": f"nbd-build-{MD5}"}}),
        {"built_image": IMAGE, "secret_exists": True},
        actions=[CreatePod],
        phase="Starting",
        conditions={"Uploaded": ("True", "Stored"), "Built": ("True", "Built")},
        status={"build": {"md5": MD5, "image": IMAGE, "job": f"nbd-build-{MD5}"}},
    ),
    Case(
        "a new context stops the old pod until built",
        nb(upload()),
        {"secret_exists": True, "pod": pod_for(nb(upload()), image="reg/nbd/team-context:old")},
        actions=[IssueUploadURL, DeletePod],
        phase="Uploading",
        requeue=5.0,
    ),
    Case(
        "suspend deletes the pod",
        nb({"image": "jupyter/base", "suspend": True}),
        {"secret_exists": True, "pod": pod_for(READY_NB)},
        actions=[DeletePod],
        phase="Suspended",
        conditions={"Ready": ("False", "Suspended")},
    ),
    Case(
        "suspended without a pod stays so",
        nb({"image": "jupyter/base", "suspend": True}),
        {"secret_exists": True},
        phase="Suspended",
    ),
    Case(
        "pod ready",
        READY_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                READY_NB,
                image="jupyter/base",
                phase="Running",
                conditions=[{"type": "Ready", "status": "True"}],
            ),
        },
        phase="Ready",
        conditions={"Ready": ("True", "PodReady")},
    ),
    Case(
        "pod running, not ready",
        READY_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                READY_NB,
                image="jupyter/base",
                phase="Running",
                conditions=[{"type": "Ready", "status": "False"}],
            ),
        },
        phase="Starting",
        conditions={"Ready": ("False", "ContainersNotReady")},
    ),
    Case(
        "unschedulable",
        GPU_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                GPU_NB,
                image="img",
                phase="Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                    }
                ],
            ),
            # No autoscaler, and the one node has no GPU: nothing can ever fit.
            "scheduling": SchedulingObserved(nodes=(CPU_NODE,)),
        },
        phase="Starting",
        conditions={"Ready": ("False", "Unschedulable")},
    ),
    Case(
        "waiting for a node",
        GPU_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                GPU_NB,
                image="img",
                phase="Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                    }
                ],
            ),
            "scheduling": SchedulingObserved(
                events=(("TriggeredScaleUp", "pod triggered scale-up: [{l4 0->1 (max: 3)}]", "t1"),),
                status="",
                nodes=(CPU_NODE,),
            ),
        },
        phase="Starting",
        conditions={"Ready": ("False", "WaitingForNode")},
        requeue=2.0,
    ),
    Case(
        "image pull error",
        READY_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                READY_NB,
                image="jupyter/base",
                phase="Pending",
                containerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull"}}}],
            ),
        },
        phase="Starting",
        conditions={"Ready": ("False", "ErrImagePull")},
    ),
    Case(
        "an image the registry no longer has is built again",
        nb(upload()),
        {
            "built_image": IMAGE,
            "secret_exists": True,
            "pod": pod_for(
                nb(upload()),
                phase="Pending",
                containerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull", "message": MISSING}}}],
            ),
        },
        actions=[ForgetBuild, DeleteBuildJob, DeletePod],
        phase="Building",
        requeue=1.0,
        conditions={"Built": ("False", "ImageMissing"), "Ready": ("False", "WaitingForBuild")},
    ),
    Case(
        "the same, seen during the back-off (the message keeps the pull error)",
        nb(upload()),
        {
            "built_image": IMAGE,
            "secret_exists": True,
            "pod": pod_for(
                nb(upload()),
                phase="Pending",
                containerStatuses=[
                    {
                        "state": {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{IMAGE}": ErrImagePull: {MISSING}',
                            }
                        }
                    }
                ],
            ),
        },
        actions=[ForgetBuild, DeleteBuildJob, DeletePod],
        phase="Building",
        requeue=1.0,
        conditions={"Built": ("False", "ImageMissing")},
    ),
    Case(
        "a pull refused for credentials is not a missing image",
        nb(upload()),
        {
            "built_image": IMAGE,
            "secret_exists": True,
            "pod": pod_for(
                nb(upload()),
                phase="Pending",
                containerStatuses=[
                    {"state": {"waiting": {"reason": "ErrImagePull", "message": UNAUTHORIZED}}}
                ],
            ),
        },
        phase="Starting",
        conditions={"Built": ("True", "AlreadyBuilt"), "Ready": ("False", "ErrImagePull")},
    ),
    Case(
        "a missing prebuilt image is the user's to fix",
        READY_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                READY_NB,
                image="jupyter/base",
                phase="Pending",
                containerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull", "message": MISSING}}}],
            ),
        },
        phase="Starting",
        conditions={"Ready": ("False", "ErrImagePull")},
    ),
    Case(
        "the old build Job is deleted before the new build",
        nb(upload()),
        {
            "job": {
                **job("succeeded"),
                "metadata": {"name": f"nbd-build-{MD5}", "deletionTimestamp": "2026-01-01T11:59:59Z"},
            }
        },
        phase="Building",
        requeue=1.0,
        conditions={"Built": ("False", "Rebuilding")},
    ),
    Case(
        "image pull error of the seed init container",
        READY_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                READY_NB,
                image="jupyter/base",
                phase="Pending",
                initContainerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull"}}}],
                containerStatuses=[{"state": {"waiting": {"reason": "PodInitializing"}}}],
            ),
        },
        phase="Starting",
        conditions={"Ready": ("False", "ErrImagePull")},
    ),
    Case(
        "a failing seed init container",
        READY_NB,
        {
            "secret_exists": True,
            "pod": pod_for(
                READY_NB,
                image="jupyter/base",
                phase="Pending",
                initContainerStatuses=[
                    {"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}}
                ],
                containerStatuses=[{"state": {"waiting": {"reason": "PodInitializing"}}}],
            ),
        },
        phase="Starting",
        conditions={"Ready": ("False", "CrashLoopBackOff")},
    ),
    Case(
        "a changed spec replaces the pod",
        nb({"image": "jupyter/base", "port": 9000}),
        {"secret_exists": True, "pod": pod_for(READY_NB, image="jupyter/base")},
        actions=[DeletePod],
        phase="Starting",
        conditions={"Ready": ("False", "Restarting")},
        requeue=1.0,
    ),
    Case(
        "a terminating pod is waited for",
        READY_NB,
        {
            "secret_exists": True,
            "pod": {
                **pod_for(READY_NB, image="jupyter/base"),
                "metadata": {**pod_for(READY_NB)["metadata"], "deletionTimestamp": "2026-01-01T11:59:59Z"},
            },
        },
        phase="Starting",
        requeue=1.0,
    ),
    Case(
        "a failed pod is recreated",
        READY_NB,
        {"secret_exists": True, "pod": pod_for(READY_NB, image="jupyter/base", phase="Failed")},
        actions=[DeletePod],
        phase="Starting",
        conditions={"Ready": ("False", "PodFailed")},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    plan = decide(CONFIG, Observed(notebook=case.notebook, now=NOW, **case.observed))
    assert [type(a) for a in plan.actions] == case.actions
    assert plan.status["phase"] == case.phase
    got = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    for type_, expected in case.conditions.items():
        assert got[type_] == expected, (type_, plan.status["conditions"])
    for key, value in case.status.items():
        assert plan.status[key] == value, key
    assert plan.requeue_after == case.requeue
    for condition in plan.status["conditions"]:
        assert condition["message"]
        if condition["lastTransitionTime"] != "2025-12-31T00:00:00Z":
            assert condition["observedGeneration"] == 3


def test_actions_carry_what_the_executor_needs() -> None:
    plan = decide(CONFIG, Observed(notebook=nb(upload()), now=NOW, stored_md5=MD5))
    assert plan.actions == [CreateBuildJob(MD5, IMAGE)]
    plan = decide(CONFIG, Observed(notebook=nb(upload("r9")), now=NOW))
    assert plan.actions == [IssueUploadURL(MD5, "r9")]
    plan = decide(CONFIG, Observed(notebook=nb(upload()), now=NOW, job=job("succeeded"), secret_exists=True))
    assert plan.actions[0] == RecordBuild(MD5, IMAGE)
    assert isinstance(plan.actions[1], CreatePod)
    assert plan.actions[1].manifest["spec"]["containers"][0]["image"] == IMAGE


def test_build_failure_message_has_the_log_tail_and_survives_later_rounds() -> None:
    first = decide(
        CONFIG,
        Observed(
            notebook=nb(upload()),
            now=NOW,
            job=job("failed"),
            build_log_tail="#5 ERROR: failed to solve: process did not complete\n",
        ),
    )
    built = next(c for c in first.status["conditions"] if c["type"] == "Built")
    assert "failed to solve" in built["message"]
    assert f"nbd-build-{MD5}" in built["message"]
    # Next round the log is not read again: the message is kept from the status.
    again = decide(CONFIG, Observed(notebook=nb(upload(), first.status), now=NOW, job=job("failed")))
    assert next(c for c in again.status["conditions"] if c["type"] == "Built") == built


def test_unschedulable_message_is_the_schedulers() -> None:
    case = next(c for c in CASES if c.id == "unschedulable")
    plan = decide(CONFIG, Observed(notebook=case.notebook, now=NOW, **case.observed))
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith(
        "No node can run the pod and the cluster has no autoscaler to add one "
        "(0/1 nodes are available: 1 Insufficient nvidia.com/gpu.); no node of the cluster has a GPU."
    )
    assert "ask for fewer GPUs" in ready["message"]


def test_a_second_round_changes_nothing() -> None:
    """Deciding from its own result yields the same status: no write loop."""
    notebook = nb(upload(), {"upload": VALID_URL})
    first = decide(CONFIG, Observed(notebook=notebook, now=NOW, job=job("running")))
    second = decide(CONFIG, Observed(notebook=nb(upload(), first.status), now=NOW, job=job("running")))
    assert merge_patch(first.status, second.status) == {}


def test_transition_time_is_kept_while_the_status_stays() -> None:
    old = {"conditions": [cond("Uploaded", "True", "Stored")]}
    plan = decide(CONFIG, Observed(notebook=nb(upload(), old), now=NOW, job=job("running")))
    uploaded = next(c for c in plan.status["conditions"] if c["type"] == "Uploaded")
    assert uploaded["lastTransitionTime"] == "2025-12-31T00:00:00Z"
    built = next(c for c in plan.status["conditions"] if c["type"] == "Built")
    assert built["lastTransitionTime"] == "2026-01-01T12:00:00Z"


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {}, {}),
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1}, {}, {"a": None}),
        ({"u": {"url": "x", "id": "r"}}, {"u": {"id": "r", "md5": "m"}}, {"u": {"url": None, "md5": "m"}}),
        ({"c": [1, 2]}, {"c": [1]}, {"c": [1]}),
        ({}, {"u": {"id": "r"}}, {"u": {"id": "r"}}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


def _failed_job(uid: str) -> dict[str, Any]:
    out = job("failed")
    out["metadata"]["uid"] = uid
    return out


def _built(plan: Any) -> dict[str, Any]:
    return dict(next(c for c in plan.status["conditions"] if c["type"] == "Built"))


def test_a_failed_build_stays_failed_for_its_request_and_a_new_request_retries_it() -> None:
    first = decide(
        CONFIG, Observed(notebook=nb(upload("r1")), now=NOW, job=_failed_job("j1"), build_log_tail="x")
    )
    assert (first.status["phase"], _built(first)["reason"]) == ("Failed", "BuildFailed")
    assert first.status["build"]["failedJobUID"] == "j1" and first.status["build"]["failedRequestID"] == "r1"
    # The same request looks again: still failed, nothing deleted.
    again = decide(CONFIG, Observed(notebook=nb(upload("r1"), first.status), now=NOW, job=_failed_job("j1")))
    assert again.actions == [] and _built(again)["reason"] == "BuildFailed"
    # A new launch (a new request) of the same content: the failed Job goes, the build starts again.
    retry = decide(CONFIG, Observed(notebook=nb(upload("r2"), first.status), now=NOW, job=_failed_job("j1")))
    assert retry.actions == [DeleteBuildJob(MD5)] and retry.status["phase"] == "Building"
    built = _built(retry)
    assert built["reason"] == "RetryingFailedBuild"
    assert built["message"] == (
        f"Retrying the failed build of context {MD5}: Job nbd-build-{MD5} failed for request r1; "
        "building again for request r2."
    )
    deleting = _failed_job("j1")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    waiting = decide(CONFIG, Observed(notebook=nb(upload("r2"), retry.status), now=NOW, job=deleting))
    assert waiting.actions == [] and _built(waiting)["reason"] == "RetryingFailedBuild"
    rebuilt = decide(CONFIG, Observed(notebook=nb(upload("r2"), waiting.status), now=NOW, stored_md5=MD5))
    assert (
        rebuilt.actions == [CreateBuildJob(MD5, IMAGE)] and _built(rebuilt)["reason"] == "RetryingFailedBuild"
    )
    # That build fails too: it is request r2's failure now, and it stays.
    second = decide(
        CONFIG,
        Observed(
            notebook=nb(upload("r2"), rebuilt.status), now=NOW, job=_failed_job("j2"), build_log_tail="y"
        ),
    )
    assert second.actions == [] and _built(second)["reason"] == "BuildFailed"
    assert second.status["build"]["failedRequestID"] == "r2"
    # A failure seen first by a later request is that request's own.
    late = decide(
        CONFIG, Observed(notebook=nb(upload("r3")), now=NOW, job=_failed_job("j3"), build_log_tail="z")
    )
    assert late.actions == [] and late.status["build"]["failedRequestID"] == "r3"


def test_rebuild_forgets_the_record_and_builds_once_per_request_without_the_cache() -> None:
    spec = upload("r5", rebuild="r5")
    first = decide(CONFIG, Observed(notebook=nb(spec), now=NOW, built_image=IMAGE, job=job("succeeded")))
    assert first.actions == [ForgetBuild(MD5), DeleteBuildJob(MD5)]
    assert _built(first)["reason"] == "RebuildRequested" and first.status["phase"] == "Building"
    created = decide(CONFIG, Observed(notebook=nb(spec, first.status), now=NOW, stored_md5=MD5))
    assert created.actions == [CreateBuildJob(MD5, IMAGE, fresh=True)]
    assert created.status["build"]["rebuiltRequestID"] == "r5"
    running = decide(CONFIG, Observed(notebook=nb(spec, created.status), now=NOW, job=job("running")))
    assert running.actions == [] and _built(running)["reason"] == "RebuildRequested"
    done = decide(
        CONFIG, Observed(notebook=nb(spec, running.status), now=NOW, job=job("succeeded"), secret_exists=True)
    )
    assert type(done.actions[0]) is RecordBuild and _built(done)["reason"] == "Built"
    # Recorded again: the same request asks for nothing more.
    later = decide(
        CONFIG, Observed(notebook=nb(spec, done.status), now=NOW, built_image=IMAGE, secret_exists=True)
    )
    assert not any(isinstance(a, (ForgetBuild, DeleteBuildJob)) for a in later.actions)
    # A rebuild that names another request than the upload's is stale: ignored.
    stale = decide(CONFIG, Observed(notebook=nb(upload("r6", rebuild="r5")), now=NOW, built_image=IMAGE))
    assert not any(isinstance(a, (ForgetBuild, DeleteBuildJob)) for a in stale.actions)


def test_a_build_pod_that_cannot_start_says_why_and_is_looked_at_again_soon() -> None:
    problem = 'ErrImagePull: Failed to pull image "moby/buildkit:v0": not found (container build)'
    plan = decide(
        CONFIG,
        Observed(
            notebook=nb(upload()),
            now=NOW,
            job=job("running"),
            build_pod_problem=problem,
            build_pod_pending=True,
        ),
    )
    built = _built(plan)
    assert built["reason"] == "BuildNotStarting" and problem in built["message"]
    assert plan.status["phase"] == "Building" and plan.requeue_after == 2.0
    started = decide(CONFIG, Observed(notebook=nb(upload(), plan.status), now=NOW, job=job("running")))
    assert _built(started)["reason"] == "Building" and started.requeue_after is None
