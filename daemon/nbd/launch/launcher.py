"""The launch: package, upload once, build once, run, forward and sync — one streamed conversation.

`Launcher.launch` is the Launch RPC's whole story, as an async generator of `nbd.events`
payloads. Each step reads what the cluster already has before doing work, so a relaunch of an
unchanged directory packages nothing (manifest hit), uploads nothing (the controller says the MD5
is stored) and builds nothing (the MD5 was built before), and goes straight to the running pod.

What a launch of a directory means (one session per (context, namespace, name); the name
defaults to the directory's name):

- No session yet: package, apply the Notebook, upload and build unless the cluster already has
  them, wait for the pod, forward, sync.
- A live session of the same directory: the directory is packaged again (stat-only when nothing
  changed) and the Notebook re-applied. When nothing changed, the controller answers "stored" and
  "built", the pod keeps running (its spec is unchanged), and the launch re-attaches: the same
  forward, port and URL, the same sync. A changed directory is uploaded and built, and the
  controller replaces the pod once the new image exists.
- A stopped (suspended) or failed session: the same steps; the forward comes back on the port the
  session had before when it is free.
- `--attach`: no packaging and no cluster writes; the live session's URL, or a clear error when
  there is no ready session to attach to.
- Another directory whose name gives the same notebook name in the same namespace: refused with a
  message naming the directory that owns the name and `--name` as the way out; nothing changes.

Invariants:
- nothing is uploaded before the directory was packaged completely and its Dockerfile found;
- the session is in the registry from the first step on, with the phase it is in, so `nbctl list`
  shows a launch in progress and a failure says where it stopped;
- a cancelled launch (Ctrl-C) cancels the step in progress; an upload in flight is abandoned before
  the store commits it (a single PUT is atomic), so nothing half-done is left behind. The session
  is marked failed ("launch cancelled"), except a relaunch of a ready session cancelled before it
  wrote to the cluster: that session stays ready, its forward and sync untouched;
- an archive whose bytes the store refused (BadDigest) or stored wrongly (the controller's
  MD5Mismatch) is forgotten, so the next launch packages from scratch;
- the controller's status is read only once it describes this launch's spec (observedGeneration),
  so a stale Unschedulable or Ready of an earlier spec never decides a launch.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from nbd.app import App
from nbd.capabilities import LaunchRequest, LogSource, LogsQuery, SyncAction
from nbd.errors import FailedPrecondition, InvalidArgument, NbdError, NotFound
from nbd.events import (
    Cached,
    CachedStep,
    Failure,
    LaunchEvent,
    LaunchPayload,
    LogLine,
    Notice,
    NoticeLevel,
    PhaseChanged,
    PodStatus,
    Progress,
    Ready,
)
from nbd.kube import KubeClient, KubeTarget, load_target
from nbd.launch import progress as prog
from nbd.launch.building import BuildError, Delivery, new_request_id
from nbd.launch.jupyter import CUSTOM as CUSTOM_UI
from nbd.launch.jupyter import detect_ui, notebook_url
from nbd.launch.notebooks import NotebookClient, containers_of
from nbd.launch.runtime import SessionRuntime
from nbd.launch.spec import (
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    LOCAL_DIRECTORY_ANNOTATION,
    merge_spec,
    notebook_manifest,
    notebook_name_for,
    parse_notebook_file,
    validate_name,
)
from nbd.session import LaunchRecord, NotebookSpec, Phase, Session, SessionKey, utcnow
from nbd.status import ForwardState, SyncState, SyncStatus

log = logging.getLogger(__name__)

NOTEBOOK_FILE = "notebook.yaml"
START_TIMEOUT = 900.0

Emit = Callable[[LaunchPayload], None]


def _session_spec(spec: dict[str, Any]) -> NotebookSpec:
    resources = spec.get("resources") or {}
    gpu = resources.get("gpu") or {}
    return NotebookSpec(
        image=str(spec.get("image") or ""),
        gpu_count=gpu.get("count"),
        gpu_type=str(gpu.get("type") or ""),
        cpu=str(resources.get("cpu") or ""),
        memory=str(resources.get("memory") or ""),
        env={e["name"]: e["value"] for e in spec.get("env") or []},
        command=tuple(spec.get("command") or ()),
        workdir=str(spec.get("workdir") or DEFAULT_WORKDIR),
        port=int(spec.get("port") or DEFAULT_PORT),
    )


@dataclasses.dataclass
class _Plan:
    """What one launch resolved before touching the cluster."""

    directory: str
    name: str
    target: KubeTarget
    spec: dict[str, Any]
    key: SessionKey
    # Set once this launch wrote to the cluster (the Notebook applied): from then on a cancelled
    # launch may have changed what runs, so it leaves the session failed.
    applied: bool = False


class Launcher:
    """The launch capability: Launch and Stop, and the runtimes that keep sessions alive."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.runtimes: dict[SessionKey, SessionRuntime] = {}
        self._clients: dict[tuple[str, str], KubeClient] = {}
        self._locks: dict[SessionKey, asyncio.Lock] = {}
        self.spool_dir = os.path.join(app.paths.state_dir, "contexts")
        self.cache_dir = os.path.join(app.paths.state_dir, "context-cache")
        self.sync_dir = os.path.join(app.paths.state_dir, "sync")

    # --- clients ---------------------------------------------------------------------------------

    def client_for(self, target: KubeTarget) -> KubeClient:
        """One client per (kubeconfig, context), shared by that cluster's sessions."""
        key = (target.kubeconfig, target.context)
        client = self._clients.get(key)
        if client is None:
            client = KubeClient(target)
            self._clients[key] = client
        return client

    async def _client(self, kubeconfig: str, context: str, namespace: str) -> KubeClient:
        key = (kubeconfig, context)
        client = self._clients.get(key)
        if client is None:
            target = await load_target(kubeconfig or None, context or None, namespace or None)
            client = KubeClient(target)
            self._clients[(kubeconfig, context)] = client
        return client

    def runtime(self, session: Session) -> SessionRuntime | None:
        return self.runtimes.get(session.key)

    # --- launch ----------------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> AsyncIterator[LaunchEvent]:
        plan = await self._plan(request)
        ref = plan.key.name
        lock = self._locks.setdefault(plan.key, asyncio.Lock())
        if lock.locked():
            raise FailedPrecondition(
                f"notebook {plan.name} is being launched already; wait for that launch or cancel it",
                reason="LaunchInProgress",
            )
        async with lock:
            queue: asyncio.Queue[LaunchPayload | None] = asyncio.Queue()

            def emit(payload: LaunchPayload) -> None:
                queue.put_nowait(payload)

            task = asyncio.get_running_loop().create_task(self._run(plan, request, emit), name=f"launch {plan.key}")
            task.add_done_callback(lambda _t: queue.put_nowait(None))
            try:
                while True:
                    payload = await queue.get()
                    if payload is None:
                        break
                    yield LaunchEvent(session=ref, payload=payload)
                failure = task.exception() if not task.cancelled() else None
                if failure is not None:
                    raise failure
            finally:
                if not task.done():
                    live = self.app.registry.find(plan.key)
                    was_ready = live is not None and live.phase == Phase.READY and plan.key in self.runtimes
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    if was_ready and not plan.applied:
                        # Cancelled before touching the cluster: the running notebook is as it was.
                        await self._mark(plan.key, Phase.READY, "the relaunch was cancelled; the notebook runs unchanged")
                    else:
                        await self._mark(plan.key, Phase.FAILED, "launch cancelled; run `nbctl launch` again to resume it")

    async def _plan(self, request: LaunchRequest) -> _Plan:
        directory = os.path.abspath(request.directory or ".")
        if not os.path.isdir(directory):
            raise InvalidArgument(f"{directory} is not a directory; pass the project directory to launch", reason="NoDirectory")
        file_spec: dict[str, Any] = {}
        path = request.notebook_file or os.path.join(directory, NOTEBOOK_FILE)
        if request.notebook_file and not os.path.isfile(path):
            raise InvalidArgument(f"notebook file {path} does not exist; fix the -f path", reason="NoNotebookFile")
        if os.path.isfile(path):
            text = await asyncio.to_thread(_read_text, path)
            file_spec = parse_notebook_file(text, path)
        spec = merge_spec(file_spec, request.spec)
        name = validate_name(request.name) if request.name else notebook_name_for(os.path.basename(directory))
        target = await load_target(request.kubeconfig or None, request.context or None, request.namespace or None)
        return _Plan(directory, name, target, spec, SessionKey(target.context, target.namespace, name))

    async def _run(self, plan: _Plan, request: LaunchRequest, emit: Emit) -> None:
        registry = self.app.registry
        existing = registry.find(plan.key)
        if existing is not None and existing.directory and existing.directory != plan.directory:
            raise FailedPrecondition(
                f"notebook {plan.name} in {plan.key.namespace} is already launched from {existing.directory}; "
                "pass another --name, or stop it first with `nbctl stop --delete`",
                reason="NameTaken",
            )
        runtime = self.runtimes.get(plan.key)
        if request.attach:
            if existing is None or existing.phase != Phase.READY or runtime is None or runtime.forward is None:
                raise FailedPrecondition(
                    f"there is no live session of {plan.name} to attach to; launch it without --attach",
                    reason="NothingToAttach",
                )
            emit(Notice(f"attached to the running session {plan.name}"))
            emit(PhaseChanged(Phase.READY, "attached"))
            emit(Ready(existing.url, existing.forward.local_port, existing))
            return

        kube = self.client_for(plan.target)
        notebooks = NotebookClient(kube, plan.key.namespace)
        if existing is None:
            await self._refuse_foreign(plan, notebooks)
        session_spec = _session_spec(plan.spec)
        now = utcnow()
        if existing is None:
            session = Session(
                name=plan.name, namespace=plan.key.namespace, context=plan.key.context,
                kubeconfig=plan.target.kubeconfig, directory=plan.directory, spec=session_spec,
                phase=Phase.PACKAGING, created=now, updated=now,
                sync=SyncStatus(state=SyncState.DISABLED if request.no_sync else SyncState.UNSPECIFIED),
            )
            await registry.put(session)
        else:
            await registry.update(plan.key, spec=session_spec, kubeconfig=plan.target.kubeconfig, directory=plan.directory, message="")

        try:
            await self._launch_steps(plan, request, notebooks, kube, emit)
        except asyncio.CancelledError:
            raise
        except NbdError as e:
            await self._mark(plan.key, Phase.FAILED, e.message)
            emit(PhaseChanged(Phase.FAILED, e.message))
            emit(e.failure if isinstance(e, (BuildError, _StartError)) else Failure(e.reason, e.message))
        except Exception as e:
            log.exception("launch of %s failed", plan.key)
            message = f"the launch failed unexpectedly ({type(e).__name__}); see the daemon log (`nbctl daemon logs`)"
            await self._mark(plan.key, Phase.FAILED, message)
            emit(PhaseChanged(Phase.FAILED, message))
            emit(Failure("Internal", message))

    async def _refuse_foreign(self, plan: _Plan, notebooks: NotebookClient) -> None:
        """A Notebook of that name launched from another directory (another machine, another user's
        daemon) is never taken over: applying ours would replace its pod and its content."""
        current = await notebooks.get(plan.name)
        annotations = ((current or {}).get("metadata") or {}).get("annotations") or {}
        owner = str(annotations.get(LOCAL_DIRECTORY_ANNOTATION) or "")
        if owner and owner != plan.directory:
            raise FailedPrecondition(
                f"notebook {plan.name} in {plan.key.namespace} already exists, launched from {owner} by another "
                f"nbd; pass another --name, or delete it first (kubectl delete notebook {plan.name} "
                f"-n {plan.key.namespace})",
                reason="NameTaken",
            )

    async def _launch_steps(
        self, plan: _Plan, request: LaunchRequest, notebooks: NotebookClient, kube: KubeClient, emit: Emit
    ) -> None:
        registry = self.app.registry
        spec = dict(plan.spec)
        image = spec.get("image") or ""
        md5 = ""
        built_path = ""
        md5_b64 = ""
        if not image:
            emit(PhaseChanged(Phase.PACKAGING, f"packaging {plan.directory}"))
            built = await self._package(plan.directory, emit)
            md5, built_path, md5_b64 = built.md5_hex, built.path, built.md5_b64
            for warning in built.warnings:
                emit(Notice(warning, NoticeLevel.WARNING))
            outside = built.links_outside
            if outside:
                # The build's fetch step refuses a context with such a link: say so before uploading.
                raise InvalidArgument(
                    f"{outside[0]} is a symlink pointing outside {plan.directory}, which the cluster's build "
                    "cannot unpack; add it to .dockerignore or replace it with a copy",
                    reason="LinkOutsideContext",
                )
            if built.cached:
                emit(Cached(CachedStep.PACKAGE, "the directory is unchanged since it was last packaged", md5))
            await registry.update(plan.key, context_md5=md5)
            spec["build"] = {"upload": {"md5": md5, "requestID": new_request_id()}}

        manifest = notebook_manifest(plan.name, plan.key.namespace, spec, directory=plan.directory)
        plan.applied = True
        await notebooks.apply(manifest)

        if not image:
            request_id = spec["build"]["upload"]["requestID"]
            delivery = Delivery(self.app.registry, notebooks, plan.key, plan.directory, self.cache_dir, emit)
            uploaded, request_id = await delivery.upload(md5, md5_b64, built_path, request_id)
            image = await delivery.build(md5, built_path, request_id, uploaded=uploaded)
        await registry.update(plan.key, image=image)

        await self._start(plan, request, notebooks, kube, emit)

    # --- packaging and upload --------------------------------------------------------------------

    async def _package(self, directory: str, emit: Emit) -> Any:
        from nbd.context import build_context

        started = time.monotonic()

        def progress(p: Any) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            emit(Progress(
                Phase.PACKAGING,
                done_bytes=int(getattr(p, "done_bytes", 0)),
                total_bytes=int(getattr(p, "total_bytes", 0)),
                done_files=int(getattr(p, "done_files", 0)),
                total_files=int(getattr(p, "total_files", 0)),
                bytes_per_second=getattr(p, "done_bytes", 0) / elapsed,
            ))

        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        return await build_context(directory, self.spool_dir, self.cache_dir, progress=progress)

    # --- start, forward, sync --------------------------------------------------------------------

    async def _start(self, plan: _Plan, request: LaunchRequest, notebooks: NotebookClient, kube: KubeClient, emit: Emit) -> None:
        registry = self.app.registry
        emit(PhaseChanged(Phase.STARTING, "starting the notebook pod"))
        await registry.update(plan.key, phase=Phase.STARTING)
        last: list[PodStatus | None] = [None]

        async def pod_of(nb: dict[str, Any]) -> PodStatus | None:
            # A pod being deleted belongs to the previous spec: the controller replaces it.
            pods = [p for p in await notebooks.notebook_pods(plan.name) if not p["metadata"].get("deletionTimestamp")]
            return prog.pod_status(pods[-1]) if pods else None

        ready_nb: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                async for nb in notebooks.watch(plan.name):
                    if not prog.is_current(nb):
                        continue  # the controller has not seen this launch's spec yet
                    pod = await pod_of(nb)
                    if pod is not None and pod != last[0]:
                        last[0] = pod
                        emit(pod)
                    failure = prog.start_failure(nb, pod)
                    if failure is not None:
                        raise _StartError(failure)
                    cond = prog.condition(nb, "Ready")
                    if cond is not None and cond.get("status") == "True" and pod is not None and pod.ready:
                        ready_nb = nb
                        break
                    # Pod changes do not always change the Notebook: look again shortly.
                    if pod is None or not pod.ready:
                        await asyncio.sleep(0.05)
        except TimeoutError as e:
            raise FailedPrecondition(
                f"the notebook did not become ready within {START_TIMEOUT:.0f}s; see `nbctl logs {plan.name}`",
                reason="StartTimeout",
            ) from e
        assert ready_nb is not None
        status = ready_nb.get("status") or {}
        token = await notebooks.token(str(status.get("tokenSecret") or f"{plan.name}-token"))
        pod_name = str(status.get("pod") or (last[0].pod if last[0] else ""))

        runtime = self.runtimes.get(plan.key)
        if runtime is None:
            runtime = SessionRuntime(registry, plan.key, kube, self.sync_dir)
            self.runtimes[plan.key] = runtime
        session = registry.find(plan.key)
        remembered = session.runtime.forward.local_port if session and session.runtime.forward else 0
        remote_port = int(plan.spec.get("port") or DEFAULT_PORT)
        explicit = request.local_port or None
        port = await runtime.start_forward(remote_port, preferred=remembered or DEFAULT_PORT, explicit=explicit)
        ui = CUSTOM_UI if plan.spec.get("command") else await detect_ui(port, token)
        url = notebook_url(port, ui, token)
        if ui.note:
            emit(Notice(ui.note, NoticeLevel.WARNING))
        current = registry.find(plan.key)
        assert current is not None  # a launch's session leaves the registry only by a stop with --delete
        record = dataclasses.replace(current.runtime, launch=LaunchRecord(no_sync=request.no_sync))
        session = await registry.update(plan.key, phase=Phase.READY, url=url, pod=pod_name, message="", runtime=record)
        if not request.no_sync:
            workdir = str(plan.spec.get("workdir") or DEFAULT_WORKDIR)
            await runtime.start_sync(plan.directory, workdir)
        elif runtime.sync is not None:
            await runtime.stop_sync(flush=True)
        session = registry.find(plan.key) or session
        emit(PhaseChanged(Phase.READY, f"notebook ready at http://127.0.0.1:{port}{ui.path}"))
        emit(Ready(url, port, session, ui=ui.kind, note=ui.note))

    async def _mark(self, key: SessionKey, phase: Phase, message: str) -> None:
        if self.app.registry.find(key) is not None:
            await self.app.registry.update(key, phase=phase, message=message)

    # --- stop and resume -------------------------------------------------------------------------

    async def stop(self, session: Session, *, delete: bool) -> Session:
        registry = self.app.registry
        await registry.update(session.key, phase=Phase.STOPPING, message="")
        runtime = self.runtimes.pop(session.key, None)
        if runtime is not None:
            await runtime.stop(flush=True)
        kube = await self._client(session.kubeconfig, session.context, session.namespace)
        notebooks = NotebookClient(kube, session.namespace)
        if delete:
            await notebooks.delete(session.name)
            removed = await registry.remove(session.key)
            return dataclasses.replace(removed or session, phase=Phase.STOPPED, message="deleted")
        try:
            await notebooks.patch_spec(session.name, {"suspend": True})
        except NotFound:
            pass
        current = registry.find(session.key) or session
        return await registry.update(
            session.key, phase=Phase.STOPPED, url="", pod="",
            forward=dataclasses.replace(current.forward, state=ForwardState.STOPPED, open_connections=0, pod=""),
            sync=dataclasses.replace(current.sync, state=SyncState.DISABLED, message="stopped with the notebook"),
            message="stopped; the Notebook is suspended (relaunch to start it again, --delete to remove it)",
        )

    async def resume_all(self, app: App) -> None:
        """At daemon start: bring back the forwards and syncs of ready sessions (no rebuild)."""
        for session in list(app.registry.list()):
            if session.phase != Phase.READY:
                if session.phase in (Phase.PACKAGING, Phase.UPLOADING, Phase.BUILDING, Phase.STARTING, Phase.STOPPING):
                    await self._mark(session.key, Phase.FAILED, "the daemon stopped during this step; relaunch to continue")
                continue
            try:
                await self.resume(session)
            except NbdError as e:
                log.warning("could not resume session %s: %s", session.key, e)
                await registry_update_safe(app, session.key, message=f"could not resume: {e.message}")
            except Exception:
                log.exception("could not resume session %s", session.key)

    async def resume(self, session: Session) -> None:
        kube = await self._client(session.kubeconfig, session.context, session.namespace)
        runtime = SessionRuntime(self.app.registry, session.key, kube, self.sync_dir)
        self.runtimes[session.key] = runtime
        record = session.runtime
        if record.forward is not None:
            await runtime.restore_forward(record.forward)
        if record.sync is not None and not record.launch.no_sync:
            await runtime.start_sync(record.sync.directory, record.sync.remote_root)
        log.info("resumed session %s", session.key)

    async def close(self, app: App) -> None:
        for key, runtime in list(self.runtimes.items()):
            try:
                await runtime.stop(flush=False)
            except Exception:
                log.exception("stopping session %s failed", key)
        self.runtimes.clear()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # --- logs and sync ---------------------------------------------------------------------------

    async def logs(self, session: Session, query: LogsQuery) -> AsyncIterator[LogLine]:
        kube = await self._client(session.kubeconfig, session.context, session.namespace)
        notebooks = NotebookClient(kube, session.namespace)
        if query.source == LogSource.BUILD:
            if not session.context_md5:
                raise FailedPrecondition(
                    f"session {session.name} has no build (it runs a prebuilt image)", reason="NoBuild"
                )
            pods = await notebooks.build_pods(session.context_md5)
            if not pods:
                raise NotFound(
                    f"the build pod of context {session.context_md5} is gone (the image was built earlier or the "
                    "Job was cleaned up); relaunch after a change to see a new build log",
                    reason="NoBuildPod",
                )
        else:
            pods = await notebooks.notebook_pods(session.name)
            if not pods:
                raise NotFound(f"notebook {session.name} has no pod now (stopped?); relaunch it", reason="NoPod")
        pod = pods[-1]
        containers = [query.container] if query.container else containers_of(pod)
        for container in containers:
            async for line in notebooks.log_lines(
                str(pod["metadata"]["name"]), container, follow=query.follow, tail_lines=query.tail_lines
            ):
                yield LogLine(line, container)

    async def sync(self, session: Session, action: SyncAction, *, force: bool = False) -> SyncStatus:
        runtime = self.runtimes.get(session.key)
        if runtime is None:
            raise FailedPrecondition(
                f"session {session.name} is not running; relaunch it with `nbctl launch`", reason="NotRunning"
            )
        sync = runtime.sync_session()
        if action == SyncAction.PAUSE:
            sync.pause()
        elif action == SyncAction.RESUME:
            sync.resume(force=force)
        elif action == SyncAction.FLUSH:
            await sync.flush(60.0)
        status = sync.status()
        await self.app.registry.update(session.key, sync=status)
        return status


class _StartError(FailedPrecondition):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message, reason=failure.reason)
        self.failure = failure


async def registry_update_safe(app: App, key: SessionKey, **changes: Any) -> None:
    if app.registry.find(key) is not None:
        await app.registry.update(key, **changes)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read {path}: {e.strerror}; fix its permissions", reason="UnreadableNotebookFile") from e


def _b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


__all__ = ["Launcher"]
