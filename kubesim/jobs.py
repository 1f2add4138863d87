"""The Job controller of kubesim (batch/v1 Jobs, NonIndexed completion mode).

For each Job it keeps `min(parallelism, completions - succeeded)` pods running from the
template (labels `job-name`, `controller-uid`, `batch.kubernetes.io/job-name`,
`batch.kubernetes.io/controller-uid`; an ownerReference to the Job, controller=true), counts
succeeded and failed pods (for restartPolicy OnFailure, container restarts count as failures, as
upstream), and ends the Job:

* success: `completions` pods succeeded → conditions SuccessCriteriaMet and Complete
  (reason CompletionsReached), `completionTime`;
* failure: failures > `backoffLimit` → FailureTarget and Failed (reason BackoffLimitExceeded,
  "Job has reached the specified backoff limit"), active pods deleted; likewise
  `activeDeadlineSeconds` (reason DeadlineExceeded);
* `podFailurePolicy` (kubesim/jobpolicy.py): a failed pod matching an `Ignore` rule is not
  counted and is replaced (a pod the cluster disrupted: condition DisruptionTarget); one matching
  `FailJob` fails the Job at once (reason PodFailurePolicy); with `podReplacementPolicy: Failed`
  (the default under a policy) a pod being deleted is replaced only once it has failed.

`spec.suspend` deletes the active pods and creates none. The decision (`plan`) is pure; the
controller applies it to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubesim import jobpolicy
from kubesim.errors import ApiError, now_rfc3339
from kubesim.store import JOBS, PODS, Store, WatchEvent

__all__ = ["JobController", "Plan", "plan"]

log = logging.getLogger("kubesim.jobs")

_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Plan:
    """What to do for one Job now."""

    create: int = 0
    delete: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def _parse_time(ts: str | None) -> float | None:
    if not ts:
        return None
    import datetime

    return datetime.datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC).timestamp()


def _cond(ctype: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _finished(job: dict[str, Any]) -> bool:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return True
    return False


def plan(job: dict[str, Any], pods: list[dict[str, Any]], now: float) -> Plan:
    """Pure decision for `job` given its pods (see module docstring)."""
    spec = job.get("spec") or {}
    old = job.get("status") or {}
    now_s = now_rfc3339(now)
    completions = int(spec["completions"]) if spec.get("completions") is not None else 1
    parallelism = int(spec["parallelism"]) if spec.get("parallelism") is not None else 1
    backoff_limit = int(spec["backoffLimit"]) if spec.get("backoffLimit") is not None else 6
    on_failure = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure"

    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    active = [p for p in live if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
    policy = spec.get("podFailurePolicy")
    failed = 0
    fail_job: jobpolicy.Match | None = None
    for p in pods:
        if (p.get("status") or {}).get("phase") != "Failed":
            continue
        decided = jobpolicy.match(policy, p)
        if decided is not None and decided.action == "Ignore":
            continue  # not counted toward backoffLimit, and replaced
        if decided is not None and decided.action == "FailJob" and fail_job is None:
            fail_job = decided
        failed += 1
    # podReplacementPolicy Failed: a pod being deleted is replaced only once it has failed.
    replacing = 0
    if spec.get("podReplacementPolicy") == "Failed":
        replacing = sum(
            1
            for p in pods
            if p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
    restarts = 0
    if on_failure:
        for p in active:
            for cs in (p.get("status") or {}).get("containerStatuses") or []:
                restarts += int(cs.get("restartCount") or 0)
    ready = sum(
        1
        for p in active
        for c in (p.get("status") or {}).get("conditions") or []
        if c.get("type") == "Ready" and c.get("status") == "True"
    )

    status: dict[str, Any] = {k: v for k, v in old.items()}
    status.update(
        {
            "active": len(active),
            "succeeded": succeeded,
            "failed": failed,
            "ready": ready,
            "terminating": len(pods) - len(live),
            "uncountedTerminatedPods": {},
        }
    )
    for k in ("active", "succeeded", "failed"):
        if status[k] == 0 and k not in old:
            status.pop(k)
    result = Plan(status=status)
    if _finished(job):
        return result
    if spec.get("suspend"):
        result.delete = [p["metadata"]["name"] for p in active]
        status["active"] = 0
        return result
    status.setdefault("startTime", now_s)
    conds = list(old.get("conditions") or [])

    def fail(reason: str, message: str) -> Plan:
        conds.extend(
            [_cond("FailureTarget", reason, message, now_s), _cond("Failed", reason, message, now_s)]
        )
        status["conditions"] = conds
        status["active"] = 0
        result.delete = [p["metadata"]["name"] for p in active]
        result.events.append(("Warning", reason, message))
        return result

    if succeeded >= completions:
        msg = "Reached expected number of succeeded pods"
        conds.extend(
            [
                _cond("SuccessCriteriaMet", "CompletionsReached", msg, now_s),
                _cond("Complete", "CompletionsReached", msg, now_s),
            ]
        )
        status["conditions"] = conds
        status["completionTime"] = now_s
        result.delete = [p["metadata"]["name"] for p in active]
        status["active"] = 0
        result.events.append(("Normal", "Completed", "Job completed"))
        return result
    if fail_job is not None:
        return fail("PodFailurePolicy", fail_job.message)
    if failed + restarts > backoff_limit:
        return fail("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    deadline = spec.get("activeDeadlineSeconds")
    started = _parse_time(status.get("startTime"))
    if deadline is not None and started is not None and now - started > int(deadline):
        return fail("DeadlineExceeded", "Job was active longer than specified deadline")
    want = min(parallelism, completions - succeeded)
    result.create = max(0, want - len(active) - replacing)
    return result


class JobController:
    def __init__(
        self, store: Store, faults: Any = None, api: Any = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubs: list[Callable[[], None]] = []
        self._create_failures: dict[tuple[str, str], int] = {}  # job -> pod creations refused in a row

    async def start(self) -> None:
        self._unsubs.append(self.store.subscribe(JOBS, self._on_job))
        self._unsubs.append(self.store.subscribe(PODS, self._on_pod))
        jobs, _ = self.store.list(JOBS)
        for j in jobs:
            self._mark(j["metadata"].get("namespace", "default"), j["metadata"]["name"])
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        for u in self._unsubs:
            u()
        self._unsubs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _mark(self, ns: str, name: str) -> None:
        self._dirty.add((ns, name))
        self._wake.set()

    def _on_job(self, ev: WatchEvent) -> None:
        if ev.type != "DELETED":
            md = ev.object["metadata"]
            self._mark(md.get("namespace", "default"), md["name"])

    def _on_pod(self, ev: WatchEvent) -> None:
        md = ev.object["metadata"]
        for ref in md.get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                self._mark(md.get("namespace", "default"), ref.get("name", ""))

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Coalesce bursts of pod status writes into one pass.
            await asyncio.sleep(0.02)
            dirty, self._dirty = self._dirty, set()
            for ns, name in sorted(dirty):
                try:
                    self.sync(ns, name)
                except Exception:
                    log.exception("job %s/%s: sync failed", ns, name)
            # activeDeadlineSeconds needs a periodic look even without events.
            self._schedule_deadlines()

    def _schedule_deadlines(self) -> None:
        jobs, _ = self.store.list(JOBS)
        for j in jobs:
            if (j.get("spec") or {}).get("activeDeadlineSeconds") is not None and not _finished(j):
                md = j["metadata"]
                asyncio.get_running_loop().call_later(
                    1.0, self._mark, md.get("namespace", "default"), md["name"]
                )

    def owned_pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        ns = job["metadata"].get("namespace", "default")
        uid = job["metadata"]["uid"]
        pods, _ = self.store.list(PODS, ns)
        return [
            p for p in pods if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
        ]

    def sync(self, ns: str, name: str) -> None:
        job = self.store.get(JOBS, ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        pods = self.owned_pods(job)
        p = plan(job, pods, self.clock())
        for pod_name in p.delete:
            with contextlib.suppress(ApiError):
                self.store.delete(PODS, ns, pod_name)
        for _ in range(p.create):
            try:
                pod = self.store.create(PODS, self.pod_for(job), ns, field_manager="kube-controller-manager")
            except ApiError as e:
                # Admission (a ResourceQuota, Pod Security) refused the pod: say so on the Job, as
                # the real controller does, and try again later with a growing delay.
                self._event(job, "Warning", "FailedCreate", f"Error creating: {e.message}")
                failures = self._create_failures.get((ns, name), 0) + 1
                self._create_failures[(ns, name)] = failures
                with contextlib.suppress(RuntimeError):  # no running loop (a direct sync in a test)
                    asyncio.get_running_loop().call_later(
                        min(10.0, 0.5 * 2 ** (failures - 1)), self._mark, ns, name
                    )
                break
            self._create_failures.pop((ns, name), None)
            self._event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        for etype, reason, message in p.events:
            self._event(job, etype, reason, message)
        if p.status != (job.get("status") or {}):
            uid = job["metadata"]["uid"]

            def mutate(o: dict[str, Any]) -> None:
                if o["metadata"]["uid"] == uid:
                    o["status"] = p.status

            with contextlib.suppress(ApiError):
                self.store.update_status(JOBS, ns, name, mutate)

    def _event(self, job: dict[str, Any], etype: str, reason: str, message: str) -> None:
        with contextlib.suppress(ApiError):
            self.store.add_event(
                job["metadata"].get("namespace", "default"),
                {"kind": "Job", "apiVersion": "batch/v1", "metadata": job["metadata"]},
                reason,
                message,
                type=etype,
                component="job-controller",
            )

    def pod_for(self, job: dict[str, Any]) -> dict[str, Any]:
        md = job["metadata"]
        tmpl = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        tmeta = tmpl.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": md["uid"],
                "batch.kubernetes.io/job-name": md["name"],
                "controller-uid": md["uid"],
                "job-name": md["name"],
            }
        )
        suffix = "".join(random.choice(_SUFFIX) for _ in range(5))
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{md['name'][:57]}-{suffix}",
                "namespace": md.get("namespace", "default"),
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": md["name"],
                        "uid": md["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": tmpl.get("spec") or {},
        }
