"""What to do about one Notebook or Run, decided from what was observed: no I/O.

`decide(config, observed)` returns a `Plan`: the actions that move the cluster toward the
Notebook's spec and the status that describes where it stands. The reconciler gathers `Observed`
and executes the plan; every action is idempotent (create-if-absent, delete-if-present), so running
a plan twice, or a plan made from slightly stale observations, is harmless. The order of the
pipeline is upload → verify → build → record → pod, and a later step never starts before the
earlier one's outcome is known: in particular a build only starts after the stored object's MD5 was
seen to equal the spec's.

A Run (`decide_run(config, RunObserved)`) goes through the same upload → verify → build → record
steps (`_resolve_image`, the very code a Notebook's decision runs), then to its outputs claim, its
headless Service (more than one node) and its Job; the Job's conditions and pods give its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nbdcontract import (
    ANNOTATION_COMPLETION_INDEX,
    ANNOTATION_FETCH_REQUEST,
    ANNOTATION_IDLE_STOPPED,
    CONDITION_FINISHED,
    CONDITION_STARTED,
    DEFAULT_PORT,
    DNS_LABEL_MAX,
    REASON_IDLE_STOPPED,
    REASON_WAITING_FOR_NODE,
    RUN_CONTAINER,
    RUN_NODES_DEFAULT,
    RUN_REASONS_TERMINAL,
    valid_run_name,
)

from .conditions import get_condition, rfc3339, set_condition
from .config import Config
from .idle import IdleObserved, decide_idle
from .manifests import (
    ANNOTATION_SPEC_HASH,
    READER_SECONDS,
    notebook_pod,
    outputs_claim,
    outputs_reader_pod,
    run_job,
    run_service,
)
from .naming import (
    build_job_name,
    image_ref,
    object_name,
    outputs_claim_name,
    outputs_reader_name,
    pod_name,
    rank0_address,
    run_job_name,
    run_service_name,
    token_secret_name,
)
from .scheduling import SchedulingObserved, verdict

__all__ = [
    "Observed",
    "Plan",
    "decide",
    "job_outcome",
    "IssueUploadURL",
    "DeleteObject",
    "CreateBuildJob",
    "RecordBuild",
    "ForgetBuild",
    "DeleteBuildJob",
    "CreateTokenSecret",
    "CreatePod",
    "DeletePod",
    "IdleStop",
    "ClearIdleStop",
    "CreateObject",
    "CreateRunJob",
    "DeleteRunJob",
    "Action",
    "BuildObserved",
    "RunObserved",
    "decide_run",
    "run_job_outcome",
]

# While waiting for an upload, the store is looked at this often even if no one marks it done.
UPLOAD_POLL_SECONDS = 5.0
# A URL is re-signed when less than this is left of it: an uploader must have time to use it.
URL_RENEW_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class IssueUploadURL:
    md5: str
    request_id: str


@dataclass(frozen=True)
class DeleteObject:
    md5: str


@dataclass(frozen=True)
class CreateBuildJob:
    md5: str
    image: str
    # A forced rebuild: take nothing from the layer cache.
    fresh: bool = False


@dataclass(frozen=True)
class RecordBuild:
    md5: str
    image: str


@dataclass(frozen=True)
class ForgetBuild:
    """Drop the record that `md5` was built: its image is gone from the registry."""

    md5: str


@dataclass(frozen=True)
class DeleteBuildJob:
    md5: str


@dataclass(frozen=True)
class CreateTokenSecret:
    name: str


@dataclass(frozen=True)
class CreatePod:
    manifest: dict[str, Any] = field(hash=False, compare=True)


@dataclass(frozen=True)
class DeletePod:
    name: str


@dataclass(frozen=True)
class IdleStop:
    """Suspend the notebook (spec.suspend) for `idle_seconds` of idleness, marking it as an idle stop."""

    idle_seconds: int


@dataclass(frozen=True)
class ClearIdleStop:
    """Remove the idle-stop mark of a notebook that was started again."""


@dataclass(frozen=True)
class CreateObject:
    """Create-if-absent one of a Run's objects (its outputs claim, its headless Service)."""

    manifest: dict[str, Any] = field(hash=False, compare=True)


@dataclass(frozen=True)
class CreateRunJob:
    manifest: dict[str, Any] = field(hash=False, compare=True)


@dataclass(frozen=True)
class DeleteRunJob:
    """Delete a Run's Job and, with it, its pods."""

    name: str


Action = (
    CreateObject
    | CreateRunJob
    | DeleteRunJob
    | IssueUploadURL
    | DeleteObject
    | CreateBuildJob
    | RecordBuild
    | ForgetBuild
    | DeleteBuildJob
    | CreateTokenSecret
    | CreatePod
    | DeletePod
    | IdleStop
    | ClearIdleStop
)

# How container runtimes say that an image reference does not exist in its registry (containerd,
# CRI-O, Docker). Only this, never an auth or network failure, means "build it again".
_IMAGE_NOT_FOUND = ("not found", "manifest unknown", "code = NotFound")


@dataclass(frozen=True, kw_only=True)
class BuildObserved:
    """What the reconciler saw of the shared build path of one Notebook or Run.

    `stored_md5` is the MD5 of `<prefix>/<md5>.tar.gz` in the store (None: absent); it is only
    looked at when the context is neither built nor being built. `build_log_tail` is only fetched
    for a failed build Job whose failure is not yet reported. `build_create_error` is the latest
    `FailedCreate` event of a build Job that has no pod (admission or a quota refused it).
    """

    now: datetime
    built_image: str | None = None
    stored_md5: str | None = None
    job: dict[str, Any] | None = None
    build_log_tail: str | None = None
    build_create_error: str | None = None
    # Why the pod of a running build Job does not start (an image pull of the builder, a missing
    # Secret, no node), and whether that pod is still Pending at all.
    build_pod_problem: str | None = None
    build_pod_pending: bool = False
    # The namespace's Pod Security label (`pod-security.kubernetes.io/enforce`, or `warn` when
    # stricter): "restricted" makes notebook and run pods pass that level.
    pod_security: str = "privileged"


