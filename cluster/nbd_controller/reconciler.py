"""One reconcile of one Notebook or Run: observe, decide (pure), act, report. Both kinds observe
and act on the build path through the same methods (`observe_build`, `act`).

Every step is safe to repeat: creates are create-if-absent, deletes delete-if-present, the status is
written only when it changed. A controller killed between any two steps finds, next time, the
objects the previous run made (deterministic names) and carries on from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from nbdcontract import ANNOTATION_IDLE_STOPPED, DEFAULT_PORT, RUN_KIND, RUN_PLURAL, human_duration

from .conditions import get_condition, rfc3339
from .config import Config
from .decisions import (
    ClearIdleStop,
    CreateBuildJob,
    CreateObject,
    CreatePod,
    CreateRunJob,
    CreateTokenSecret,
    DeleteBuildJob,
    DeleteObject,
    DeletePod,
    DeleteRunJob,
    ForgetBuild,
    IdleStop,
    IssueUploadURL,
    Observed,
    Plan,
    RecordBuild,
    RunObserved,
    decide,
    decide_run,
    job_outcome,
    run_job_outcome,
)
from .idle import IdleObserved, JupyterActivity, nbd_activity, ready_since, stop_after
from .kube import Kube, api_message
from .manifests import build_job, token_secret
from .naming import (
    KIND,
    build_job_name,
    outputs_claim_name,
    outputs_reader_name,
    pod_name,
    run_job_name,
    run_service_name,
    token_secret_name,
)
from .patching import merge_patch
from .scheduling import SchedulingObserved
from .storage import CONTENT_TYPE, ObjectStore

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _has_pods(job: dict[str, Any]) -> bool:
    status = job.get("status") or {}
    return any(status.get(k) for k in ("active", "succeeded", "failed", "terminating", "ready"))


class Reconciler:
    def __init__(self, config: Config, kube: Kube, store: ObjectStore, executor: ThreadPoolExecutor) -> None:
        self.config = config
        self.kube = kube
        self.store = store
        self.executor = executor
        # The last answer of each notebook's Jupyter (by pod uid), with when it was asked: asked
        # again only after config.idle_check_seconds, however often the notebook is reconciled.
        self._jupyter: dict[str, tuple[float, JupyterActivity]] = {}

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    async def observe_build(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The build path of a Notebook or a Run: the fields of `BuildObserved` (but `now`)."""
        meta = obj["metadata"]
        namespace = meta["namespace"]
        spec = obj.get("spec") or {}
        upload = (spec.get("build") or {}).get("upload") if not spec.get("image") else None
        built_image = stored_md5 = log_tail = create_error = pod_problem = None
        pod_pending = False
        job = None
        if upload:
            md5 = str(upload["md5"])
            build_ns, for_ns = self.config.build_location(namespace)
            job_name = build_job_name(md5, for_ns)
            built_image = (await self._call(self.kube.get_builds, namespace)).get(md5)
            if built_image is None:
                job = await self._call(self.kube.get_job, build_ns, job_name)
                if job is None:
                    stored_md5 = await self._call(self.store.stat, md5)
                elif job_outcome(job) == "failed":
                    built = get_condition((obj.get("status") or {}).get("conditions") or [], "Built")
                    if built is None or built.get("reason") != "BuildFailed":
                        log_tail = await self._call(self.kube.build_log_tail, build_ns, md5, for_ns)
                elif job_outcome(job) == "running" and not _has_pods(job):
                    # No pod yet: admission or a quota may be refusing it (FailedCreate events).
                    create_error = await self._call(
                        self.kube.failed_create_message, build_ns, "Job", job_name
                    )
                elif job_outcome(job) == "running" and not (job.get("status") or {}).get("ready"):
                    # A pod that does not start (its image, a Secret, no node) changes nothing of
                    # the Job: ask the pod.
                    pod_pending, pod_problem = await self._call(
                        self.kube.build_pod_problem, build_ns, md5, for_ns
                    )
        pod_security = "privileged"
        if self.config.pod_security == "auto":
            pod_security = await self._call(self.kube.namespace_pod_security, namespace)
        return {
            "pod_security": pod_security,
            "built_image": built_image,
            "stored_md5": stored_md5,
            "job": job,
            "build_log_tail": log_tail,
            "build_create_error": create_error,
            "build_pod_problem": pod_problem,
            "build_pod_pending": pod_pending,
        }

    async def observe(self, notebook: dict[str, Any]) -> Observed:
        meta = notebook["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        build = await self.observe_build(notebook)
        secret_exists, pod = await asyncio.gather(
            self._call(self.kube.secret_exists, namespace, token_secret_name(name)),
            self._call(self.kube.get_pod, namespace, pod_name(name)),
        )
        return Observed(
            notebook=notebook,
            now=datetime.now(UTC),
            secret_exists=secret_exists,
            pod=pod,
            scheduling=await self._scheduling([pod] if pod is not None else []),
            idle=await self._idle(notebook, pod),
            **build,
        )

    async def _idle(self, notebook: dict[str, Any], pod: dict[str, Any] | None) -> IdleObserved | None:
        """The idle view of a running notebook with an idle stop (None otherwise)."""
        spec = notebook.get("spec") or {}
        seconds = stop_after(spec, self.config.idle_stop_after)
        if (
            seconds <= 0
            or spec.get("suspend")
            or pod is None
            or (pod.get("metadata") or {}).get("deletionTimestamp")
        ):
            return None
        since = ready_since(pod)
        if since is None:
            return IdleObserved(stop_after=seconds, jupyter=None)
        uid = str(pod["metadata"].get("uid") or "")
        loop = asyncio.get_running_loop()
        cached = self._jupyter.get(uid)
        if cached is not None and loop.time() - cached[0] < self.config.idle_check_seconds:
            activity = cached[1]
        else:
            meta = notebook["metadata"]
            activity = await self._call(
                self.kube.jupyter_activity,
                meta["namespace"],
                pod["metadata"]["name"],
                int(spec.get("port") or DEFAULT_PORT),
                token_secret_name(meta["name"]),
            )
            if len(self._jupyter) > 4096:
                self._jupyter.clear()
            self._jupyter[uid] = (loop.time(), activity)
        return IdleObserved(
            stop_after=seconds, jupyter=activity, nbd_activity=nbd_activity(notebook), ready_since=since
        )

    async def _scheduling(self, pods: list[dict[str, Any]]) -> SchedulingObserved | None:
        """The scheduling view of the first of `pods` the scheduler could not place, if one."""
        for pod in pods:
            if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
                continue
            for condition in (pod.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                    return await self._call(self.kube.scheduling, pod)
        return None

    async def observe_run(self, run: dict[str, Any]) -> RunObserved:
        meta = run["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        build = await self.observe_build(run)
        job, pods, claim, service, reader = await asyncio.gather(
            self._call(self.kube.get_job, namespace, run_job_name(name)),
            self._call(self.kube.run_pods, namespace, name),
            self._call(self.kube.claim_exists, namespace, outputs_claim_name(name)),
            self._call(self.kube.service_exists, namespace, run_service_name(name)),
            self._call(self.kube.get_pod, namespace, outputs_reader_name(name)),
        )
        create_error = None
        if job is not None and run_job_outcome(job)[0] == "running" and not _has_pods(job):
            create_error = await self._call(
                self.kube.failed_create_message, namespace, "Job", run_job_name(name)
            )
        return RunObserved(
            run=run,
            now=datetime.now(UTC),
            run_job=job,
            run_pods=tuple(pods),
            claim_exists=claim,
            service_exists=service,
            reader=reader,
            run_create_error=create_error,
            scheduling=await self._scheduling(list(pods)),
            **build,
        )

    async def act(self, notebook: dict[str, Any], plan: Plan) -> str | None:
        """Carries the plan of a Notebook or a Run out; returns the API server's refusal of the pod
        it creates (the notebook pod, a run's reader pod) or of a run's Job, if any."""
        refused = None
        meta = notebook["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for action in plan.actions:
            match action:
                case IssueUploadURL(md5=md5, request_id=request_id):
                    ttl = timedelta(seconds=self.config.upload_url_ttl)
                    expires = datetime.now(UTC) + ttl
                    url = await self._call(self.store.signed_put_url, md5, CONTENT_TYPE, ttl)
                    plan.status["upload"] = {
                        "requestID": request_id,
                        "signedURL": url,
                        "expiresAt": rfc3339(expires),
                    }
                    log.info(
                        "%s/%s: signed an upload URL for %s (request %s)", namespace, name, md5, request_id
                    )
                case DeleteObject(md5=md5):
                    log.warning(
                        "%s/%s: stored context does not match MD5 %s; deleting it", namespace, name, md5
                    )
                    await self._call(self.store.delete, md5)
                case CreateBuildJob(md5=md5, image=image, fresh=fresh):
                    url = await self._call(
                        self.store.signed_get_url, md5, timedelta(seconds=self.config.download_url_ttl)
                    )
                    manifest = build_job(self.config, notebook, md5, image, url, import_cache=not fresh)
                    created = await self._call(self.kube.create, manifest)
                    log.info(
                        "%s/%s: build Job %s %s",
                        namespace,
                        name,
                        manifest["metadata"]["name"],
                        "created" if created else "already exists",
                    )
                case RecordBuild(md5=md5, image=image):
                    await self._call(self.kube.record_build, namespace, md5, image)
                    log.info("%s: recorded the build of %s as %s", namespace, md5, image)
                case ForgetBuild(md5=md5):
                    await self._call(self.kube.forget_build, namespace, md5)
                    log.warning(
                        "%s/%s: the image built from %s is gone from the registry; building it again",
                        namespace,
                        name,
                        md5,
                    )
                case DeleteBuildJob(md5=md5):
                    build_ns, for_ns = self.config.build_location(namespace)
                    await self._call(self.kube.delete_job, build_ns, build_job_name(md5, for_ns))
                case CreateTokenSecret():
                    await self._call(self.kube.create, token_secret(notebook, secrets.token_urlsafe(32)))
                case CreatePod(manifest=manifest):
                    try:
                        created = await self._call(self.kube.create, manifest)
                    except ApiException as e:
                        if e.status not in (403, 422):
                            raise
                        refused = api_message(e)
                        log.warning(
                            "%s/%s: the cluster refused pod %s: %s",
                            namespace,
                            name,
                            manifest["metadata"]["name"],
                            refused,
                        )
                        continue
                    log.info(
                        "%s/%s: pod %s %s",
                        namespace,
                        name,
                        manifest["metadata"]["name"],
                        "created" if created else "already exists",
                    )
                case DeletePod(name=pod):
                    await self._call(self.kube.delete_pod, namespace, pod)
                    log.info("%s/%s: deleted pod %s", namespace, name, pod)
                case IdleStop(idle_seconds=idle):
                    patch = {
                        "metadata": {"annotations": {ANNOTATION_IDLE_STOPPED: human_duration(idle)}},
                        "spec": {"suspend": True},
                    }
                    await self._call(self.kube.patch_notebook, namespace, name, patch)
                    log.info("%s/%s: suspended after %s idle", namespace, name, human_duration(idle))
                case ClearIdleStop():
                    patch = {"metadata": {"annotations": {ANNOTATION_IDLE_STOPPED: None}}}
                    await self._call(self.kube.patch_notebook, namespace, name, patch)
                case CreateObject(manifest=manifest):
                    created = await self._call(self.kube.create, manifest)
                    log.info(
                        "%s/%s: %s %s %s",
                        namespace,
                        name,
                        manifest["kind"],
                        manifest["metadata"]["name"],
                        "created" if created else "already exists",
                    )
                case CreateRunJob(manifest=manifest):
                    try:
                        created = await self._call(self.kube.create, manifest)
                    except ApiException as e:
                        if e.status not in (403, 422):
                            raise
                        refused = api_message(e)
                        log.warning("%s/%s: the cluster refused the run's Job: %s", namespace, name, refused)
                        continue
                    log.info(
                        "%s/%s: Job %s %s",
                        namespace,
                        name,
                        manifest["metadata"]["name"],
                        "created" if created else "already exists",
                    )
                case DeleteRunJob(name=job):
                    await self._call(self.kube.delete_job, namespace, job)
                    log.info("%s/%s: deleted Job %s and its pods", namespace, name, job)
        return refused

    async def reconcile(self, namespace: str, name: str, kind: str = KIND) -> float | None:
        """Drives one Notebook or Run a step toward its spec; returns when to look again (None: on change)."""
        if kind == RUN_KIND:
            return await self.reconcile_run(namespace, name)
        notebook = await self._call(self.kube.get_notebook, namespace, name)
        if notebook is None or notebook["metadata"].get("deletionTimestamp"):
            # Owner references make the garbage collector remove what it owned.
            return None
        notebook.setdefault("spec", {})
        observed = await self.observe(notebook)
        plan = decide(self.config, observed)
        refused = await self.act(notebook, plan)
        if refused is not None:
            # The status tells why there is no pod; the next round tries again.
            plan = decide(self.config, dataclasses.replace(observed, pod_create_error=refused))
        old = notebook.get("status") or {}
        patch = merge_patch(old, plan.status)
        if patch:
            await self._call(self.kube.patch_notebook_status, namespace, name, patch)
        return plan.requeue_after

    async def reconcile_run(self, namespace: str, name: str) -> float | None:
        run = await self._call(self.kube.get_custom, RUN_PLURAL, namespace, name)
        if run is None or run["metadata"].get("deletionTimestamp"):
            return None
        run.setdefault("spec", {})
        run.setdefault("kind", RUN_KIND)
        observed = await self.observe_run(run)
        plan = decide_run(self.config, observed)
        refused = await self.act(run, plan)
        if refused is not None:
            if any(isinstance(a, CreateRunJob) for a in plan.actions):
                observed = dataclasses.replace(observed, run_create_error=refused)
            else:
                observed = dataclasses.replace(observed, reader_create_error=refused)
            plan = decide_run(self.config, observed)
        patch = merge_patch(run.get("status") or {}, plan.status)
        if patch:
            await self._call(self.kube.patch_custom_status, RUN_PLURAL, namespace, name, patch)
        return plan.requeue_after
