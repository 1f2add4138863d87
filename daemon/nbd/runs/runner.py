"""The run RPCs: Run, Logs, Get, List, Stop and Fetch, against the cluster's Run resources.

A run is the cluster's: the daemon writes the Run (its spec: the launch's packaging, upload and
build, then the command), reads it back and follows its pods' logs; it keeps nothing else, so a
stream cut short (Ctrl-C, a sleeping laptop, a daemon restart) loses nothing and `Logs`
reattaches. The packaging and the upload/build handshake are the launch's own
(`nbd.launch.building`): the same directory gives the same MD5, so content already launched as a
notebook (or run before) is neither uploaded nor built again.

Invariants:
- nothing is written to the cluster before the request is valid and the directory is packaged;
- every rank's log is streamed whole, once per pod (a rank retried after a preemption streams its
  new pod's log too), and the `finished` event comes after the last line of every rank;
- fetching writes every file atomically and never overwrites a local file that changed since it
  was last fetched (see `nbd.runs.fetching`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from nbd.app import App
from nbd.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NbdError, NotFound
from nbd.events import Failure, LaunchPayload, Notice, NoticeLevel, PhaseChanged, PodStatus, Ready
from nbd.kube import KubeTarget, load_target
from nbd.launch.building import BuildError, Delivery, new_request_id, package
from nbd.launch.live import KubeClients, daemon_identity
from nbd.launch.spec import merge_spec, parse_notebook_file
from nbd.runs.client import RunClient
from nbd.runs.fetching import FetchPlan, after_fetch, plan_fetch
from nbd.runs.model import run_info, run_manifest, run_name_for, validate_run
from nbd.runstate import (
    ClusterTarget,
    FetchPayload,
    FetchRequest,
    FetchResult,
    RunEvent,
    RunEventPayload,
    RunFinished,
    RunInfo,
    RunLog,
    RunPhase,
    RunRequest,
    RunStatus,
)
from nbd.session import Phase, SessionKey
from nbd.status import Conflict
from nbdcontract import CONDITION_STARTED, LABEL_COMPLETION_INDEX, REASON_UNSCHEDULABLE, RUN_CONTAINER

__all__ = ["Runner"]

log = logging.getLogger(__name__)

NOTEBOOK_FILE = "notebook.yaml"
# How long the run may take to be created and start (after its build): scheduling, image pulls.
START_TIMEOUT = 1800.0
# How long a stop or a fetch's reader pod may take.
STOP_TIMEOUT = 120.0
READER_TIMEOUT = 300.0
# How often pods are listed to find a rank's (next) pod to follow.
POD_POLL = 0.5
# After the run ended: how long the last lines of its logs may take to arrive.
DRAIN_TIMEOUT = 15.0

Emit = Callable[[RunEventPayload], None]


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(
            f"cannot read {path}: {e.strerror}; fix its permissions", reason="UnreadableNotebookFile"
        ) from e


def _rank_of(pod: dict[str, Any]) -> int:
    meta = pod.get("metadata") or {}
    raw = (meta.get("labels") or {}).get(LABEL_COMPLETION_INDEX) or (meta.get("annotations") or {}).get(
        LABEL_COMPLETION_INDEX
    )
    try:
        return int(str(raw))
    except ValueError:
        return 0


def _never_starts(run: dict[str, Any]) -> str | None:
    """The controller's verdict that a rank's pod can never be placed (no node, no pool fits), if it
    gave one; a pod merely waiting for a node (a pool scaling up) is not one."""
    if not run.get("status") or (run.get("metadata") or {}).get("generation") != run["status"].get(
        "observedGeneration", (run.get("metadata") or {}).get("generation")
    ):
        return None
    for condition in run["status"].get("conditions") or []:
        if (
            condition.get("type") == CONDITION_STARTED
            and condition.get("status") == "False"
            and condition.get("reason") == REASON_UNSCHEDULABLE
        ):
            message = str(condition.get("message") or "no node can run it").strip().rstrip(".")
            rank, sep, why = message.partition(": ")
            if sep and rank.startswith("Rank "):
                return f"rank {rank.removeprefix('Rank ')}: {why[:1].lower()}{why[1:]}"
            return message[:1].lower() + message[1:]
    return None


def _started(pod: dict[str, Any]) -> bool:
    """The run container started (or the pod ended): its log can be read."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if cs.get("name") == RUN_CONTAINER and (state.get("running") or state.get("terminated")):
            return True
    return False