@dataclass(frozen=True, kw_only=True)
class Observed(BuildObserved):
    """What the reconciler saw of one Notebook and its dependents. `pod_create_error` is what the
    API server answered when this round's notebook pod was refused."""

    notebook: dict[str, Any]
    secret_exists: bool = False
    pod: dict[str, Any] | None = None
    pod_create_error: str | None = None
    # Gathered only while the pod has no node: the autoscaler's events on it, its status, the nodes.
    scheduling: SchedulingObserved | None = None
    # Gathered only for a Ready notebook with an idle stop: Jupyter's activity and nbd's.
    idle: IdleObserved | None = None


# A pod the cluster refused (quota, admission) is tried again this often; it may fit later.
REFUSED_RETRY_SECONDS = 10.0
# A build pod that is still Pending is looked at this often, so that why it does not start (an
# image pull, a missing Secret) shows within seconds.
BUILD_START_POLL_SECONDS = 2.0
# While a pod waits for a node, its Notebook or Run is looked at this often: the autoscaler's
# events on the pod (scaling up, or no pool fits) change nothing a watch would deliver.
NODE_WAIT_POLL_SECONDS = 2.0
# The Built reason while a failed build of earlier request is built again.
RETRYING = "RetryingFailedBuild"
# The Built reason of a build that spec.build.rebuild forced for unchanged content.
REBUILD_REQUESTED = "RebuildRequested"


@dataclass
class Plan:
    actions: list[Action]
    status: dict[str, Any]
    requeue_after: float | None = None


def restricted_pods(config: Config, observed: BuildObserved) -> bool:
    """Whether notebook and run pods are made to pass the `restricted` Pod Security level."""
    if config.pod_security == "auto":
        return observed.pod_security == "restricted"
    return config.pod_security == "restricted"


