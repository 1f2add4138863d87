"""The launch: package, upload once, build once, run, forward and sync — one streamed conversation.

`Launcher.launch` is the Launch RPC's whole story, as an async generator of `nbd.events`
payloads. Each step reads what the cluster already has before doing work, so a relaunch of an
unchanged directory packages nothing (manifest hit), uploads nothing (the controller says the MD5
is stored) and builds nothing (the MD5 was built before), and goes straight to the running pod.

One session per (context, namespace, name); the name defaults to the directory's name. Which
session and which Notebook a launch may use (fresh launch or relaunch, `--attach`, name clashes,
suspended notebooks, what a cancel leaves) is decided by `nbd.launch.decisions` from what this
module observes; this module only observes, asks and acts. A relaunch of a live session whose
directory did not change is answered "stored" and "built" by the controller, its pod keeps running
(its spec is unchanged) and the launch re-attaches: the same forward, port and URL, the same sync.
A changed directory is uploaded and built, and the controller replaces the pod once the new image
exists.

Invariants:
- nothing is uploaded before the directory was packaged completely and its Dockerfile found;
- the session is in the registry from the first step on, with the phase it is in, so `nbctl list`
  shows a launch in progress and a failure says where it stopped;
- a cancelled launch (Ctrl-C) cancels the step in progress; an upload in flight is abandoned before
  the store commits it (a single PUT is atomic), so nothing half-done is left behind
  (`decisions.cancelled` says how the session is left);
- an archive whose bytes the store refused (BadDigest) or stored wrongly (the controller's
  MD5Mismatch) is forgotten, so the next launch packages from scratch;
- the controller's status is read only once it describes this launch's spec (observedGeneration),
  so a stale Unschedulable or Ready of an earlier spec never decides a launch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from nbd.app import App
from nbd.capabilities import LaunchRequest
from nbd.errors import FailedPrecondition, InvalidArgument, NbdError, NotFound
from nbd.events import Failure, LaunchEvent, LaunchPayload, Notice, NoticeLevel, PhaseChanged, Ready
from nbd.kube import KubeClient, KubeTarget, load_target
from nbd.launch.building import BuildError, Delivery, new_request_id, package, record_context_files
from nbd.launch.decisions import (
    Attach,
    Existing,
    Intent,
    Launch,
    ObservedNotebook,
    Refuse,
    cancelled,
    decide,
    forward_ports,
    new_session,
    observes_notebook,
    stopped,
)
from nbd.launch.jupyter import CUSTOM as CUSTOM_UI
from nbd.launch.jupyter import detect_ui, notebook_url
from nbd.launch.live import LiveSessions
from nbd.launch.notebooks import REASON_WORKSPACE_KEPT, NotebookClient
from nbd.launch.runtime import context_files_dir
from nbd.launch.spec import (
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    merge_spec,
    notebook_manifest,
    notebook_name_for,
    parse_notebook_file,
    session_spec,
    sync_max_file_size,
    validate_name,
)
from nbd.launch.starting import START_TIMEOUT, StartError, wait_until_ready
from nbd.session import LaunchRecord, NotebookState, NotebookStatus, Phase, Session, SessionKey, utcnow

__all__ = ["Launcher"]

log = logging.getLogger(__name__)

NOTEBOOK_FILE = "notebook.yaml"

Emit = Callable[[LaunchPayload], None]


@dataclasses.dataclass
class _Resolved:
    """One launch's request, resolved before touching the cluster."""

    target: KubeTarget
    spec: dict[str, Any]
    intent: Intent
    # Set once this launch wrote to the cluster (the Notebook applied): from then on a cancelled
    # launch may have changed what runs (see `decisions.cancelled`).
    applied: bool = False
    # The recording of the packaged context's files (the seed of a sync's ancestor), which runs
    # beside the upload and the build; the sync waits for it before it starts.
    recording: asyncio.Task[None] | None = None

    @property
    def key(self) -> SessionKey:
        return self.intent.key

    @property
    def name(self) -> str:
        return self.intent.key.name

    @property
    def directory(self) -> str:
        return self.intent.directory