class Runner:
    """The runs capability (a `nbd.capabilities.RunControl`)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.clients = KubeClients()
        self.identity = daemon_identity(str(app.paths.state_dir))
        self.spool_dir = os.path.join(app.paths.state_dir, "contexts")
        self.cache_dir = os.path.join(app.paths.state_dir, "context-cache")
        self.fetch_dir = os.path.join(app.paths.state_dir, "fetches")

    async def close(self) -> None:
        await self.clients.aclose()

    async def _client(self, target: ClusterTarget) -> tuple[KubeTarget, RunClient]:
        resolved = await load_target(
            target.kubeconfig or None, target.context or None, target.namespace or None
        )
        kube = self.clients.for_target(resolved)
        return resolved, RunClient(kube, resolved.namespace, self.identity)

    async def _get(self, client: RunClient, name: str, context: str) -> RunInfo:
        obj = await client.get(name)
        if obj is None:
            raise NotFound(
                f"no run {name!r} in namespace {client.namespace}; `nbctl runs` lists the runs",
                reason="RunNotFound",
            )
        return run_info(obj, context)

    # --- run -------------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> AsyncIterator[RunEvent]:
        directory = os.path.abspath(request.directory or ".")
        if not os.path.isdir(directory):
            raise InvalidArgument(
                f"{directory} is not a directory; pass the project directory to run", reason="NoDirectory"
            )
        name = request.name or run_name_for(os.path.basename(directory))
        validate_run(name, list(request.command), request.nodes)
        file_spec: dict[str, Any] = {}
        path = request.notebook_file or os.path.join(directory, NOTEBOOK_FILE)
        if request.notebook_file and not os.path.isfile(path):
            raise InvalidArgument(
                f"notebook file {path} does not exist; fix the -f path", reason="NoNotebookFile"
            )
        if os.path.isfile(path):
            file_spec = parse_notebook_file(await asyncio.to_thread(_read_text, path), path)
        spec = merge_spec(file_spec, request.spec)
        target, client = await self._client(request.target)
        if await client.get(name) is not None:
            raise FailedPrecondition(
                f"a run named {name} exists already in namespace {target.namespace}; choose another --name, "
                f"or see it with `nbctl status {name}`",
                reason="RunExists",
            )

        queue: asyncio.Queue[RunEventPayload | None] = asyncio.Queue()
        task = asyncio.get_running_loop().create_task(
            self._run(request, directory, name, spec, target, client, queue.put_nowait), name=f"run {name}"
        )
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            while True:
                payload = await queue.get()
                if payload is None:
                    break
                yield RunEvent(name, payload)
            failure = task.exception() if not task.cancelled() else None
            if failure is not None:
                raise failure
        finally:
            if not task.done():
                # The client went away: the run goes on in the cluster (`nbctl logs NAME -f`).
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(
        self,
        request: RunRequest,
        directory: str,
        name: str,
        spec: dict[str, Any],
        target: KubeTarget,
        client: RunClient,
        emit: Emit,
    ) -> None:
        try:
            await self._create(request, directory, name, spec, target, client, emit)
            await self._follow(client, name, target.context, emit, detach=request.detach)
        except asyncio.CancelledError:
            raise
        except NbdError as e:
            emit(PhaseChanged(Phase.FAILED, e.message))
            emit(e.failure if isinstance(e, BuildError) else Failure(e.reason, e.message))
        except Exception as e:
            log.exception("run %s failed", name)
            message = (
                f"the run failed unexpectedly ({type(e).__name__}); see the daemon log (`nbctl daemon logs`)"
            )
            emit(PhaseChanged(Phase.FAILED, message))
            emit(Failure("Internal", message))

    async def _create(
        self,
        request: RunRequest,
        directory: str,
        name: str,
        spec: dict[str, Any],
        target: KubeTarget,
        client: RunClient,
        emit: Emit,
    ) -> None:
        def step(p: LaunchPayload) -> None:
            # Packaging, upload and build say nothing of pods or URLs; a run has neither yet.
            if not isinstance(p, (PodStatus, Ready)):
                emit(p)

        spec = dict(spec)
        image = str(spec.get("image") or "")
        built = None
        if not image:
            built = await package(directory, self.spool_dir, self.cache_dir, step)
            request_id = new_request_id()
            spec["build"] = {"upload": {"md5": built.md5_hex, "requestID": request_id}}
            if request.rebuild:
                spec["build"]["rebuild"] = request_id
        manifest = run_manifest(
            name,
            target.namespace,
            spec,
            list(request.command),
            request.nodes,
            ttl_seconds_after_finished=request.ttl_seconds_after_finished,
            directory=directory,
        )
        await client.apply(manifest)
        emit(Notice(f"run {name} created in namespace {target.namespace}"))
        if built is not None:

            async def enter(_phase: Phase) -> None:
                return None

            key = SessionKey(target.context, target.namespace, name)
            delivery = Delivery(enter, client, key, directory, self.cache_dir, step, rebuild=request.rebuild)
            uploaded, rid = await delivery.upload(
                built.md5_hex, built.md5_b64, built.path, spec["build"]["upload"]["requestID"]
            )
            await delivery.build(built.md5_hex, built.path, rid, uploaded=uploaded)

    # --- following a run ------------------------------------------------------------------------

    async def _follow(self, client: RunClient, name: str, context: str, emit: Emit, *, detach: bool) -> None:
        """Streams the run's status changes and every rank's log; ends when it ended (or, with
        `detach`, once it runs)."""
        last: tuple[Any, ...] | None = None
        logs = _LogFollower(client, name, emit, follow=True)
        try:
            async with asyncio.timeout(None) as deadline:
                deadline.reschedule(asyncio.get_running_loop().time() + START_TIMEOUT)
                async for obj in client.watch(name):
                    info = run_info(obj, context)
                    if info.phase in (RunPhase.RUNNING,) or info.phase.finished:
                        deadline.reschedule(None)
                    never = _never_starts(obj)
                    if never is not None and not info.phase.finished:
                        raise FailedPrecondition(
                            f"run {name} cannot start: {never}; the Run stays in the cluster, "
                            f"`nbctl stop {name}` stops it",
                            reason=REASON_UNSCHEDULABLE,
                        )
                    shape = (
                        info.phase,
                        info.reason,
                        info.message,
                        tuple((r.index, r.phase) for r in info.ranks),
                    )
                    if shape != last:
                        last = shape
                        if not info.phase.finished:
                            emit(RunStatus(info))
                    if detach and (info.phase == RunPhase.RUNNING or info.phase.finished):
                        if info.phase.finished:
                            emit(RunFinished(info))
                        return
                    logs.nodes = info.nodes
                    logs.start()
                    if info.phase.finished:
                        await logs.drain()
                        emit(RunFinished(info))
                        return
        except TimeoutError as e:
            raise DeadlineExceeded(
                f"run {name} did not start within {START_TIMEOUT:.0f}s; see `nbctl status {name}` and "
                f"`kubectl describe run {name} -n {client.namespace}`",
                reason="RunNotStarting",
            ) from e
        except NotFound as e:
            raise NotFound(f"run {name} was deleted in the cluster", reason="RunDeleted") from e
        finally:
            await logs.close()

    async def logs(
        self, name: str, target: ClusterTarget, *, follow: bool, rank: int | None
    ) -> AsyncIterator[RunEvent]:
        resolved, client = await self._client(target)
        info = await self._get(client, name, resolved.context)
        queue: asyncio.Queue[RunEventPayload | None] = asyncio.Queue()
        logs = _LogFollower(
            client, name, queue.put_nowait, follow=follow and not info.phase.finished, rank=rank
        )
        logs.nodes = info.nodes

        async def produce() -> None:
            try:
                if not logs.follow:
                    await logs.once()
                    queue.put_nowait(RunFinished(info) if info.phase.finished else RunStatus(info))
                    return
                await self._follow(client, name, resolved.context, queue.put_nowait, detach=False)
            finally:
                await logs.close()

        task = asyncio.get_running_loop().create_task(produce(), name=f"logs of run {name}")
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            while True:
                payload = await queue.get()
                if payload is None:
                    break
                if rank is not None and isinstance(payload, RunLog) and payload.rank != rank:
                    continue
                yield RunEvent(name, payload)
            failure = task.exception() if not task.cancelled() else None
            if failure is not None:
                raise failure
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # --- get, list, stop ------------------------------------------------------------------------

    async def get(self, name: str, target: ClusterTarget) -> RunInfo:
        resolved, client = await self._client(target)
        return await self._get(client, name, resolved.context)

    async def list(self, target: ClusterTarget) -> tuple[list[RunInfo], str, str]:
        resolved, client = await self._client(target)
        runs = [run_info(obj, resolved.context) for obj in await client.list_runs()]
        return runs, resolved.context, resolved.namespace

    async def stop(self, name: str, target: ClusterTarget) -> RunInfo:
        resolved, client = await self._client(target)
        info = await self._get(client, name, resolved.context)
        if info.phase.finished:
            return info
        await client.patch_spec(name, {"stop": True})

        def stopped(obj: dict[str, Any]) -> RunInfo | None:
            now = run_info(obj, resolved.context)
            return now if now.phase.finished else None

        result: RunInfo = await client.wait_for(
            name, stopped, timeout=STOP_TIMEOUT, what=f"run {name} to stop"
        )
        return result

    # --- fetch ----------------------------------------------------------------------------------

    async def fetch(self, request: FetchRequest) -> AsyncIterator[FetchPayload]:
        from nbd.sync.exec_transport import exec_transport_factory
        from nbd.sync.local import LocalEndpoint
        from nbd.sync.remote import RemoteEndpoint

        target, client = await self._client(request.target)
        info = await self._get(client, request.run, target.context)
        directory = request.directory or info.directory
        if not directory:
            raise InvalidArgument(
                f"run {info.name} does not say which directory it was started from; pass -d DIR",
                reason="NoDirectory",
            )
        directory = os.path.abspath(directory)
        if not os.path.isdir(directory):
            raise InvalidArgument(
                f"{directory} is not a directory; pass the directory to fetch into with -d",
                reason="NoDirectory",
            )
        sub = posixpath.normpath(request.path.strip("/")) if request.path else ""
        if sub.startswith("..") or sub == ".":
            sub = "" if sub == "." else sub
            if sub:
                raise InvalidArgument(
                    f"{request.path} is outside the run's outputs; give a path under {info.outputs_path}",
                    reason="BadPath",
                )
        remote_root = posixpath.join(info.outputs_path, sub) if sub else info.outputs_path
        workdir = str((await client.get(info.name) or {}).get("spec", {}).get("workdir") or "/content")
        rel = posixpath.relpath(remote_root, workdir)
        if rel.startswith(".."):
            rel = posixpath.basename(info.outputs_path.rstrip("/")) + (f"/{sub}" if sub else "")
        destination = os.path.join(directory, *rel.split("/"))

        request_id = new_request_id()
        yield Notice(f"starting a reader of the outputs of run {info.name}")
        await client.patch_spec(info.name, {"fetch": {"requestID": request_id}})

        def reader(obj: dict[str, Any]) -> str | None:
            fetch = (obj.get("status") or {}).get("fetch") or {}
            if fetch.get("requestID") == request_id and fetch.get("ready") and fetch.get("pod"):
                return str(fetch["pod"])
            return None

        pod: str = await client.wait_for(
            info.name, reader, timeout=READER_TIMEOUT, what=f"the reader of the outputs of run {info.name}"
        )
        os.makedirs(destination, exist_ok=True)
        record_path = os.path.join(self.fetch_dir, f"{info.uid or info.name}.json")
        fetched = await asyncio.to_thread(_load_record, record_path, destination)
        remote = RemoteEndpoint(exec_transport_factory(target, target.namespace, pod), root=remote_root)
        local = LocalEndpoint(destination)
        await remote.start(lambda _paths: None)
        try:
            remote_scan = await remote.scan()
            local_scan = await local.scan()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            plan = plan_fetch(remote_scan.entries, local_scan.entries, fetched, stamp)
            total = sum(w.entry.size for w in plan.writes)
            written, done_bytes = await self._apply(plan, remote, local)
            record = after_fetch(fetched, plan, remote_scan.entries, written)
            await asyncio.to_thread(_save_record, record_path, destination, record)
        finally:
            await remote.close()
        conflicts = tuple(
            Conflict(
                path=w.source,
                copy_path=w.path,
                message="changed locally since it was last fetched; the run's version is beside it",
            )
            for w in plan.conflicts
        )
        del total
        yield FetchResult(
            destination, written=len(written), unchanged=plan.unchanged, bytes=done_bytes, conflicts=conflicts
        )

    async def _apply(self, plan: FetchPlan, remote: Any, local: Any) -> tuple[dict[str, Any], int]:
        from nbd.sync.endpoint import expected_wire

        results = await local.ops([{"op": "mkdir", "path": p} for p in plan.mkdirs]) if plan.mkdirs else []
        for path, r in zip(plan.mkdirs, results):
            if isinstance(r, str):
                raise FailedPrecondition(f"cannot make {path}: {r}", reason="FetchRefused")
        written: dict[str, Any] = {}
        done = 0
        for w in plan.writes:
            if w.entry.kind == "symlink":
                [r] = await local.ops(
                    [
                        {
                            "op": "symlink",
                            "path": w.path,
                            "expected": expected_wire(w.expected),
                            "target": w.entry.target,
                        }
                    ]
                )
                if isinstance(r, str):
                    raise FailedPrecondition(f"cannot write {w.path}: {r}", reason="FetchRefused")
                written[w.path] = w.entry
                continue
            entry = await local.write(w.path, w.expected, w.entry, remote.read(w.source, w.entry.digest))
            written[w.path] = entry
            done += w.entry.size
        return written, done


def _load_record(path: str, destination: str) -> dict[str, Any]:
    from nbd.sync.endpoint import entry_from_wire

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if data.get("destination") != destination:
        return {}
    out: dict[str, Any] = {}
    for wire in data.get("entries") or []:
        try:
            rel, entry = entry_from_wire(wire)
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        out[rel] = entry
    return out


def _save_record(path: str, destination: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(
            {
                "destination": destination,
                "entries": [
                    [p, e.kind, e.size, e.executable, e.digest, e.target] for p, e in sorted(record.items())
                ],
            },
            f,
        )
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _LogFollower:
    """Follows the log of every pod of a run (each rank's, each attempt's), once per pod."""

    def __init__(
        self, client: RunClient, name: str, emit: Emit, *, follow: bool, rank: int | None = None
    ) -> None:
        self.client = client
        self.name = name
        self.emit = emit
        self.follow = follow
        self.rank = rank
        self.nodes = 1
        self.seen: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(
                self._poll(), name=f"pods of run {self.name}"
            )

    async def _poll(self) -> None:
        while True:
            try:
                await self._scan()
            except NbdError as e:
                log.info("listing the pods of run %s: %s", self.name, e)
            await asyncio.sleep(POD_POLL)

    async def _scan(self) -> None:
        for pod in await self.client.run_pods(self.name):
            name = str(pod["metadata"]["name"])
            if name in self.seen or not _started(pod):
                continue
            rank = _rank_of(pod)
            if self.rank is not None and rank != self.rank:
                continue
            self.seen.add(name)
            self.tasks.append(
                asyncio.get_running_loop().create_task(self._stream(name, rank), name=f"log of {name}")
            )

    async def _stream(self, pod: str, rank: int) -> None:
        try:
            async for line in self.client.log_lines(pod, RUN_CONTAINER, follow=self.follow):
                self.emit(RunLog(rank, line, pod))
        except NotFound:
            return
        except NbdError as e:
            self.emit(Notice(f"the log of {pod} was cut: {e.message}", NoticeLevel.WARNING))

    async def once(self) -> None:
        """Every pod's log as it is now (no following)."""
        for pod in await self.client.run_pods(self.name):
            name = str(pod["metadata"]["name"])
            rank = _rank_of(pod)
            if (self.rank is not None and rank != self.rank) or not _started(pod):
                continue
            await self._stream(name, rank)

    async def drain(self) -> None:
        """After the run ended: the pods not seen yet, then every log to its end (bounded)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        try:
            await self._scan()
        except NbdError as e:
            log.info("listing the pods of run %s: %s", self.name, e)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=DRAIN_TIMEOUT)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, *([self._poller] if self._poller else []), return_exceptions=True)
        self._poller = None