def job_outcome(job: dict[str, Any]) -> str:
    """'succeeded', 'failed' or 'running'."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True":
            if condition.get("type") == "Complete":
                return "succeeded"
            if condition.get("type") == "Failed":
                return "failed"
    if status.get("succeeded"):
        return "succeeded"
    if status.get("failed"):
        return "failed"
    return "running"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class _Builder:
    """Accumulates conditions, actions and status fields during one decision."""

    def __init__(self, observed: BuildObserved, obj: dict[str, Any]) -> None:
        self.observed = observed
        self.obj = obj
        self.generation = int(obj["metadata"].get("generation") or 0)
        old = obj.get("status") or {}
        self.old = old
        self.conditions: list[dict[str, Any]] = list(old.get("conditions") or [])
        self.actions: list[Action] = []
        self.status: dict[str, Any] = {}
        self.requeue: float | None = None

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions, type_, ok, reason, message, generation=self.generation, now=self.observed.now
        )

    def requeue_in(self, seconds: float) -> None:
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def finish(self, phase: str) -> Plan:
        status = {"phase": phase, "observedGeneration": self.generation, **self.status}
        status["conditions"] = self.conditions
        return Plan(self.actions, status, self.requeue)


def _keep_retrying(b: _Builder, same_md5: bool) -> bool:
    """Keeps saying that this build is a retry of a failed one (or a forced rebuild) while it runs."""
    built = get_condition(b.conditions, "Built")
    if same_md5 and built is not None and built.get("reason") in (RETRYING, REBUILD_REQUESTED):
        b.condition("Built", False, str(built["reason"]), str(built.get("message")))
        return True
    return False


def _resolve_image(config: Config, b: _Builder) -> tuple[str | None, str | None]:
    """Runs the upload/build pipeline of a Notebook or a Run; returns (image, phase-if-not-ready)."""
    observed = b.observed
    notebook = b.obj
    spec = notebook["spec"]
    namespace = notebook["metadata"]["namespace"]
    if spec.get("image"):
        b.condition("Uploaded", True, "NotNeeded", "spec.image is set: nothing to upload.")
        b.condition("Built", True, "PrebuiltImage", f"Using the prebuilt image {spec['image']}.")
        return str(spec["image"]), None
    upload = (spec.get("build") or {}).get("upload")
    if not upload:
        message = "Set spec.image (a prebuilt image) or spec.build.upload (an uploaded context)."
        b.condition("Uploaded", False, "InvalidSpec", message)
        b.condition("Built", False, "InvalidSpec", message)
        return None, "Failed"
    md5 = str(upload["md5"])
    request_id = str(upload["requestID"])
    image = observed.built_image or image_ref(config.registry, namespace, md5)
    build_namespace, for_namespace = config.build_location(namespace)
    job_name = build_job_name(md5, for_namespace)
    b.status["build"] = {"md5": md5, "image": image}
    if for_namespace:
        b.status["build"]["namespace"] = build_namespace
    stored = {"requestID": request_id, "storedMD5": md5}
    previous_build = b.old.get("build") or {}
    same_md5 = previous_build.get("md5") == md5
    # What this Notebook remembers of its build: the failed Job it reported (by uid, with the request
    # that saw it fail) and the request whose forced rebuild it started.
    for key in ("failedJobUID", "failedRequestID", "rebuiltRequestID"):
        if same_md5 and previous_build.get(key):
            b.status["build"][key] = previous_build[key]
    rebuild = (spec.get("build") or {}).get("rebuild") == request_id and b.status["build"].get(
        "rebuiltRequestID"
    ) != request_id
    job_meta = (observed.job or {}).get("metadata") or {}

    if rebuild and (
        observed.built_image or (observed.job is not None and not job_meta.get("deletionTimestamp"))
    ):
        # Asked to build unchanged content again: forget the record and the old Job first.
        if observed.built_image:
            b.actions.append(ForgetBuild(md5))
        if observed.job is not None:
            b.actions.append(DeleteBuildJob(md5))
        b.status["upload"] = stored
        b.condition(
            "Built", False, REBUILD_REQUESTED, f"Building context {md5} again, as request {request_id} asked."
        )
        b.requeue_in(1.0)
        return None, "Building"

    if observed.built_image:
        b.status["upload"] = stored
        if previous_build.get("md5") == md5 and previous_build.get("job"):
            # This Notebook saw its build: keep naming the Job whose pod holds the build log.
            b.status["build"]["job"] = previous_build["job"]
            b.condition("Uploaded", True, "Stored", f"Context {md5} is stored and its MD5 verified.")
            b.condition("Built", True, "Built", f"Built and pushed {image} in Job {previous_build['job']}.")
            return image, None
        b.condition("Uploaded", True, "AlreadyBuilt", f"Context {md5} was built before: nothing to upload.")
        b.condition("Built", True, "AlreadyBuilt", f"Context {md5} was built before as {image}.")
        return image, None

    if observed.job is not None and job_meta.get("deletionTimestamp"):
        # The Job of a build whose image is gone, of a failed build being retried or of a forced
        # rebuild: a new build starts once it is deleted.
        b.status["upload"] = stored
        if not _keep_retrying(b, same_md5):
            b.condition("Built", False, "Rebuilding", f"Waiting for the old build Job {job_name} to go away.")
        b.requeue_in(1.0)
        return None, "Building"

    if observed.job is not None:
        b.status["upload"] = stored
        b.status["build"]["job"] = job_name
        b.condition("Uploaded", True, "Stored", f"Context {md5} is stored and its MD5 verified.")
        outcome = job_outcome(observed.job)
        if outcome == "succeeded":
            b.actions.append(RecordBuild(md5, image))
            b.condition("Built", True, "Built", f"Built and pushed {image} in Job {job_name}.")
            return image, None
        if outcome == "failed":
            uid = str(job_meta.get("uid") or "")
            failed_for = b.status["build"].get("failedRequestID")
            if b.status["build"].get("failedJobUID") == uid and failed_for and failed_for != request_id:
                # A new launch of content whose build failed: that failure belonged to an earlier
                # request. Build again (the failure may have been the registry, a network, a flaky
                # RUN); this request's own failure, if it comes, stays.
                b.actions.append(DeleteBuildJob(md5))
                b.condition(
                    "Built",
                    False,
                    RETRYING,
                    f"Retrying the failed build of context {md5}: Job {job_name} failed for request "
                    f"{failed_for}; building again for request {request_id}.",
                )
                b.requeue_in(1.0)
                return None, "Building"
            if b.status["build"].get("failedJobUID") != uid or not failed_for:
                # The first look at this failure: it is this request's.
                b.status["build"]["failedJobUID"] = uid
                b.status["build"]["failedRequestID"] = request_id
            previous = get_condition(b.conditions, "Built")
            hint = "\nFix the Dockerfile or context and launch again (a launch after a failure builds again)."
            if observed.build_log_tail is not None:
                tail = observed.build_log_tail.strip()
                message = f"The build in Job {job_name} failed. Last lines of its log:\n{tail}{hint}"
            elif previous is not None and previous.get("reason") == "BuildFailed":
                message = str(previous.get("message"))
            else:
                message = f"The build in Job {job_name} failed; see the log of its pod.{hint}"
            b.condition("Built", False, "BuildFailed", message)
            return None, "Failed"
        if observed.build_create_error and "violates PodSecurity" in observed.build_create_error:
            # No quota frees up for this: the namespace's level refuses what builders need.
            b.condition(
                "Built",
                False,
                "BuildForbidden",
                f"The Pod Security level of namespace {build_namespace} refuses the build pod: "
                f"{observed.build_create_error}. The builders (BuildKit rootless, kaniko) need Unconfined "
                "seccomp and AppArmor profiles: label the namespace pod-security.kubernetes.io/enforce="
                "privileged (or have builds run in another one, NBD_BUILD_NAMESPACE), or launch a "
                "prebuilt image (--image).",
            )
            b.requeue_in(REFUSED_RETRY_SECONDS)
            return None, "Failed"
        if observed.build_create_error:
            b.condition(
                "Built",
                False,
                "FailedCreate",
                f"The cluster refused the pod of build Job {job_name}: {observed.build_create_error}. "
                f"Free or raise the quota of namespace {build_namespace} (or ask an admin); the build starts by "
                "itself once its pod is admitted.",
            )
            b.requeue_in(REFUSED_RETRY_SECONDS)
            return None, "Failed"
        if observed.build_pod_problem:
            b.condition(
                "Built",
                False,
                "BuildNotStarting",
                f"The pod of build Job {job_name} cannot start: {observed.build_pod_problem}. The build "
                "starts by itself once this is fixed (ask an admin about the builder image, the registry "
                "Secret or the nodes).",
            )
        else:
            if not _keep_retrying(b, same_md5):
                b.condition("Built", False, "Building", f"Building {image} in Job {job_name}.")
        if observed.build_pod_pending:
            # Nothing about a pod that does not start changes the Job: look again soon.
            b.requeue_in(BUILD_START_POLL_SECONDS)
        return None, "Building"

    # Not built and not being built: the stored object decides.
    key = object_name(config.prefix, md5)
    if observed.stored_md5 == md5:
        b.status["upload"] = stored
        b.status["build"]["job"] = job_name
        b.condition("Uploaded", True, "Stored", f"Context {md5} is stored and its MD5 verified.")
        if not _keep_retrying(b, same_md5):
            b.condition("Built", False, "Building", f"Building {image} in Job {job_name}.")
        if rebuild:
            b.status["build"]["rebuiltRequestID"] = request_id
        b.actions.append(CreateBuildJob(md5, image, fresh=rebuild))
        return None, "Building"

    previous_upload = b.old.get("upload") or {}
    uploaded_cond = get_condition(b.conditions, "Uploaded")
    same_request = previous_upload.get("requestID") == request_id
    b.condition("Built", False, "WaitingForUpload", f"The build starts once context {md5} is uploaded.")
    if observed.stored_md5 is not None:
        # Never build content other than what the spec names: drop it, and wait for a new request.
        b.actions.append(DeleteObject(md5))
        b.status["upload"] = {"requestID": request_id}
        b.condition(
            "Uploaded",
            False,
            "MD5Mismatch",
            f"The uploaded context has MD5 {observed.stored_md5} but spec.build.upload.md5 is {md5}; "
            f"it was deleted and nothing was built. Upload again with a new spec.build.upload.requestID.",
        )
        return None, "Failed"
    if same_request and uploaded_cond is not None and uploaded_cond.get("reason") == "MD5Mismatch":
        b.status["upload"] = {"requestID": request_id}
        return None, "Failed"
    if (spec.get("build") or {}).get("uploaded") == request_id:
        b.status["upload"] = {"requestID": request_id}
        b.condition(
            "Uploaded",
            False,
            "UploadMissing",
            f"spec.build.uploaded says request {request_id} was uploaded, but no object {key} is "
            f"stored. Upload again with a new spec.build.upload.requestID.",
        )
        return None, "Failed"
    expires = _parse_time(previous_upload.get("expiresAt"))
    if (
        same_request
        and previous_upload.get("signedURL")
        and expires
        and expires - URL_RENEW_MARGIN > observed.now
    ):
        b.status["upload"] = {
            "requestID": request_id,
            "signedURL": previous_upload["signedURL"],
            "expiresAt": previous_upload["expiresAt"],
        }
        until = rfc3339(expires)
    else:
        # The executor fills signedURL and expiresAt in after signing.
        b.actions.append(IssueUploadURL(md5, request_id))
        b.status["upload"] = {"requestID": request_id}
        until = "its expiry"
    b.condition(
        "Uploaded",
        False,
        "AwaitingUpload",
        f"Waiting for context {md5} to be PUT to status.upload.signedURL (valid until {until}).",
    )
    b.requeue_in(UPLOAD_POLL_SECONDS)
    return None, "Uploading"


def _unscheduled(
    config: Config, pod: dict[str, Any], scheduling: SchedulingObserved | None
) -> tuple[str, str] | None:
    """(reason, message) of a pod the scheduler has not placed: waiting for a node, or never."""
    conditions = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    scheduled = conditions.get("PodScheduled")
    if scheduled is None or scheduled.get("status") != "False":
        return None
    reason = str(scheduled.get("reason") or "Unschedulable")
    message = str(scheduled.get("message") or "The scheduler found no node for the pod.")
    if reason != "Unschedulable":
        return reason, message
    found = verdict(config, pod, message, scheduling or SchedulingObserved(nodes=None))
    return found.reason, found.message


def _pod_state(
    config: Config, pod: dict[str, Any], port: int, scheduling: SchedulingObserved | None = None
) -> tuple[bool, str, str]:
    """(ready, reason, message) of a live notebook Pod, in terms a user can act on."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    unscheduled = _unscheduled(config, pod, scheduling)
    if unscheduled is not None:
        return False, unscheduled[0], unscheduled[1]
    ready = conditions.get("Ready")
    if ready is not None and ready.get("status") == "True":
        return True, "PodReady", f"Jupyter answers on port {port}."
    # The workdir's seed init container runs the notebook's image first: an image that cannot be
    # pulled, or a seed that keeps failing, shows there while the notebook container only waits.
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            return False, str(waiting["reason"]), str(waiting.get("message") or waiting["reason"])
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return (
                False,
                "ContainerExited",
                (
                    f"The notebook container exited with code {terminated.get('exitCode')}: "
                    f"{terminated.get('message') or terminated.get('reason') or 'see its log'}."
                ),
            )
    if status.get("phase") == "Running":
        return False, "ContainersNotReady", f"Waiting for Jupyter to answer on port {port}."
    return False, "Starting", "Waiting for the notebook pod to start."


