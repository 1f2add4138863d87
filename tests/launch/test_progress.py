"""Pure readings of controller status: stale status is ignored, failures name what to do."""

from __future__ import annotations

from typing import Any

import pytest

from nbd.events import PodStatus
from nbd.launch import progress as prog


def _nb(generation: int | None, observed: int | None, ready: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "n"}
    if generation is not None:
        meta["generation"] = generation
    status: dict[str, Any] = {"conditions": [ready] if ready else []}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    "generation, observed, current",
    [(None, None, True), (1, None, False), (2, 1, False), (2, 2, True), (2, 3, True)],
)
def test_is_current(generation: int | None, observed: int | None, current: bool) -> None:
    assert prog.is_current(_nb(generation, observed)) is current


UNSCHEDULABLE = PodStatus(
    pod="n-notebook", phase="Pending", reason="Unschedulable", message="Insufficient nvidia.com/gpu"
)


@pytest.mark.parametrize(
    ("ready", "wait"),
    [
        (None, None),
        ({"type": "Ready", "status": "False", "reason": "Starting"}, None),
        (
            {
                "type": "Ready",
                "status": "False",
                "reason": "WaitingForNode",
                "message": "Waiting for a node with 1 nvidia.com/gpu (nvidia-l4): the cluster is scaling up.",
            },
            "waiting for a node with 1 nvidia.com/gpu (nvidia-l4): the cluster is scaling up",
        ),
    ],
)
def test_node_wait(ready: dict[str, Any] | None, wait: str | None) -> None:
    assert prog.node_wait(_nb(1, 1, ready)) == wait


@pytest.mark.parametrize(
    ("seconds", "said"), [(0, "0s"), (45.9, "45s"), (60, "1m"), (80, "1m20s"), (3720, "1h2m")]
)
def test_duration(seconds: float, said: str) -> None:
    assert prog.duration(seconds) == said


@pytest.mark.parametrize(
    "ready, pod, reason",
    [
        (None, None, None),
        # An unschedulable pod alone is a wait (GPU pools scale from zero): the controller decides.
        ({"type": "Ready", "status": "False", "reason": "Starting"}, UNSCHEDULABLE, None),
        ({"type": "Ready", "status": "False", "reason": "WaitingForNode"}, UNSCHEDULABLE, None),
        # The controller is replacing the pod: its verdict is about the previous spec's.
        ({"type": "Ready", "status": "False", "reason": "Restarting"}, UNSCHEDULABLE, None),
        (
            {"type": "Ready", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"},
            None,
            "Unschedulable",
        ),
        (None, PodStatus(pod="p", phase="Pending", reason="ErrImagePull"), "ErrImagePull"),
        (None, PodStatus(pod="p", phase="Pending", reason="ContainerCreating"), None),
    ],
)
def test_start_failure(ready: dict[str, Any] | None, pod: PodStatus | None, reason: str | None) -> None:
    failure = prog.start_failure(_nb(1, 1, ready), pod)
    assert (failure.reason if failure else None) == reason
    if failure is not None and reason == "Unschedulable":
        assert "--gpus" in failure.message


@pytest.mark.parametrize(
    "message, tail, summary, quoted",
    [
        (
            "The build in Job nbd-build-x failed. Last lines of its log:\nerror: boom\nexit 3\n"
            "Fix the Dockerfile or context and launch again (a new context gets a new build).",
            [],
            "the build in Job nbd-build-x failed",
            ("error: boom", "exit 3"),
        ),
        (
            "The build in Job j failed; see the log of its pod.",
            ["streamed"],
            "the build in Job j failed; see the log of its pod",
            ("streamed",),
        ),
        ("", [], "see the build log", ()),
    ],
)
def test_build_failure(message: str, tail: list[str], summary: str, quoted: tuple[str, ...]) -> None:
    state = prog.BuildState(done=False, failed=True, reason="BuildFailed", message=message, image="", job="")
    failure = prog.build_failure(state, tail)
    assert failure.reason == "BuildFailed"
    assert f"({summary})" in failure.message
    assert failure.log_tail == quoted
    assert "\n" not in failure.message


def _uploaded(request_id: str, reason: str) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "upload": {"requestID": request_id},
            "conditions": [{"type": "Uploaded", "status": "False", "reason": reason, "message": "m"}],
        },
    }


@pytest.mark.parametrize(
    "notebook, request_id, reason",
    [
        (_uploaded("r1", "MD5Mismatch"), "r1", "MD5Mismatch"),
        # The mismatch of an earlier request is not this launch's failure.
        (_uploaded("r1", "MD5Mismatch"), "r2", None),
        (_uploaded("r1", "WaitingForUpload"), "r1", None),
        ({"status": {}}, "r1", None),
    ],
)
def test_upload_failure(notebook: dict[str, Any], request_id: str, reason: str | None) -> None:
    failure = prog.upload_failure(notebook, request_id)
    assert (failure.reason if failure else None) == reason


def _built(reason: str, generation: int = 2, observed: int = 2, md5: str = "a" * 32) -> dict[str, Any]:
    return {
        "metadata": {"name": "n", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "build": {"md5": md5},
            "conditions": [
                {"type": "Built", "status": "False", "reason": reason, "message": f"{reason} says"}
            ],
        },
    }


@pytest.mark.parametrize(
    "notebook, notice",
    [
        (_built("RetryingFailedBuild"), ("RetryingFailedBuild says", False)),
        (_built("RebuildRequested"), ("RebuildRequested says", False)),
        (_built("BuildNotStarting"), ("BuildNotStarting says", True)),
        (_built("FailedCreate"), ("FailedCreate says", True)),
        (_built("Building"), None),
        (_built("BuildNotStarting", generation=3), None),  # of the last spec: not said
        (_built("BuildNotStarting", md5="b" * 32), None),  # of another context
    ],
)
def test_build_notice(notebook: dict[str, Any], notice: tuple[str, bool] | None) -> None:
    assert prog.build_notice(notebook, "a" * 32) == notice
