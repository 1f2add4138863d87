"""Reading the controller's answers: pure functions from Notebook and Pod objects to launch facts.

Like kubespawner's progress messages, these turn cluster state into what a user needs to read:
whether the upload was answered, whether the build is done or failed (with the log tail), what a
starting pod is waiting on (a node the autoscaler adds), and when waiting is pointless (no node
and no pool can ever run the pod, an image that cannot be pulled). No I/O: tested by table.

A pod the scheduler could not place is not a failure by itself: GPU pools scale from zero. The
controller decides (cluster/nbd_controller/scheduling.py) and says so in the Ready condition:
REASON_WAITING_FOR_NODE while a node may come, REASON_UNSCHEDULABLE once none will.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbd.events import Failure, PodStatus
from nbdcontract import (
    REASON_CLAIM_MISSING,
    REASON_UNSCHEDULABLE,
    REASON_WAITING_FOR_NODE,
    REASON_WORKSPACE_PENDING,
    REASON_WORKSPACE_SIZE,
)

# Ready reasons about the pod's claims: the launch ends with the controller's message (the
# controller keeps looking, so a claim created or a class fixed later lets the notebook start).
CLAIM_REASONS = (REASON_CLAIM_MISSING, REASON_WORKSPACE_PENDING, REASON_WORKSPACE_SIZE)

# Pod waiting reasons after which the launch stops waiting: the user has to change something.
FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
}


@dataclass(frozen=True)
class UploadAnswer:
    """The controller's answer to an upload request: a URL to PUT to, or "already stored"."""

    request_id: str
    signed_url: str = ""
    stored: bool = False
    expires_at: str = ""


def upload_answer(notebook: dict[str, Any], request_id: str, md5: str) -> UploadAnswer | None:
    """The answer to request `request_id`, once the controller wrote it to status.upload."""
    upload = (notebook.get("status") or {}).get("upload") or {}
    if upload.get("requestID") != request_id:
        built = build_state(notebook, md5)
        if built is not None and built.done:
            # Built before: the controller may skip the upload answer entirely.
            return UploadAnswer(request_id, stored=True)
        return None
    if upload.get("storedMD5") == md5:
        return UploadAnswer(request_id, stored=True)
    if upload.get("signedURL"):
        return UploadAnswer(
            request_id, signed_url=str(upload["signedURL"]), expires_at=str(upload.get("expiresAt") or "")
        )
    return None


def is_current(notebook: dict[str, Any]) -> bool:
    """Whether the controller's status describes the Notebook's current spec.

    After a relaunch changed the spec, the status (a Ready=False/Unschedulable of the old GPU
    request, a Ready=True of the old pod) is stale until the controller observed the new generation.
    """
    generation = (notebook.get("metadata") or {}).get("generation")
    observed = (notebook.get("status") or {}).get("observedGeneration")
    if generation is None:
        return True
    return isinstance(observed, int) and observed >= int(generation)


