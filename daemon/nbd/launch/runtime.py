"""What keeps a ready notebook reachable and in sync: its forward and its sync session.

A `SessionRuntime` is the live part of one session in the daemon. It is created when a launch
reaches its pod and re-created from the persisted session when the daemon starts again, so the
forward comes back on the same port and the sync resumes from its ancestor without any rebuild.
It reports forward and sync state into the session registry, which persists it and streams it on
the Events RPC. Both report in `nbd.status`'s types, which the session holds as they come.

Invariant: what must survive a daemon restart (the forward's port, the sync's directories, the
container instance its ancestor is bound to, a pause) is in the session's typed `RuntimeRecord`,
written through the registry whenever it changes; nothing else is needed to resume.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nbd.errors import DeadlineExceeded, FailedPrecondition, NbdError
from nbd.events import Direction, SyncChange
from nbd.forward import Forward
from nbd.kube import NOTEBOOK, KubeClient, PodCache
from nbd.launch.spec import FIELD_MANAGER
from nbd.registry import SessionRegistry
from nbd.session import DEFAULT_SYNC_MAX_FILE_SIZE, ForwardRecord, RuntimeRecord, SessionKey, SyncRecord
from nbd.status import ForwardStatus, SyncState
from nbdcontract import ANNOTATION_ACTIVITY, COMPONENT_NOTEBOOK, GROUP, NOTEBOOK_CONTAINER, PLURAL, VERSION
from nbdcontract import LABEL_COMPONENT as COMPONENT_LABEL
from nbdcontract import LABEL_NOTEBOOK as NOTEBOOK_LABEL

if TYPE_CHECKING:
    from nbd.sync import SyncEvent, SyncSession
    from nbd.sync.snapshot import Snapshot

log = logging.getLogger(__name__)

POD_WAIT = 60.0  # seconds between log lines while the sync waits for a Ready pod
STOP_FLUSH = 10.0  # how long a stop lets the sync settle
TIMES_TIMEOUT = 60.0  # bound on setting the local file times in a pod
TIMES_ATTEMPTS = 3
# How often the daemon tells the controller's idle stop that the notebook is in use (the Notebook's
# nbd.dev/activity annotation) while a connection through the forward is open or the sync moves
# files; NBD_ACTIVITY_INTERVAL (seconds) overrides it.
ACTIVITY_INTERVAL = 60.0


def activity_interval() -> float:
    raw = os.environ.get("NBD_ACTIVITY_INTERVAL", "")
    try:
        value = float(raw) if raw else ACTIVITY_INTERVAL
    except ValueError:
        log.warning("NBD_ACTIVITY_INTERVAL=%r is not a number; using %g s", raw, ACTIVITY_INTERVAL)
        return ACTIVITY_INTERVAL
    return min(max(value, 0.5), 3600.0)


def context_files_dir(sync_dir: str) -> str:
    """Where the records of packaged build contexts live (see `nbd.sync.context_files`)."""
    return os.path.join(sync_dir, "context-files")


def notebook_selector(name: str) -> dict[str, str]:
    """The labels of a notebook's pod (the controller sets both)."""
    return {NOTEBOOK_LABEL: name, COMPONENT_LABEL: COMPONENT_NOTEBOOK}


