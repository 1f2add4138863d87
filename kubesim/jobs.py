"""The Job controller of kubesim (batch/v1 Jobs, NonIndexed and Indexed completion modes).

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

Indexed Jobs (`completionMode: Indexed`, `plan_indexed`): one pod per completion index below
`completions`, at most `parallelism` at a time, lowest missing index first. Each pod has the
annotation and label `batch.kubernetes.io/job-completion-index`, the env `JOB_COMPLETION_INDEX`
(a downward API fieldRef to that annotation, added to every container), `spec.hostname`
`JOBNAME-INDEX` unless the template names one, and a name `JOBNAME-INDEX-xxxxx`. A failed
index's pod is replaced with the same index. `status.completedIndexes` and (with
`backoffLimitPerIndex`) `status.failedIndexes` are interval lists ("0-2,5"). With
`backoffLimitPerIndex` an index fails after that many retries (or at once on a `FailIndex` rule),
its pods are stopped, and the Job fails with MaxFailedIndexesExceeded once more than
`maxFailedIndexes` indexes failed, or with FailedIndexes when every index ended and some failed;
the per-index count travels on the replacement pods as `batch.kubernetes.io/job-index-failure-count`.
A `successPolicy` rule met (succeededIndexes / succeededCount) completes the Job at once (reason
SuccessPolicy) and stops the other pods. Whenever a Job ends, its active pods are deleted.

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

__all__ = ["JobController", "Plan", "plan", "plan_indexed"]

log = logging.getLogger("kubesim.jobs")

_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class Plan:
    """What to do for one Job now."""

    create: int = 0
    # Indexed Jobs: the completion indexes to create a pod for, with that index's failures so far.
    create_indexes: list[tuple[int, int]] = field(default_factory=list)
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


_TERMINAL = {"FailureTarget": "Failed", "SuccessCriteriaMet": "Complete"}


def _ending(job: dict[str, Any]) -> dict[str, Any] | None:
    """The FailureTarget or SuccessCriteriaMet condition of a Job whose terminal condition is not set yet."""
    if _finished(job):
        return None
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in _TERMINAL and c.get("status") == "True":
            return dict(c)
    return None


def _unfinished(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def _terminate(
    result: Plan, pods: list[dict[str, Any]], target: dict[str, Any], now_s: str, first: bool = False
) -> Plan:
    """Ends a Job as upstream does since 1.31: FailureTarget/SuccessCriteriaMet first, its pods
    deleted, and Failed/Complete (same reason and message) once none of its pods is still running."""
    status = result.status
    conds = list(status.get("conditions") or [])
    if first:
        conds.append(target)
    running = _unfinished(pods)
    result.delete = [p["metadata"]["name"] for p in running if not p["metadata"].get("deletionTimestamp")]
    status["active"] = 0
    if not running:
        kind = _TERMINAL[target["type"]]
        conds.append(_cond(kind, str(target.get("reason")), str(target.get("message")), now_s))
        if kind == "Complete":
            status["completionTime"] = now_s
    status["conditions"] = conds
    return result


def plan(job: dict[str, Any], pods: list[dict[str, Any]], now: float) -> Plan:
    """Pure decision for `job` given its pods (see module docstring)."""
    spec = job.get("spec") or {}
    if spec.get("completionMode") == "Indexed":
        return plan_indexed(job, pods, now)
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
    ending = _ending(job)
    if ending is not None:
        return _terminate(result, pods, ending, now_rfc3339(now))
    if spec.get("suspend"):
        result.delete = [p["metadata"]["name"] for p in active]
        status["active"] = 0
        return result
    status.setdefault("startTime", now_s)
    conds = list(old.get("conditions") or [])

    def fail(reason: str, message: str) -> Plan:
        status["conditions"] = conds
        result.events.append(("Warning", reason, message))
        return _terminate(result, pods, _cond("FailureTarget", reason, message, now_s), now_s, first=True)

    if succeeded >= completions:
        msg = "Reached expected number of succeeded pods"
        status["conditions"] = conds
        result.events.append(("Normal", "Completed", "Job completed"))
        return _terminate(
            result, pods, _cond("SuccessCriteriaMet", "CompletionsReached", msg, now_s), now_s, first=True
        )
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


def plan_indexed(job: dict[str, Any], pods: list[dict[str, Any]], now: float) -> Plan:
    """Pure decision for an Indexed Job (see module docstring)."""
    spec = job.get("spec") or {}
    old = job.get("status") or {}
    now_s = now_rfc3339(now)
    completions = int(spec.get("completions") or 0)
    parallelism = int(spec["parallelism"]) if spec.get("parallelism") is not None else 1
    backoff_limit = int(spec["backoffLimit"]) if spec.get("backoffLimit") is not None else 6
    per_index = spec.get("backoffLimitPerIndex")
    max_failed = spec.get("maxFailedIndexes")
    on_failure = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure"
    policy = spec.get("podFailurePolicy")

    def phase(p: dict[str, Any]) -> str:
        return str((p.get("status") or {}).get("phase") or "")

    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    active = [p for p in live if phase(p) not in ("Succeeded", "Failed")]
    succeeded = jobpolicy.parse_intervals(str(old.get("completedIndexes") or ""), completions)
    failed_indexes = jobpolicy.parse_intervals(str(old.get("failedIndexes") or ""), completions)
    failures: dict[int, int] = {}  # index -> failures counted toward backoffLimitPerIndex
    failed = 0
    fail_job: jobpolicy.Match | None = None
    for p in pods:
        index = jobpolicy.pod_index(p, completions)
        if index is None:
            continue
        annotations = p["metadata"].get("annotations") or {}
        try:
            before = int(annotations.get(jobpolicy.FAILURE_COUNT_ANNOTATION) or 0)
        except ValueError:
            before = 0
        failures[index] = max(failures.get(index, 0), before)
        if phase(p) == "Succeeded":
            succeeded.add(index)
            continue
        if phase(p) != "Failed":
            continue
        decided = jobpolicy.match(policy, p)
        if decided is not None and decided.action == "Ignore":
            continue
        failed += 1
        failures[index] = max(failures[index], before + 1)
        if decided is not None and decided.action == "FailJob" and fail_job is None:
            fail_job = decided
        if decided is not None and decided.action == "FailIndex" and per_index is not None:
            failed_indexes.add(index)
        elif per_index is not None and before + 1 > int(per_index):
            failed_indexes.add(index)
    failed_indexes -= succeeded
    replacing: set[int] = set()
    if spec.get("podReplacementPolicy") == "Failed":
        for p in pods:
            index = jobpolicy.pod_index(p, completions)
            if (
                index is not None
                and p["metadata"].get("deletionTimestamp")
                and phase(p) not in ("Succeeded", "Failed")
            ):
                replacing.add(index)
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
    status: dict[str, Any] = dict(old)
    status.update(
        {
            "active": len(active),
            "succeeded": len(succeeded),
            "failed": failed,
            "ready": ready,
            "terminating": len(pods) - len(live),
            "uncountedTerminatedPods": {},
            "completedIndexes": jobpolicy.format_intervals(succeeded),
        }
    )
    if per_index is not None:
        status["failedIndexes"] = jobpolicy.format_intervals(failed_indexes)
    for k in ("active", "succeeded", "failed"):
        if status[k] == 0 and k not in old:
            status.pop(k)
    result = Plan(status=status)
    if _finished(job):
        return result
    ending = _ending(job)
    if ending is not None:
        # The pods the controller stops now do not fail their indexes.
        if "failedIndexes" in old:
            status["failedIndexes"] = old["failedIndexes"]
        return _terminate(result, pods, ending, now_rfc3339(now))
    if spec.get("suspend"):
        result.delete = [p["metadata"]["name"] for p in active]
        status["active"] = 0
        return result
    status.setdefault("startTime", now_s)
    conds = list(old.get("conditions") or [])

    def end(kind: str, reason: str, message: str, etype: str, event: str, event_msg: str) -> Plan:
        first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        status["conditions"] = conds
        result.events.append((etype, event, event_msg))
        return _terminate(result, pods, _cond(first, reason, message, now_s), now_s, first=True)

    def fail(reason: str, message: str) -> Plan:
        return end("Failed", reason, message, "Warning", reason, message)

    if fail_job is not None:
        return fail("PodFailurePolicy", fail_job.message)
    if max_failed is not None and len(failed_indexes) > int(max_failed):
        return fail(
            "MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes"
        )
    rule = jobpolicy.success_rule(spec.get("successPolicy"), succeeded, completions)
    if rule is not None:
        msg = f"Matched rules at index {rule}"
        return end("Complete", "SuccessPolicy", msg, "Normal", "Completed", "Job completed")
    if len(succeeded) + len(failed_indexes) >= completions:
        if failed_indexes:
            return fail("FailedIndexes", "Job has failed indexes")
        msg = "Reached expected number of succeeded pods"
        return end("Complete", "CompletionsReached", msg, "Normal", "Completed", "Job completed")
    if failed + restarts > backoff_limit:
        return fail("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    deadline = spec.get("activeDeadlineSeconds")
    started = _parse_time(status.get("startTime"))
    if deadline is not None and started is not None and now - started > int(deadline):
        return fail("DeadlineExceeded", "Job was active longer than specified deadline")
    # The pods of a failed index stop, as upstream's controller terminates them.
    result.delete = [
        p["metadata"]["name"] for p in active if jobpolicy.pod_index(p, completions) in failed_indexes
    ]
    running = {jobpolicy.pod_index(p, completions) for p in active} - failed_indexes
    busy = running | replacing
    room = parallelism - len(running) - len(replacing - running)
    for index in range(completions):
        if room <= 0:
            break
        if index in succeeded or index in failed_indexes or index in busy:
            continue
        result.create_indexes.append((index, failures.get(index, 0)))
        room -= 1
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
        wanted: list[tuple[int, int] | None] = [None] * p.create + list(p.create_indexes)
        for item in wanted:
            try:
                body = self.pod_for(job) if item is None else self.pod_for(job, *item)
                pod = self.store.create(PODS, body, ns, field_manager="kube-controller-manager")
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

    def pod_for(self, job: dict[str, Any], index: int | None = None, failures: int = 0) -> dict[str, Any]:
        """A pod from `job`'s template; for an Indexed Job, the pod of completion `index`."""
        md = job["metadata"]
        tmpl = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        tmeta = tmpl.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        annotations = dict(tmeta.get("annotations") or {})
        pod_spec = tmpl.get("spec") or {}
        prefix = md["name"][:57]
        if index is not None:
            # As upstream: the index as annotation and label, JOB_COMPLETION_INDEX from the
            # annotation by the downward API, a stable hostname, and the per-index failure count.
            annotations[jobpolicy.INDEX_ANNOTATION] = str(index)
            labels[jobpolicy.INDEX_ANNOTATION] = str(index)
            if (job.get("spec") or {}).get("backoffLimitPerIndex") is not None:
                annotations[jobpolicy.FAILURE_COUNT_ANNOTATION] = str(failures)
            if not pod_spec.get("hostname"):
                pod_spec["hostname"] = f"{md['name']}-{index}"[:63].rstrip("-.")
            for c in (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or []):
                env = c.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.append(
                        {
                            "name": "JOB_COMPLETION_INDEX",
                            "valueFrom": {
                                "fieldRef": {
                                    "apiVersion": "v1",
                                    "fieldPath": f"metadata.annotations['{jobpolicy.INDEX_ANNOTATION}']",
                                }
                            },
                        }
                    )
            prefix = f"{md['name'][:50]}-{index}"
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
                "name": f"{prefix}-{suffix}",
                "namespace": md.get("namespace", "default"),
                "labels": labels,
                "annotations": annotations,
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
            "spec": pod_spec,
        }