def _image_missing(pod: dict[str, Any]) -> str | None:
    """The runtime's message when a container's image does not exist in the registry, else None."""
    status = pod.get("status") or {}
    # The seed init container runs the same image: a missing image shows there first.
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        message = str(waiting.get("message") or "")
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and any(
            marker in message for marker in _IMAGE_NOT_FOUND
        ):
            return message
    return None


def decide(config: Config, observed: Observed) -> Plan:
    """The plan for one Notebook (see the module docstring)."""
    b = _Builder(observed, observed.notebook)
    notebook = observed.notebook
    name = notebook["metadata"]["name"]
    spec = notebook["spec"]
    port = int(spec.get("port", DEFAULT_PORT))
    if len(name) > DNS_LABEL_MAX:
        message = "A Notebook name must be at most 63 characters (it is used as a label value)."
        b.condition("Ready", False, "InvalidName", message)
        return b.finish("Failed")

    image, phase = _resolve_image(config, b)
    pod = observed.pod
    live_pod = pod is not None and not (pod.get("metadata") or {}).get("deletionTimestamp")
    if image is None:
        # A new context replaces the running notebook only once it is built: until then no pod,
        # so that Ready never describes a pod running the old content.
        if live_pod:
            b.actions.append(DeletePod(pod_name(name)))
        reason = {"Failed": "NotBuilt", "Building": "WaitingForBuild"}.get(phase or "", "WaitingForUpload")
        b.condition("Ready", False, reason, "The notebook starts once its image is built.")
        return b.finish(phase or "Pending")

    b.status["image"] = image
    b.status["tokenSecret"] = token_secret_name(name)
    if not observed.secret_exists:
        b.actions.append(CreateTokenSecret(token_secret_name(name)))
    idle_mark = ((notebook["metadata"].get("annotations") or {}).get(ANNOTATION_IDLE_STOPPED)) or ""
    if spec.get("suspend"):
        if live_pod:
            b.actions.append(DeletePod(pod_name(name)))
        if idle_mark:
            b.condition(
                "Ready",
                False,
                REASON_IDLE_STOPPED,
                f"Stopped after {idle_mark} idle; launch it again to resume (its workspace is kept).",
            )
        else:
            b.condition(
                "Ready", False, "Suspended", "spec.suspend is true: set it to false to start the notebook."
            )
        return b.finish("Suspended")
    if idle_mark:
        b.actions.append(ClearIdleStop())

    desired = notebook_pod(config, notebook, image, restricted=restricted_pods(config, observed))
    b.status["pod"] = desired["metadata"]["name"]
    if pod is None and observed.pod_create_error:
        b.condition(
            "Ready",
            False,
            "FailedCreate",
            f"The cluster refused the notebook pod: {observed.pod_create_error}. Free or raise the quota "
            "(or ask an admin about the namespace's policy); the pod is tried again every "
            f"{REFUSED_RETRY_SECONDS:g} s.",
        )
        b.requeue_in(REFUSED_RETRY_SECONDS)
        return b.finish("Failed")
    if pod is None:
        b.actions.append(CreatePod(desired))
        b.condition("Ready", False, "Starting", "Creating the notebook pod.")
        return b.finish("Starting")
    if not live_pod:
        b.condition("Ready", False, "Restarting", "Waiting for the previous notebook pod to go away.")
        b.requeue_in(1.0)
        return b.finish("Starting")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_SPEC_HASH) != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
        b.actions.append(DeletePod(desired["metadata"]["name"]))
        b.condition("Ready", False, "Restarting", "The notebook spec changed: replacing the pod.")
        b.requeue_in(1.0)
        return b.finish("Starting")
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        b.actions.append(DeletePod(desired["metadata"]["name"]))
        b.condition("Ready", False, "PodFailed", "The notebook pod stopped; it is being recreated.")
        return b.finish("Starting")
    missing = _image_missing(pod) if observed.built_image else None
    if missing is not None:
        # A registry cleanup policy removed an image this namespace built: build it again from the
        # stored context rather than retry a pull that can never succeed.
        md5 = str(b.status["build"]["md5"])
        b.actions += [ForgetBuild(md5), DeleteBuildJob(md5), DeletePod(desired["metadata"]["name"])]
        b.condition(
            "Built",
            False,
            "ImageMissing",
            f"The registry no longer has {image}; building it again from context {md5}. ({missing})",
        )
        b.condition("Ready", False, "WaitingForBuild", "The notebook starts once its image is built.")
        b.requeue_in(1.0)
        return b.finish("Building")
    ready, reason, message = _pod_state(config, pod, port, observed.scheduling)
    b.condition("Ready", ready, reason, message)
    if reason == REASON_WAITING_FOR_NODE:
        b.requeue_in(NODE_WAIT_POLL_SECONDS)
    if ready and observed.idle is not None and observed.idle.stop_after > 0:
        verdict = decide_idle(observed.now, observed.idle)
        b.status["idle"] = verdict.status
        if verdict.stop:
            b.actions += [IdleStop(verdict.idle_seconds), DeletePod(pod_name(name))]
        else:
            b.requeue_in(config.idle_check_seconds)
    return b.finish("Ready" if ready else "Starting")