class SessionRuntime:
    """The forward and the sync session of one notebook session, and their reporting.

    Args:
        registry: Where state changes of the session go.
        key: The session's key.
        kube: The cluster client (owned by the caller, shared between sessions of a target).
        state_dir: Where this session's sync ancestor lives.
    """

    def __init__(self, registry: SessionRegistry, key: SessionKey, kube: KubeClient, state_dir: str) -> None:
        self.registry = registry
        self.key = key
        self.kube = kube
        self.state_dir = state_dir
        self.forward: Forward | None = None
        self.sync: SyncSession | None = None
        self.pods: PodCache | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        # The sync's (directory, remote root), and the container instance (pod uid, containerID of
        # the notebook container) its ancestor was agreed with.
        self._sync_config = ("", "")
        self._max_file_size = DEFAULT_SYNC_MAX_FILE_SIZE
        self._pod_uid = ""
        self._container_id = ""
        self._paused = False
        self._stopping = False
        self._restored = False
        self._sync_dirty = False
        self._sync_reporting = False
        self._rebinding: asyncio.Task[None] | None = None
        # The pod (name, uid) the sync last connected to, and the uid whose file times were set.
        self._sync_pod = ("", "")
        self._times_for = ""
        self._activity: asyncio.Task[None] | None = None
        self._activity_interval = activity_interval()

    # --- forward ---------------------------------------------------------------------------------

    async def start_forward(self, remote_port: int, *, preferred: int | None, explicit: int | None) -> int:
        """Binds the notebook's local port (stable across relaunches) and starts relaying."""
        if self.forward is not None:
            if self.forward.remote_port == remote_port and (
                explicit is None or explicit == self.forward.local_port
            ):
                return self.forward.local_port
            await self.stop_forward()
        await self._ensure_pods()
        assert self.pods is not None
        forward = Forward(
            self.kube,
            self.key.namespace,
            notebook_selector(self.key.name),
            remote_port,
            local_port=preferred,
            explicit_port=explicit,
            pods=self.pods,
        )
        await forward.start()
        self.forward = forward
        forward.on_change(self._forward_changed)
        self._report_activity()
        await self._update_runtime(forward=forward.record(), changes={"forward": forward.status()})
        return forward.local_port

    async def restore_forward(self, record: ForwardRecord) -> int:
        """Re-creates a persisted forward on its port (after a daemon restart)."""
        await self._ensure_pods()
        assert self.pods is not None
        forward = Forward.from_record(self.kube, record, pods=self.pods)
        await forward.start()
        self.forward = forward
        self._report_activity()
        self._restored = True
        forward.on_change(self._forward_changed)
        changes: dict[str, Any] = {"forward": forward.status()}
        session = self.registry.find(self.key)
        if session is not None and forward.local_port != record.local_port:
            # The recorded port was taken meanwhile: the URL and the record follow the new one.
            log.warning(
                "port %d of %s is taken; the notebook is now at port %d",
                record.local_port,
                self.key,
                forward.local_port,
            )
            changes["url"] = _with_port(session.url, record.local_port, forward.local_port)
            await self._update_runtime(forward=forward.record(), changes=changes)
        else:
            await self.registry.update(self.key, **changes)
        return forward.local_port

    def _forward_changed(self, status: ForwardStatus) -> None:
        if self.registry.find(self.key) is None or self.forward is None:
            return
        changes: dict[str, Any] = {"forward": status}
        if status.pod:  # a replaced pod (another name) is the session's pod from now on
            changes["pod"] = status.pod
        self._schedule(self.registry.update(self.key, **changes))

    async def stop_forward(self) -> None:
        forward, self.forward = self.forward, None
        if forward is not None:
            await forward.stop()

    # --- activity, for the controller's idle stop ------------------------------------------------

    def _report_activity(self) -> None:
        if self._activity is None or self._activity.done():
            self._activity = asyncio.get_running_loop().create_task(
                self._activity_loop(), name=f"activity-{self.key.name}"
            )

    def _sync_moved(self) -> int:
        if self.sync is None:
            return 0
        status = self.sync.status()
        return status.files_to_local + status.files_to_remote

    async def _activity_loop(self) -> None:
        """Every interval: when a person's connection went through the forward, or the sync moved
        files, stamp the Notebook's activity annotation (what Jupyter cannot see of its use)."""
        moved = self._sync_moved()
        while True:
            await asyncio.sleep(self._activity_interval)
            now_moved = self._sync_moved()
            used = self.forward is not None and self.forward.take_activity()
            if not used and now_moved == moved:
                continue
            moved = now_moved
            try:
                await self.mark_active()
            except NbdError as e:
                log.debug("could not record the activity of %s: %s", self.key, e)

    async def mark_active(self) -> None:
        """Stamps the Notebook's nbd.dev/activity annotation with the time now."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.kube.run(  # type: ignore[call-arg]
            self.kube.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.key.namespace,
            PLURAL,
            self.key.name,
            {"metadata": {"annotations": {ANNOTATION_ACTIVITY: stamp}}},
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
            nbd_resource=NOTEBOOK,
        )

    async def _ensure_pods(self) -> None:
        if self.pods is None:
            self.pods = PodCache(self.kube, self.key.namespace, notebook_selector(self.key.name))
            await self.pods.start()

    # --- sync ------------------------------------------------------------------------------------

    def _ancestor_path(self) -> str:
        digest = hashlib.sha256(str(self.key).encode()).hexdigest()[:16]
        return os.path.join(self.state_dir, f"{self.key.name}-{digest}.json")

    async def start_sync(
        self, directory: str, remote_root: str, *, max_file_size: int = DEFAULT_SYNC_MAX_FILE_SIZE
    ) -> None:
        """Starts the two-way sync of `directory` with the pod's `remote_root` (resumes its ancestor).

        The ancestor is only valid against the container instance it was agreed with: a replaced
        pod's /content holds the image's files, not what was synced, and so would a restarted
        container's if /content were not a volume (a container restarts from its image). Read
        against the old ancestor their differences would look like edits made in the pod
        (reverting local edits, deleting files created since the build). So the session is bound
        to the pod uid and the notebook container's containerID, persisted with it; a connect
        that finds another pod or another instance restarts the sync with an empty ancestor,
        where nothing is deleted and every difference is kept on both sides (a conflict, local
        version wins the name). With /content on the pod's volume, a restarted container still
        holds what was synced, so that restart only re-reconciles equal files.

        A sync without an ancestor is seeded from the record of the build context the session
        launched (`nbd.sync.context_files`), where the pod holds exactly the context's version:
        local edits and deletions made since the packaging then travel to the new pod instead of
        becoming conflict copies.
        """
        if self.sync is not None:
            if max_file_size == self._max_file_size:
                return
            # A relaunch changed sync.maxFileSize: the sync restarts with it, from its ancestor.
            await self.stop_sync(flush=True)
        await self._ensure_pods()
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self._sync_config = (directory, remote_root)
        self._max_file_size = max_file_size
        session = self.registry.find(self.key)
        recorded = session.runtime.sync if session is not None else None
        same = (
            recorded is not None and recorded.directory == directory and recorded.remote_root == remote_root
        )
        self._pod_uid = recorded.pod_uid if recorded is not None and same else ""
        self._container_id = recorded.container_id if recorded is not None and same else ""
        # A pause outlives a daemon restart (this runtime restores a session); a launch syncs.
        self._paused = recorded.paused if recorded is not None and same and self._restored else False
        await self._update_runtime(sync=self._sync_record())
        await self._open_sync()

    def _sync_record(self) -> SyncRecord:
        directory, remote_root = self._sync_config
        return SyncRecord(
            directory,
            remote_root,
            pod_uid=self._pod_uid,
            paused=self._paused,
            container_id=self._container_id,
            max_file_size=self._max_file_size,
        )

    async def _open_sync(self) -> None:
        from nbd.sync import SyncOptions, SyncSession
        from nbd.sync.context_files import load as load_context_files
        from nbd.sync.exec_transport import exec_transport_factory

        directory, remote_root = self._sync_config
        factory = exec_transport_factory(
            self.kube.target, self.key.namespace, self._current_pod, NOTEBOOK_CONTAINER
        )
        context_files: Snapshot | None = None
        current = self.registry.find(self.key)
        if current is not None and not os.path.exists(self._ancestor_path()):
            context_files = await asyncio.to_thread(
                load_context_files, context_files_dir(self.state_dir), directory, current.context_md5
            )
        session = SyncSession(
            directory,
            factory,
            self._ancestor_path(),
            SyncOptions(remote_root=remote_root, max_file_size=self._max_file_size),
            on_event=self._sync_event,
            context_files=context_files,
        )
        self.sync = session
        await session.start()
        if self._paused:  # a pause outlives a daemon restart
            session.pause()
        if self.registry.find(self.key) is not None:
            await self.registry.update(self.key, sync=session.status())

    async def _current_pod(self) -> str:
        """The pod the sync agent runs in, called at every (re)connect of the sync session.

        Waits for a Ready pod without a deadline: a pod that is not Ready yet (restarting,
        rescheduled) is not an error of the sync, and the session is cancelled if it stops.
        """
        from nbd.sync.remote import AgentLost

        pods = self.pods
        assert pods is not None
        while True:
            try:
                name = await pods.wait_ready_pod(POD_WAIT)
                break
            except DeadlineExceeded as e:
                log.info("sync of %s still waits for its pod: %s", self.key, e.message)
        pod = pods.pods.get(name) or {}
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        # The cache is fed by a watch, in order: it can show an instance Ready after it died only
        # until the kubelet's not-Ready update arrives, and the next instance starts after the
        # restart backoff, so an agent started meanwhile reaches no container, never the next one.
        instance = (uid, _container_id(pod, NOTEBOOK_CONTAINER))
        self._sync_pod = (name, uid)
        if not self._pod_uid:
            self._pod_uid, self._container_id = instance
            await self._record_sync()
        elif uid and instance != (self._pod_uid, self._container_id):
            if self._rebinding is None and not self._stopping:
                self._rebinding = asyncio.get_running_loop().create_task(self._rebind(instance))
            if uid != self._pod_uid:
                raise AgentLost(
                    f"pod {name} replaced the pod the sync ran against; restarting the sync against it"
                )
            raise AgentLost(
                f"the notebook container of pod {name} was restarted (a new instance); "
                "restarting the sync against it"
            )
        return name

    async def _rebind(self, instance: tuple[str, str]) -> None:
        """Restarts the sync against a replaced pod or container, from an empty ancestor (see `start_sync`)."""
        old, self.sync = self.sync, None
        try:
            if old is not None:
                await old.stop()
            what = "pod" if instance[0] != self._pod_uid else "notebook container"
            log.info("%s of %s replaced: restarting its sync from an empty ancestor", what, self.key)
            await asyncio.to_thread(_remove, self._ancestor_path())
            self._pod_uid, self._container_id = instance
            await self._record_sync()
            await self._open_sync()
        except Exception:
            log.exception("restarting the sync of %s against its new pod failed", self.key)
        finally:
            self._rebinding = None

    async def _record_sync(self) -> None:
        session = self.registry.find(self.key)
        if session is None:
            return
        record = self._sync_record()
        if record != session.runtime.sync:
            await self._update_runtime(sync=record)

    def _sync_event(self, event: SyncEvent) -> None:
        from nbd.sync import ChangeApplied, ConflictFound, ProblemFound, StateChanged

        if self.registry.find(self.key) is None or self.sync is None:
            return
        if isinstance(event, ChangeApplied):
            direction = Direction.TO_LOCAL if event.direction == "to_local" else Direction.TO_REMOTE
            self.registry.publish_detail(
                self.key, SyncChange(direction, event.path, event.action, event.bytes)
            )
        elif isinstance(event, ConflictFound):
            self.registry.publish_detail(self.key, event.conflict)
        elif isinstance(event, ProblemFound):
            self.registry.publish_detail(self.key, event.problem)
        elif isinstance(event, StateChanged):
            self._sync_state_changed(event.state)
        self._report_sync()

    def _report_sync(self) -> None:
        """Puts the sync's status into the session soon. Updates are coalesced: while one is being
        written, later events only mark the status dirty, so a cycle copying thousands of files
        writes the session a few times, not once per file (the Events RPC still gets each file
        as a SyncChange)."""
        self._sync_dirty = True
        if not self._sync_reporting:
            self._sync_reporting = True
            self._schedule(self._push_sync())

    async def _push_sync(self) -> None:
        try:
            while self._sync_dirty:
                self._sync_dirty = False
                session = self.sync
                if session is None or self.registry.find(self.key) is None:
                    break
                await self.registry.update(self.key, sync=session.status())
        finally:
            self._sync_reporting = False

    def _sync_state_changed(self, state: SyncState) -> None:
        """Keeps the user's pause: recorded (it outlives a restart) and shown while reconnecting."""
        if state in (SyncState.PAUSED, SyncState.SYNCING):
            # PAUSED comes only from a pause, SYNCING from a resume or a cycle (never while paused).
            paused = state == SyncState.PAUSED
            if paused != self._paused:
                self._paused = paused
                self._schedule(self._record_sync())
        elif state == SyncState.WATCHING and self._sync_pod[1] and self._times_for != self._sync_pod[1]:
            # Settled with this pod for the first time: give its files from the image local times.
            self._times_for = self._sync_pod[1]
            self._schedule(self._restore_times(self._sync_pod[0]))
        elif state == SyncState.CONNECTING and self._paused:
            # The session (re)connects while paused and would show "connecting" until resumed;
            # pausing it again (after this callback returns) keeps the state the user chose.
            session = self.sync
            if session is not None:
                asyncio.get_running_loop().call_soon(
                    lambda: session.pause() if self.sync is session else None
                )

    async def _restore_times(self, pod: str) -> None:
        """Sets the local modification times on the pod's files that still have the archive's.

        Tried a few times (an exec can fail while the API server or the pod is busy); a failure
        costs only the times, never contents, so it ends in a log line.
        """
        from nbd.kube.exec import open_exec
        from nbd.sync import times

        directory, remote_root = self._sync_config
        for attempt in range(TIMES_ATTEMPTS):
            try:
                payload = await asyncio.to_thread(
                    lambda: times.encode(
                        times.local_times(directory, lambda rel, _d: rel.split("/", 1)[0] != ".git")
                    )
                )
                channel = await open_exec(
                    self.kube.target,
                    self.key.namespace,
                    pod,
                    NOTEBOOK_CONTAINER,
                    times.restore_script(remote_root),
                )
                try:
                    await channel.write_stdin(payload)
                    await channel.close_stdin()
                    out = await asyncio.wait_for(channel.read_stdout(), TIMES_TIMEOUT)
                    err = await asyncio.wait_for(channel.read_stderr(), TIMES_TIMEOUT)
                    code = await channel.wait(TIMES_TIMEOUT)
                finally:
                    await channel.close()
                if code == 0:
                    log.info(
                        "local file times set on %s path(s) of %s/%s",
                        out.decode(errors="replace").strip(),
                        self.key.namespace,
                        pod,
                    )
                    return
                log.warning(
                    "setting local file times in %s/%s exited %s: %s",
                    self.key.namespace,
                    pod,
                    code,
                    err.decode(errors="replace").strip()[-500:],
                )
            except (TimeoutError, NbdError, OSError) as e:
                log.warning(
                    "could not set local file times in %s/%s (attempt %d): %s",
                    self.key.namespace,
                    pod,
                    attempt + 1,
                    e,
                )
            if self.sync is None or self._stopping:
                return
            await asyncio.sleep(2.0 * (attempt + 1))

    async def stop_sync(self, *, flush: bool) -> None:
        """Stops the sync; `flush` first lets a connected sync settle (bounded by STOP_FLUSH)."""
        session = self.sync
        if session is not None and flush and self._rebinding is None:
            # Only a connected sync can settle: flushing one that waits for its pod would just
            # hold the stop for STOP_FLUSH seconds.
            if session.status().state in (SyncState.SCANNING, SyncState.SYNCING, SyncState.WATCHING):
                try:
                    await session.flush(STOP_FLUSH)
                except (TimeoutError, NbdError) as e:
                    log.warning("sync of %s did not settle before stopping: %s", self.key, e)
        self._stopping = True
        try:
            rebinding, self._rebinding = self._rebinding, None
            if rebinding is not None:
                rebinding.cancel()
                await asyncio.gather(rebinding, return_exceptions=True)
            session, self.sync = self.sync, None
            if session is not None:
                await session.stop()
        finally:
            self._stopping = False

    def sync_session(self) -> SyncSession:
        if self.sync is None:
            raise FailedPrecondition(
                f"session {self.key.name} does not sync (launched with --no-sync or stopped); relaunch to sync it",
                reason="SyncDisabled",
            )
        return self.sync

    # --- life ------------------------------------------------------------------------------------

    async def stop(self, *, flush: bool = True) -> None:
        activity, self._activity = self._activity, None
        if activity is not None:
            activity.cancel()
            await asyncio.gather(activity, return_exceptions=True)
        await self.stop_sync(flush=flush)
        await self.stop_forward()
        pods, self.pods = self.pods, None
        if pods is not None:
            await pods.stop()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _update_runtime(
        self,
        *,
        forward: ForwardRecord | None = None,
        sync: SyncRecord | None = None,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """Records the given parts of the runtime record (and other session `changes`) at once."""
        session = self.registry.find(self.key)
        if session is None:
            return
        record: RuntimeRecord = session.runtime
        if forward is not None:
            record = dataclasses.replace(record, forward=forward)
        if sync is not None:
            record = dataclasses.replace(record, sync=sync)
        await self.registry.update(self.key, runtime=record, **(changes or {}))

    def _schedule(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await coro
            except NbdError as e:  # the session was removed meanwhile
                log.debug("session %s update dropped: %s", self.key, e)

        task = asyncio.get_running_loop().create_task(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def _container_id(pod: dict[str, Any], container: str) -> str:
    """The containerID of `container`'s current instance in `pod`'s status ("" when not reported)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if isinstance(status, dict) and status.get("name") == container:
            return str(status.get("containerID") or "")
    return ""


def _with_port(url: str, old: int, new: int) -> str:
    """`url` (http://127.0.0.1:OLD/?token=...) pointing at port `new`."""
    return url.replace(f"127.0.0.1:{old}/", f"127.0.0.1:{new}/", 1) if url else url


def _remove(path: str) -> None:
    for p in (path, path + ".journal"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