class Launcher:
    """The launch capability: Launch and Stop (a `nbd.capabilities.Launcher`)."""

    def __init__(self, app: App, live: LiveSessions) -> None:
        self.app = app
        self.live = live
        self._locks: dict[SessionKey, asyncio.Lock] = {}
        self.spool_dir = os.path.join(app.paths.state_dir, "contexts")
        self.cache_dir = os.path.join(app.paths.state_dir, "context-cache")

    # --- launch ----------------------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> AsyncIterator[LaunchEvent]:
        resolved = await self._resolve(request)
        key = resolved.key
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            raise FailedPrecondition(
                f"notebook {resolved.name} is being launched already; wait for that launch or cancel it",
                reason="LaunchInProgress",
            )
        async with lock:
            queue: asyncio.Queue[LaunchPayload | None] = asyncio.Queue()

            def emit(payload: LaunchPayload) -> None:
                queue.put_nowait(payload)

            task = asyncio.get_running_loop().create_task(
                self._run(resolved, request, emit), name=f"launch {key}"
            )
            task.add_done_callback(lambda _t: queue.put_nowait(None))
            try:
                while True:
                    payload = await queue.get()
                    if payload is None:
                        break
                    yield LaunchEvent(session=key.name, payload=payload)
                failure = task.exception() if not task.cancelled() else None
                if failure is not None:
                    raise failure
            finally:
                if not task.done():
                    # Decided on the session as the cancel finds it, before the step is undone.
                    outcome = cancelled(
                        self.app.registry.find(key),
                        running=self.live.runtime(key) is not None,
                        applied=resolved.applied,
                    )
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    await self.live.update_if_present(key, phase=outcome.phase, message=outcome.message)

    async def _resolve(self, request: LaunchRequest) -> _Resolved:
        directory = os.path.abspath(request.directory or ".")
        if not os.path.isdir(directory):
            raise InvalidArgument(
                f"{directory} is not a directory; pass the project directory to launch", reason="NoDirectory"
            )
        file_spec: dict[str, Any] = {}
        path = request.notebook_file or os.path.join(directory, NOTEBOOK_FILE)
        if request.notebook_file and not os.path.isfile(path):
            raise InvalidArgument(
                f"notebook file {path} does not exist; fix the -f path", reason="NoNotebookFile"
            )
        if os.path.isfile(path):
            text = await asyncio.to_thread(_read_text, path)
            file_spec = parse_notebook_file(text, path)
        spec = merge_spec(file_spec, request.spec)
        name = validate_name(request.name) if request.name else notebook_name_for(os.path.basename(directory))
        target = await load_target(
            request.kubeconfig or None, request.context or None, request.namespace or None
        )
        intent = Intent(
            key=SessionKey(target.context, target.namespace, name),
            directory=directory,
            kubeconfig=target.kubeconfig,
            spec=session_spec(spec),
            image=str(spec.get("image") or ""),
            attach=request.attach,
            no_sync=request.no_sync,
        )
        return _Resolved(target, spec, intent)

    async def _run(self, resolved: _Resolved, request: LaunchRequest, emit: Emit) -> None:
        registry = self.app.registry
        key, intent = resolved.key, resolved.intent
        session = registry.find(key)
        runtime = self.live.runtime(key)
        existing = (
            None
            if session is None
            else Existing(
                session,
                running=runtime is not None,
                forwarding=runtime is not None and runtime.forward is not None,
            )
        )
        notebook: ObservedNotebook | None = None
        if observes_notebook(existing, intent):
            kube = self.live.clients.for_target(resolved.target)
            notebook = ObservedNotebook.of(
                await NotebookClient(kube, key.namespace, self.live.identity).get(resolved.name)
            )
        plan = decide(existing, notebook, intent)
        if isinstance(plan, Refuse):
            raise FailedPrecondition(plan.message, reason=plan.reason)
        if isinstance(plan, Attach):
            emit(Notice(f"attached to the running session {resolved.name}"))
            emit(PhaseChanged(Phase.READY, "attached"))
            emit(Ready(plan.session.url, plan.session.forward.local_port, plan.session))
            return

        kube = self.live.clients.for_target(resolved.target)
        notebooks = NotebookClient(kube, key.namespace, self.live.identity)
        if plan.fresh:
            await registry.put(new_session(intent, utcnow()))
        else:
            await registry.update(
                key, spec=intent.spec, kubeconfig=intent.kubeconfig, directory=intent.directory, message=""
            )

        try:
            await self._launch_steps(resolved, plan, request, notebooks, kube, emit)
        except asyncio.CancelledError:
            raise
        except NbdError as e:
            await self.live.update_if_present(key, phase=Phase.FAILED, message=e.message)
            emit(PhaseChanged(Phase.FAILED, e.message))
            emit(e.failure if isinstance(e, (BuildError, StartError)) else Failure(e.reason, e.message))
        except Exception as e:
            log.exception("launch of %s failed", key)
            message = f"the launch failed unexpectedly ({type(e).__name__}); see the daemon log (`nbctl daemon logs`)"
            await self.live.update_if_present(key, phase=Phase.FAILED, message=message)
            emit(PhaseChanged(Phase.FAILED, message))
            emit(Failure("Internal", message))

    async def _launch_steps(
        self,
        resolved: _Resolved,
        plan: Launch,
        request: LaunchRequest,
        notebooks: NotebookClient,
        kube: KubeClient,
        emit: Emit,
    ) -> None:
        registry = self.app.registry
        key, directory = resolved.key, resolved.directory
        spec = dict(resolved.spec)
        image = resolved.intent.image
        md5 = ""
        built_path = ""
        md5_b64 = ""
        if plan.package:
            built = await package(directory, self.spool_dir, self.cache_dir, emit)
            md5, built_path, md5_b64 = built.md5_hex, built.path, built.md5_b64
            resolved.recording = asyncio.get_running_loop().create_task(
                record_context_files(context_files_dir(self.live.sync_dir), directory, md5, built_path)
            )
            await registry.update(key, context_md5=md5)
            request_id = new_request_id()
            spec["build"] = {"upload": {"md5": md5, "requestID": request_id}}
            if request.rebuild:
                spec["build"]["rebuild"] = request_id

        manifest = notebook_manifest(resolved.name, key.namespace, spec, directory=directory)
        resolved.applied = True
        await notebooks.apply(manifest)

        if plan.package:
            request_id = spec["build"]["upload"]["requestID"]

            async def enter(phase: Phase) -> None:
                await registry.update(key, phase=phase)

            delivery = Delivery(
                enter, notebooks, key, directory, self.cache_dir, emit, rebuild=request.rebuild
            )
            uploaded, request_id = await delivery.upload(md5, md5_b64, built_path, request_id)
            image = await delivery.build(md5, built_path, request_id, uploaded=uploaded)
        await registry.update(key, image=image)

        await self._start(resolved, plan, request, notebooks, kube, emit)

    # --- start, forward, sync --------------------------------------------------------------------

    async def _start(
        self,
        resolved: _Resolved,
        plan: Launch,
        request: LaunchRequest,
        notebooks: NotebookClient,
        kube: KubeClient,
        emit: Emit,
    ) -> None:
        registry = self.app.registry
        key, name = resolved.key, resolved.name
        emit(PhaseChanged(Phase.STARTING, "starting the notebook pod"))
        await registry.update(key, phase=Phase.STARTING)
        started = await wait_until_ready(
            notebooks, name, emit, timeout=float(request.timeout_seconds or START_TIMEOUT)
        )
        token = await notebooks.token(started.token_secret)

        runtime = self.live.runtime_for(key, kube)
        preferred, explicit = forward_ports(registry.find(key), request.local_port)
        remote_port = int(resolved.spec.get("port") or DEFAULT_PORT)
        port = await runtime.start_forward(remote_port, preferred=preferred, explicit=explicit)
        ui = CUSTOM_UI if resolved.spec.get("command") else await detect_ui(port, token)
        url = notebook_url(port, ui, token)
        if ui.note:
            emit(Notice(ui.note, NoticeLevel.WARNING))
        current = registry.find(key)
        assert current is not None  # a launch's session leaves the registry only by a stop with --delete
        written = notebooks.written or current.runtime.notebook
        record = dataclasses.replace(
            current.runtime, launch=LaunchRecord(no_sync=request.no_sync), notebook=written
        )
        following = NotebookStatus(
            NotebookState.FOLLOWING, generation=written.generation if written else 0, observed=utcnow()
        )
        session = await registry.update(
            key, phase=Phase.READY, url=url, pod=started.pod, message="", runtime=record, notebook=following
        )
        if resolved.recording is not None:
            await resolved.recording
        if plan.sync:
            workdir = str(resolved.spec.get("workdir") or DEFAULT_WORKDIR)
            await runtime.start_sync(
                resolved.directory, workdir, max_file_size=sync_max_file_size(resolved.spec)
            )
        elif runtime.sync is not None:
            await runtime.stop_sync(flush=True)
        # Followed once its forward and sync run, so a change seen from now on stops them whole.
        self.live.follow(key, kube)
        session = registry.find(key) or session
        emit(PhaseChanged(Phase.READY, f"notebook ready at http://127.0.0.1:{port}{ui.path}"))
        emit(Ready(url, port, session, ui=ui.kind, note=ui.note))

    # --- stop ------------------------------------------------------------------------------------

    async def stop(self, session: Session, *, delete: bool, delete_workspace: bool = False) -> Session:
        registry = self.app.registry
        if session.phase == Phase.GONE and not delete:
            raise FailedPrecondition(
                f"the Notebook of {session.name} is gone (deleted in the cluster), there is nothing to "
                f"suspend; `nbctl launch {session.directory}` starts it anew, "
                f"`nbctl stop {session.name} --delete` forgets it",
                reason="NotebookGone",
            )
        kube = await self.live.clients.for_session(session)
        notebooks = NotebookClient(kube, session.namespace, self.live.identity)
        if delete and not delete_workspace:
            await _keep_workspace(notebooks, session.name)
        if delete:
            await self.live.unfollow(session.key)
        await registry.update(session.key, phase=Phase.STOPPING, message="")
        await self.live.release(session.key)
        if delete:
            await notebooks.delete(session.name)
            gone = await registry.remove(session.key) or session
            return dataclasses.replace(gone, **stopped(gone, deleted=True))
        try:
            await notebooks.patch_spec(session.name, {"suspend": True})
        except NotFound:
            pass
        current = registry.find(session.key) or session
        changes = stopped(current, deleted=False)
        if notebooks.written is not None:
            changes["runtime"] = dataclasses.replace(current.runtime, notebook=notebooks.written)
        result = await registry.update(session.key, **changes)
        if result.runtime.notebook is not None:
            self.live.follow(session.key, kube)
        return result


async def _keep_workspace(notebooks: NotebookClient, name: str) -> None:
    """Refuses to delete a Notebook whose workspace claim exists unless the caller said so: the
    claim is the Notebook's (owner reference), so deleting the Notebook deletes every file on it."""
    claims = [c for c in await notebooks.workspace_claims(name) if not c["metadata"].get("deletionTimestamp")]
    if not claims:
        return
    claim = claims[0]
    claim_name = str(claim["metadata"]["name"])
    requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
    size = str(
        ((claim.get("status") or {}).get("capacity") or {}).get("storage") or requests.get("storage") or ""
    )
    raise FailedPrecondition(
        f"notebook {name} keeps its files on workspace claim {claim_name} ({size}), which --delete deletes "
        f"with every file on it: pass --yes to delete both, or run `nbctl stop {name}` to only suspend it",
        reason=REASON_WORKSPACE_KEPT,
    )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(
            f"cannot read {path}: {e.strerror}; fix its permissions", reason="UnreadableNotebookFile"
        ) from e