# --- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunObserved(BuildObserved):
    """What the reconciler saw of one Run: the build path (shared with Notebooks), its Job and the
    Job's pods, whether its outputs claim and Service exist, and its outputs reader pod.

    `run_create_error` is the API server's refusal of this round's Job (or the latest FailedCreate
    event of a Job without pods); `reader_create_error` its refusal of the reader pod."""

    run: dict[str, Any]
    run_job: dict[str, Any] | None = None
    run_pods: tuple[dict[str, Any], ...] = ()
    claim_exists: bool = False
    service_exists: bool = False
    reader: dict[str, Any] | None = None
    run_create_error: str | None = None
    reader_create_error: str | None = None
    # Gathered only while a rank's pod has no node (see Observed.scheduling).
    scheduling: SchedulingObserved | None = None


def run_job_outcome(job: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """('succeeded' | 'failed' | 'running', the deciding condition).

    Only the Job's conditions decide: with a backoffLimit, `status.failed > 0` may be a pod that
    will be replaced. FailureTarget and SuccessCriteriaMet come first, once the outcome is known
    (the remaining pods are then being terminated)."""
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for wanted, outcome in (("Failed", "failed"), ("FailureTarget", "failed"), ("Complete", "succeeded")):
        for condition in conditions:
            if condition.get("type") == wanted:
                return outcome, condition
    for condition in conditions:
        if condition.get("type") == "SuccessCriteriaMet":
            return "succeeded", condition
    return "running", None


def _run_container(pod: dict[str, Any]) -> dict[str, Any]:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == RUN_CONTAINER:
            return dict(container)
    return {}


def _rank_of(pod: dict[str, Any], nodes: int) -> int | None:
    if nodes == 1:
        return 0
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    raw = annotations.get(ANNOTATION_COMPLETION_INDEX, labels.get(ANNOTATION_COMPLETION_INDEX))
    try:
        return int(str(raw))
    except ValueError:
        return None


def _ranks(pods: tuple[dict[str, Any], ...], nodes: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Per rank, its newest pod (a disrupted pod is replaced by another of the same index), as
    (status entry, pod), in rank order."""
    newest: dict[int, dict[str, Any]] = {}
    for pod in pods:
        index = _rank_of(pod, nodes)
        if index is None:
            continue
        stamp = str((pod.get("metadata") or {}).get("creationTimestamp") or "")
        seen = newest.get(index)
        if seen is None or stamp >= str((seen.get("metadata") or {}).get("creationTimestamp") or ""):
            newest[index] = pod
    out = []
    for index in sorted(newest):
        pod = newest[index]
        entry: dict[str, Any] = {
            "index": index,
            "pod": pod["metadata"]["name"],
            "phase": str((pod.get("status") or {}).get("phase") or "Pending"),
        }
        terminated = (_run_container(pod).get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode") is not None:
            entry["exitCode"] = int(terminated["exitCode"])
        out.append((entry, pod))
    return out


def _first_failed(ranks: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[dict[str, Any], str] | None:
    """The rank whose command failed first (the others were stopped after it), with its message.

    finishedAt has a resolution of one second, and the ranks the Job stopped after the failure end
    within it: a pod being deleted (the Job controller deletes the rest) or ended by SIGTERM or
    SIGKILL (exit 143, 137) comes after a rank that failed by itself."""
    failed = []
    for entry, pod in ranks:
        if entry.get("exitCode") in (None, 0):
            continue
        terminated = (_run_container(pod).get("state") or {}).get("terminated") or {}
        stopped = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        signalled = entry["exitCode"] in (137, 143)
        key = (stopped, signalled, str(terminated.get("finishedAt") or "~"), entry["index"])
        failed.append((key, entry, terminated))
    if not failed:
        return None
    _, entry, terminated = min(failed, key=lambda f: f[0])
    detail = terminated.get("message") or terminated.get("reason") or ""
    return entry, f": {detail}" if detail and detail != "Error" else ""


def _not_starting(
    config: Config,
    pods: list[tuple[dict[str, Any], dict[str, Any]]],
    scheduling: SchedulingObserved | None = None,
) -> tuple[str, str] | None:
    """Why a rank's pod does not start (it waits for a node, no node fits it, its image does not
    pull), if one does not. `scheduling` is what was seen for the first rank with no node."""
    for entry, pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") not in (None, "Pending"):
            continue
        unscheduled = _unscheduled(config, pod, scheduling)
        if unscheduled is not None:
            return unscheduled[0], f"Rank {entry['index']}: {unscheduled[1]}"
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                return str(
                    waiting["reason"]
                ), f"Rank {entry['index']}: {waiting.get('message') or waiting['reason']}"
    return None


def _fetch(config: Config, b: _Builder, observed: RunObserved) -> None:
    """The outputs reader pod: one per spec.fetch.requestID, ready or why not, in status.fetch."""
    run = observed.run
    name = run["metadata"]["name"]
    wanted = ((run["spec"].get("fetch") or {}).get("requestID")) or None
    reader = observed.reader
    reader_name = outputs_reader_name(name)
    reader_meta = (reader or {}).get("metadata") or {}
    live = reader is not None and not reader_meta.get("deletionTimestamp")
    if wanted is None:
        if live:
            b.actions.append(DeletePod(reader_name))
        return
    request_id = str(wanted)
    old = b.old.get("fetch") or {}
    fetch: dict[str, Any] = {"requestID": request_id, "ready": False}
    b.status["fetch"] = fetch
    if not observed.claim_exists:
        fetch["message"] = "The run's outputs claim does not exist yet: the reader starts once the run does."
        return
    if reader is not None and not live:
        fetch["message"] = f"Waiting for the previous reader pod {reader_name} to go away."
        b.requeue_in(1.0)
        return
    if reader is not None:
        served = (reader_meta.get("annotations") or {}).get(ANNOTATION_FETCH_REQUEST)
        if served != request_id:
            b.actions.append(DeletePod(reader_name))
            fetch["message"] = (
                f"Replacing the reader pod of request {served} with one for request {request_id}."
            )
            b.requeue_in(1.0)
            return
        phase = (reader.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            b.actions.append(DeletePod(reader_name))
            fetch["expired"] = True
            fetch["message"] = (
                f"The reader pod of request {request_id} ended (it lives {READER_SECONDS} s at most); "
                "set a new spec.fetch.requestID for another."
            )
            return
        fetch["pod"] = reader_name
        conditions = {c.get("type"): c for c in (reader.get("status") or {}).get("conditions") or []}
        ready = conditions.get("Ready") or {}
        if ready.get("status") == "True":
            fetch["ready"] = True
            return
        problem = _not_starting(config, [({"index": 0}, reader)])
        fetch["message"] = (
            problem[1].removeprefix("Rank 0: ") if problem else f"Waiting for the reader pod {reader_name}."
        )
        return
    if old.get("requestID") == request_id and old.get("expired"):
        b.status["fetch"] = dict(old)
        return
    if observed.reader_create_error:
        fetch["message"] = f"The cluster refused the reader pod: {observed.reader_create_error}"
        b.requeue_in(REFUSED_RETRY_SECONDS)
        return
    b.actions.append(CreatePod(outputs_reader_pod(config, run, request_id)))
    fetch["pod"] = reader_name
    fetch["message"] = f"Creating the reader pod {reader_name}."


# The Run status fields that describe its Job once it existed; they are kept from round to round.
_RUN_RECORD = (
    "image",
    "job",
    "service",
    "masterAddr",
    "outputsClaim",
    "startTime",
    "completionTime",
    "exitCode",
    "failedRank",
    "ranks",
    "message",
    "upload",
    "build",
)


def decide_run(config: Config, observed: RunObserved) -> Plan:
    """The plan for one Run: the shared build path, then its outputs claim, Service and Job, and
    the Job's outcome as conditions, an exit code and the rank that failed."""
    run = observed.run
    meta = run["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = run["spec"]
    nodes = int(spec.get("nodes") or RUN_NODES_DEFAULT)
    b = _Builder(observed, run)

    def finish(phase: str, message: str | None = None) -> Plan:
        if message is not None:
            b.status["message"] = message
        return b.finish(phase)

    if not valid_run_name(name):
        message = (
            f"A Run name starts with a letter, has at most 60 lowercase letters, digits and '-' "
            f"(it names a Service and the pods' hostnames): {name!r} does not."
        )
        b.condition(CONDITION_STARTED, False, "InvalidName", message)
        b.condition(CONDITION_FINISHED, True, "InvalidName", message)
        return finish("Failed", message)

    for key in _RUN_RECORD:
        if key in b.old:
            b.status[key] = b.old[key]
    finished = get_condition(b.conditions, CONDITION_FINISHED)
    job = observed.run_job
    job_meta = (job or {}).get("metadata") or {}
    if (
        finished is not None
        and finished.get("status") == "True"
        and finished.get("reason") in RUN_REASONS_TERMINAL
    ):
        # A finished run stays as it ended, whatever happens to its Job afterwards (a TTL, a stop).
        if finished.get("reason") == "Stopped" and job is not None and not job_meta.get("deletionTimestamp"):
            b.actions.append(DeleteRunJob(run_job_name(name)))
        _fetch(config, b, observed)
        return b.finish(str(b.old.get("phase") or "Failed"))

    stop_message = (
        f"Stopped (spec.stop is true): the Job and its pods are deleted; the outputs stay in claim "
        f"{outputs_claim_name(name)}."
    )

    if job is None:
        if b.status.get("job"):
            message = f"The Job {b.status['job']} was deleted before its outcome was seen."
            if spec.get("stop"):
                b.condition(CONDITION_FINISHED, True, "Stopped", stop_message)
                b.status.setdefault("completionTime", rfc3339(observed.now))
                _fetch(config, b, observed)
                return finish("Stopped", stop_message)
            b.condition(CONDITION_FINISHED, True, "JobDeleted", message)
            _fetch(config, b, observed)
            return finish("Failed", message)
        image, phase = _resolve_image(config, b)
        if image is None:
            _fetch(config, b, observed)
            built = get_condition(b.conditions, "Built") or {}
            if spec.get("stop"):
                b.condition(CONDITION_STARTED, False, "Stopped", "Stopped before it started.")
                b.condition(
                    CONDITION_FINISHED, True, "Stopped", "Stopped (spec.stop is true) before it started."
                )
                b.status["completionTime"] = rfc3339(observed.now)
                return finish("Stopped", "Stopped before it started.")
            reason = {"Failed": "NotBuilt", "Building": "WaitingForBuild"}.get(
                phase or "", "WaitingForUpload"
            )
            b.condition(CONDITION_STARTED, False, reason, "The run starts once its image is built.")
            if phase == "Failed" and built.get("reason") == "BuildFailed":
                b.condition(CONDITION_FINISHED, True, "BuildFailed", str(built.get("message")))
                return finish("Failed", str(built.get("message")))
            b.condition(CONDITION_FINISHED, False, "NotStarted", "The run has not started.")
            waiting = {"Uploading": "Waiting for the context's upload.", "Building": "Building the image."}
            if phase == "Failed":
                return finish(phase, str(built.get("message") or ""))
            return finish(phase or "Pending", waiting.get(phase or "", "Waiting for the build."))
        b.status["image"] = image
        b.status["outputsClaim"] = outputs_claim_name(name)
        if not observed.claim_exists:
            b.actions.append(CreateObject(outputs_claim(config, run)))
        if nodes > 1:
            b.status["service"] = run_service_name(name)
            b.status["masterAddr"] = rank0_address(name, namespace, config.cluster_domain)
            if not observed.service_exists:
                b.actions.append(CreateObject(run_service(run)))
        else:
            b.status["masterAddr"] = "127.0.0.1"
        _fetch(config, b, observed)
        if spec.get("stop"):
            b.condition(CONDITION_STARTED, False, "Stopped", "Stopped before it started.")
            b.condition(CONDITION_FINISHED, True, "Stopped", stop_message)
            b.status["completionTime"] = rfc3339(observed.now)
            return finish("Stopped", stop_message)
        if observed.run_create_error:
            message = (
                f"The cluster refused the run's Job: {observed.run_create_error}. It is tried again every "
                f"{REFUSED_RETRY_SECONDS:g} s."
            )
            b.condition(CONDITION_STARTED, False, "FailedCreate", message)
            b.condition(CONDITION_FINISHED, False, "NotStarted", "The run has not started.")
            b.requeue_in(REFUSED_RETRY_SECONDS)
            return finish("Failed", message)
        b.actions.append(
            CreateRunJob(run_job(config, run, image, restricted=restricted_pods(config, observed)))
        )
        b.status["job"] = run_job_name(name)
        b.condition(CONDITION_STARTED, False, "Creating", f"Creating Job {run_job_name(name)}.")
        b.condition(CONDITION_FINISHED, False, "NotStarted", "The run has not started.")
        return finish("Starting", f"Creating Job {run_job_name(name)} of {nodes} node(s).")

    # The Job exists: its outcome and its pods say where the run is.
    b.status["job"] = run_job_name(name)
    b.status.setdefault("outputsClaim", outputs_claim_name(name))
    job_status = job.get("status") or {}
    if job_status.get("startTime"):
        b.status["startTime"] = job_status["startTime"]
    ranks = _ranks(observed.run_pods, nodes)
    b.status["ranks"] = [entry for entry, _ in ranks]
    _fetch(config, b, observed)
    outcome, condition = run_job_outcome(job)
    if ranks and any(entry["phase"] != "Pending" for entry, _ in ranks):
        b.condition(
            CONDITION_STARTED, True, "Started", f"The run's pods started in Job {run_job_name(name)}."
        )
    if outcome == "succeeded":
        b.status["exitCode"] = 0
        b.status.pop("failedRank", None)
        b.status["completionTime"] = str(
            job_status.get("completionTime")
            or (condition or {}).get("lastTransitionTime")
            or rfc3339(observed.now)
        )
        message = (
            f"All {nodes} rank(s) exited with code 0." if nodes > 1 else "The command exited with code 0."
        )
        b.condition(
            CONDITION_STARTED, True, "Started", f"The run's pods started in Job {run_job_name(name)}."
        )
        b.condition(CONDITION_FINISHED, True, "Succeeded", message)
        return finish("Succeeded", message)
    if outcome == "failed":
        b.status["completionTime"] = str((condition or {}).get("lastTransitionTime") or rfc3339(observed.now))
        job_reason = str((condition or {}).get("reason") or "")
        first = _first_failed(ranks)
        if job_reason == "DeadlineExceeded":
            reason = "DeadlineExceeded"
            message = f"The run was stopped after spec.activeDeadlineSeconds ({spec.get('activeDeadlineSeconds')} s)."
        elif first is not None:
            entry, detail = first
            b.status["exitCode"] = entry["exitCode"]
            b.status["failedRank"] = entry["index"]
            if nodes == 1:
                reason = "ScriptFailed"
                message = f"The command exited with code {entry['exitCode']}{detail} (pod {entry['pod']})."
            else:
                reason = "RankFailed"
                message = (
                    f"Rank {entry['index']} (pod {entry['pod']}) exited with code {entry['exitCode']}{detail}; "
                    "the other ranks were stopped."
                )
        else:
            reason = "JobFailed"
            message = f"Job {run_job_name(name)} failed: {(condition or {}).get('message') or job_reason}."
        b.condition(CONDITION_FINISHED, True, reason, message)
        return finish("Failed", message)
    if spec.get("stop") or job_meta.get("deletionTimestamp"):
        if not job_meta.get("deletionTimestamp"):
            b.actions.append(DeleteRunJob(run_job_name(name)))
        if spec.get("stop"):
            b.condition(CONDITION_FINISHED, True, "Stopped", stop_message)
            b.status["completionTime"] = rfc3339(observed.now)
            return finish("Stopped", stop_message)
        b.requeue_in(1.0)
        message = f"The Job {run_job_name(name)} is being deleted."
        return finish(str(b.old.get("phase") or "Running"), message)
    b.condition(CONDITION_FINISHED, False, "Running", "The run has not finished.")
    running = [entry for entry, _ in ranks if entry["phase"] == "Running"]
    if running:
        message = f"{len(running)} of {nodes} rank(s) running." if nodes > 1 else "The command is running."
        return finish("Running", message)
    if observed.run_create_error:
        message = f"The cluster refused a pod of Job {run_job_name(name)}: {observed.run_create_error}."
        b.condition(CONDITION_STARTED, False, "FailedCreate", message)
        b.requeue_in(REFUSED_RETRY_SECONDS)
        return finish("Starting", message)
    problem = _not_starting(config, ranks, observed.scheduling)
    if problem is not None:
        b.condition(CONDITION_STARTED, False, problem[0], problem[1])
        if problem[0] == REASON_WAITING_FOR_NODE:
            b.requeue_in(NODE_WAIT_POLL_SECONDS)
        return finish("Starting", problem[1])
    if (get_condition(b.conditions, CONDITION_STARTED) or {}).get("status") != "True":
        b.condition(CONDITION_STARTED, False, "Starting", "Waiting for the run's pods to start.")
    if ranks and all(entry["phase"] == "Succeeded" for entry, _ in ranks):
        return finish("Running", "Waiting for the Job to complete.")
    return finish("Starting", "Waiting for the run's pods to start.")