def condition(notebook: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (notebook.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


@dataclass(frozen=True)
class BuildState:
    done: bool
    failed: bool
    reason: str
    message: str
    image: str
    job: str


def build_state(notebook: dict[str, Any], md5: str) -> BuildState | None:
    """Where the build of context `md5` is, or None while the controller has not said."""
    status = notebook.get("status") or {}
    build = status.get("build") or {}
    cond = condition(notebook, "Built")
    if cond is None:
        return None
    if build.get("md5") and build.get("md5") != md5:
        return None  # status of an earlier context
    ok = cond.get("status") == "True"
    reason = str(cond.get("reason") or "")
    failed = not ok and reason in ("BuildFailed", "MD5Mismatch", "InvalidSpec", "BuildForbidden")
    return BuildState(
        done=ok,
        failed=failed,
        reason=reason,
        message=str(cond.get("message") or ""),
        image=str(build.get("image") or ""),
        job=str(build.get("job") or ""),
    )


# Built reasons a person waiting for the build should read as they come: a retry of a failed
# build, a forced rebuild, a build pod the cluster does not start (and says why).
BUILD_NOTICES = {
    "RetryingFailedBuild": False,
    "RebuildRequested": False,
    "BuildNotStarting": True,
    "FailedCreate": True,
}


def build_notice(notebook: dict[str, Any], md5: str) -> tuple[str, bool] | None:
    """(message, is a warning) of the current Built condition when it is one of BUILD_NOTICES."""
    if not is_current(notebook):
        return None
    state = build_state(notebook, md5)
    if state is None or state.reason not in BUILD_NOTICES or not state.message:
        return None
    return state.message, BUILD_NOTICES[state.reason]


def upload_failure(notebook: dict[str, Any], request_id: str) -> Failure | None:
    """A failure the controller reported for our upload (e.g. the stored bytes do not match).

    Only an answer to `request_id` counts: an MD5Mismatch of an earlier request stays in the
    conditions until the controller looked at the new one.
    """
    if ((notebook.get("status") or {}).get("upload") or {}).get("requestID") != request_id:
        return None
    cond = condition(notebook, "Uploaded")
    if cond is None or cond.get("status") == "True":
        return None
    if cond.get("reason") in ("MD5Mismatch", "UploadMissing", "InvalidSpec", "StorageError"):
        return Failure(str(cond["reason"]), str(cond.get("message") or "the upload was refused"))
    return None


def pod_status(pod: dict[str, Any]) -> PodStatus:
    """What a pod is doing, in the words a user can act on."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    )
    reason, message = "", ""
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "PodScheduled" and c.get("status") == "False":
            reason, message = str(c.get("reason") or "Unschedulable"), str(c.get("message") or "")
    if not reason:
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = ((cs or {}).get("state") or {}).get("waiting")
            if waiting:
                reason, message = str(waiting.get("reason") or ""), str(waiting.get("message") or "")
                break
    return PodStatus(
        pod=str(meta.get("name") or ""), phase=phase, reason=reason, message=message, ready=ready
    )


def start_failure(notebook: dict[str, Any], pod: PodStatus | None) -> Failure | None:
    """A reason to stop waiting for the notebook to start, with what to do about it."""
    cond = condition(notebook, "Ready")
    replacing = cond is not None and cond.get("reason") == "Restarting"  # the pod seen may be the old one
    if (
        cond is not None
        and cond.get("status") == "False"
        and cond.get("reason") == REASON_UNSCHEDULABLE
        and not replacing
    ):
        message = str(cond.get("message") or "no node can run it").strip()
        if "--gpus" not in message:  # a controller of an earlier version says no more than why
            message = (
                f"{message.rstrip('.')}; ask for fewer GPUs (--gpus) or another --gpu-type, "
                "or ask your admin for capacity"
            )
        return Failure(
            REASON_UNSCHEDULABLE,
            f"the notebook pod cannot be scheduled: {message[:1].lower()}{message[1:]}",
        )
    if cond is not None and cond.get("status") == "False" and cond.get("reason") in CLAIM_REASONS:
        return Failure(str(cond["reason"]), str(cond.get("message") or cond["reason"]).strip())
    if pod is not None and pod.reason in FATAL_WAITING:
        hint = {
            "ErrImagePull": "check the image name (--image) and that the cluster can pull it",
            "ImagePullBackOff": "check the image name (--image) and that the cluster can pull it",
            "InvalidImageName": "fix the image name (--image)",
            "CrashLoopBackOff": "the notebook server keeps exiting; see `nbctl logs NAME`",
            "CreateContainerConfigError": "see `kubectl describe pod` for the missing configuration",
        }[pod.reason]
        if pod.reason == "CreateContainerConfigError" and "runAsNonRoot" in (pod.message or ""):
            hint = (
                "the namespace admits only non-root containers (Pod Security `restricted`): add "
                "`USER 1000` (a numeric non-root user) to the Dockerfile, or use a namespace at `baseline`"
            )
        detail = f": {pod.message}" if pod.message else ""
        return Failure(pod.reason, f"the notebook pod is in {pod.reason}{detail}; {hint}")
    return None


def node_wait(notebook: dict[str, Any]) -> str | None:
    """What the notebook waits for while its pod has no node ("waiting for a node with 1
    nvidia.com/gpu (nvidia-l4): the cluster is scaling up"), or None when it does not wait for one."""
    cond = condition(notebook, "Ready")
    if cond is None or cond.get("status") != "False" or cond.get("reason") != REASON_WAITING_FOR_NODE:
        return None
    message = str(cond.get("message") or "Waiting for a node.").strip().rstrip(".")
    return message[:1].lower() + message[1:]


def duration(seconds: float) -> str:
    """1m20s, 45s, 1h2m: how long a person has been waiting."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


def build_failure(state: BuildState, log_tail: list[str], ref: str = "NAME") -> Failure:
    """The failure of a build; `ref` is how `nbctl logs` names the session."""
    if state.reason == "MD5Mismatch":
        return Failure("MD5Mismatch", state.message + "; relaunch to upload the context again")
    if state.reason in ("InvalidSpec", "BuildForbidden"):
        return Failure(state.reason, state.message)
    summary, tail_in_message = _split_build_message(state.message)
    return Failure(
        "BuildFailed",
        f"the image build failed ({summary}); fix the Dockerfile and relaunch "
        f"(`nbctl logs {ref} --build` shows the whole log)",
        tuple(log_tail or tail_in_message),
    )


_TAIL_INTRO = "Last lines of its log:"


def _split_build_message(message: str) -> tuple[str, list[str]]:
    """The controller's BuildFailed message → (one-line summary, the log lines it quotes).

    The message reads "The build in Job J failed. Last lines of its log:\n<lines>\nFix the ...";
    the summary is its first sentence, the tail the quoted lines without the closing hint.
    """
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "see the build log", []
    first = lines[0].replace(_TAIL_INTRO, "").strip().rstrip(".").strip()
    tail = [line for line in lines[1:] if not line.startswith("Fix the Dockerfile")]
    return (first[:1].lower() + first[1:]) if first else "see the build log", tail
