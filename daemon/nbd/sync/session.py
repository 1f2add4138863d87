"""One two-way sync session: the loop that keeps a local directory and the pod's /content equal.

The session owns two endpoints (local, remote), the ancestor (the last state both agreed on,
persisted atomically after every cycle) and a state machine the daemon exposes through its `Sync`
RPC. A cycle is scan → filter → reconcile → apply → settle → persist. After the first full scans,
cycles are driven by change notifications from both sides (debounced and coalesced), rescanning
only the paths that changed; a flush forces full rescans until a cycle finds nothing to do.

A lost agent stream (exec dropped, pod replaced) is not an error of the session: it reconnects
with backoff, rescans both sides fully and converges; the ancestor is what makes that free of
spurious conflicts. Per-path failures become `Problem`s; only the delete guard halts the session.
The session reports itself in `nbd.status`'s vocabulary (`SyncState`, `SyncStatus`, `Conflict`,
`Problem`), the same types the daemon's sessions hold and the API shows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from nbd.aio import cancel_and_wait, wait_event
from nbd.errors import DeadlineExceeded, FailedPrecondition, NbdError
from nbd.session import DEFAULT_SYNC_MAX_FILE_SIZE
from nbd.status import Conflict, NotSynced, Problem, SyncState, SyncStatus, from_epoch, utcnow
from nbd.sync.agent.ignore import rules_from_files
from nbd.sync.local import LocalEndpoint
from nbd.sync.reconcile import Change, DeleteGuard, Plan, leave_large, reconcile, seed_ancestor, settle
from nbd.sync.remote import AgentLost, RemoteEndpoint, TransportFactory
from nbd.sync.sides import Side
from nbd.sync.snapshot import (
    Entry,
    Snapshot,
    minimal_roots,
    restrict,
    symlink_escapes,
    without,
)
from nbd.sync.state import AncestorStore
from nbd.sync.transition import apply_plan

__all__ = [
    "SyncSession",
    "SyncOptions",
    "SyncEvent",
    "StateChanged",
    "ChangeApplied",
    "ConflictFound",
    "ProblemFound",
]

log = logging.getLogger(__name__)

MAX_CONFLICTS = 200
# Resolved conflicts kept for `nbctl sync NAME status` (the newest).
MAX_RESOLVED_CONFLICTS = 50


@dataclass(frozen=True)
class SyncOptions:
    """Tuning of one session; the defaults suit a notebook directory.

    `max_file_size` (bytes, 0: no limit) applies to both sides: a file above it stays where it
    is and is listed in `SyncStatus.not_synced`. One limit for both directions, so a file never
    travels one way and is then stuck on the other side's limit.
    """

    remote_root: str = "/content"
    max_file_size: int = DEFAULT_SYNC_MAX_FILE_SIZE
    debounce: float = 0.01
    max_debounce: float = 0.25
    delete_guard: DeleteGuard = DeleteGuard()
    full_rescan_interval: float = 600.0
    reconnect_min: float = 0.25
    reconnect_max: float = 30.0
    fsync: bool = True
    agent_cache_dir: str = "/tmp"
    python: str = "python3"


@dataclass(frozen=True)
class StateChanged:
    state: SyncState
    message: str


@dataclass(frozen=True)
class ChangeApplied:
    """`direction` is "to_local" or "to_remote"; `action` is create, modify or delete."""

    direction: str
    path: str
    action: str
    bytes: int


@dataclass(frozen=True)
class ConflictFound:
    conflict: Conflict


@dataclass(frozen=True)
class ProblemFound:
    problem: Problem


SyncEvent = StateChanged | ChangeApplied | ConflictFound | ProblemFound


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _release_free_memory() -> None:
    """Hand memory freed after a full scan (decoded scan replies, indexes) back to the system:
    glibc keeps freed blocks otherwise, and a 50,000-file scan frees tens of megabytes."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SyncSession:
    """Keep `local_root` and the remote root served by the agent in sync, both ways.

    Args:
        local_root: The local directory.
        transport_factory: Starts the agent (argv → `AgentTransport`), e.g. an exec into the pod.
        state_path: Where the ancestor is persisted (JSON, replaced atomically).
        options: Tuning; see `SyncOptions`.
        on_event: Called on the event loop with each `SyncEvent`; must not block.
        context_files: The entries of the build context the pod's image was built from (see
            `nbd.sync.reconcile.seed_ancestor`); used only when there is no persisted ancestor.
    """

    def __init__(
        self,
        local_root: str,
        transport_factory: TransportFactory,
        state_path: str,
        options: SyncOptions | None = None,
        on_event: Callable[[SyncEvent], None] | None = None,
        context_files: Mapping[str, Entry] | None = None,
    ) -> None:
        self.options = options or SyncOptions()
        self._context_files = context_files
        self.local_root = os.path.abspath(local_root)
        self.state_path = state_path
        self.on_event = on_event or (lambda event: None)
        o = self.options
        self.local = Side(LocalEndpoint(self.local_root, max_file_size=o.max_file_size, fsync=o.fsync))
        self.remote_endpoint = RemoteEndpoint(
            transport_factory,
            o.remote_root,
            max_file_size=o.max_file_size,
            cache_dir=o.agent_cache_dir,
            python=o.python,
            fsync=o.fsync,
        )
        self.remote = Side(self.remote_endpoint)
        self.ancestor: Snapshot = {}
        # The state, message, counters and conflicts; problems and files are added by `status()`.
        self._status = SyncStatus(
            state=SyncState.DISABLED, local_root=self.local_root, remote_root=o.remote_root
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._resumed = asyncio.Event()
        self._paused = False
        self._force = False
        self._flushes: list[asyncio.Future[None]] = []
        self._problems: dict[str, Problem] = {}
        self._last_full = 0.0
        self._started_local = False
        self._scan_problems: dict[str, Problem] = {}
        self._store = AncestorStore(state_path)
        self._unsettled: set[str] = set()
        self._ancestor_files = 0
        self._seeding = False
        self._not_synced: tuple[NotSynced, ...] = ()

    # -- public API

    async def start(self) -> None:
        """Load the ancestor and start the session's task (returns at once)."""
        if self._task is not None:
            return
        self.ancestor, conflicts = await asyncio.to_thread(self._store.load)
        if self._store.journal_entries:
            await asyncio.to_thread(
                self._store.save,
                dict(self.ancestor),
                conflicts,
                self._store.resolved[-MAX_RESOLVED_CONFLICTS:],
            )
        self._ancestor_files = sum(1 for e in self.ancestor.values() if not e.is_dir)
        self._seeding = not self.ancestor and bool(self._context_files)
        self._status = replace(
            self._status,
            conflicts=tuple(conflicts),
            resolved_conflicts=tuple(self._store.resolved[-MAX_RESOLVED_CONFLICTS:]),
        )
        self._set_state(SyncState.CONNECTING, "starting")
        self._task = asyncio.create_task(self._run(), name=f"sync {self.local_root}")

    async def stop(self) -> None:
        """Stop the task and both endpoints; the ancestor stays on disk for a later start."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self.remote_endpoint.close()
        await self.local.endpoint.close()
        self._started_local = False
        if self._store.journal_entries:
            await asyncio.to_thread(
                self._store.save,
                dict(self.ancestor),
                list(self._status.conflicts),
                self._status.resolved_conflicts,
            )
        for f in self._flushes:
            if not f.done():
                f.set_exception(FailedPrecondition("the sync session stopped"))
        self._flushes.clear()
        self._set_state(SyncState.DISABLED, "stopped")

    def pause(self) -> None:
        """Stop applying changes (watching and connection go on) until `resume`."""
        self._paused = True
        self._resumed.clear()
        self._set_state(SyncState.PAUSED, "paused")

    def resume(self, force: bool = False) -> None:
        """Resume after a pause or a halt; `force` lets the next cycle pass the delete guard."""
        self._paused = False
        self._force = force
        self._set_state(SyncState.SYNCING, "resuming" + (" (forced past the delete guard)" if force else ""))
        self.local.mark(None)
        self.remote.mark(None)
        self._resumed.set()
        self._wake.set()

    async def flush(self, timeout: float | None = 30.0) -> SyncStatus:
        """Rescan both sides fully and return once a cycle finds nothing left to do.

        Raises:
            DeadlineExceeded: not converged within `timeout`.
            FailedPrecondition: the session is paused, halted or stopped.
        """
        if self._task is None:
            raise FailedPrecondition("the sync session is not running; start it first")
        if self._paused or self._status.state == SyncState.HALTED:
            raise FailedPrecondition(
                f"the sync session is {self._status.state.name.lower()}: {self._status.message}"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append(fut)
        self.local.mark(None)
        self.remote.mark(None)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError as e:
            raise DeadlineExceeded(
                f"the sync did not settle within {timeout:g}s ({self._status.state.name.lower()}: "
                f"{self._status.message}); try again or check `nbctl sync status`"
            ) from e
        return self.status()

    def status(self) -> SyncStatus:
        problems = tuple(sorted(self._problems.values(), key=lambda p: p.path))
        return replace(
            self._status, problems=problems, not_synced=self._not_synced, files=self._ancestor_files
        )

    # -- internals

    def _emit(self, event: SyncEvent) -> None:
        """Hand an event to the daemon; a failing callback never stops the sync."""
        try:
            self.on_event(event)
        except Exception:
            log.exception("sync event callback failed on %r", event)

    def _set_state(self, state: SyncState, message: str) -> None:
        if self._status.state != state or self._status.message != message:
            self._status = replace(self._status, state=state, message=message)
            self._emit(StateChanged(state, message))

    def _on_local_change(self, paths: list[str] | None) -> None:
        self.local.mark(paths)
        self._wake.set()

    def _on_remote_change(self, paths: list[str] | None) -> None:
        self.remote.mark(paths)
        self._wake.set()

    async def _run(self) -> None:
        delay = self.options.reconnect_min
        while True:
            try:
                if not self._started_local:
                    await self.local.endpoint.start(self._on_local_change)
                    self._started_local = True
                self._set_state(SyncState.CONNECTING, "starting the sync agent in the pod")
                await self.remote_endpoint.close()
                await self.remote_endpoint.start(self._on_remote_change)
                self.local.mark(None)
                self.remote.mark(None)
                delay = self.options.reconnect_min
                await self._loop()
            except asyncio.CancelledError:
                raise
            except AgentLost as e:
                self._set_state(SyncState.CONNECTING, f"reconnecting: {e}")
            except NbdError as e:
                self._set_state(SyncState.ERROR, f"{e}; retrying in {delay:.0f}s")
            except Exception as e:  # keep the session alive; the log has the traceback
                log.exception("sync session failed")
                self._set_state(SyncState.ERROR, f"internal error: {e!r}; retrying in {delay:.0f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.options.reconnect_max)

    async def _loop(self) -> None:
        while True:
            if self._paused:
                await self._resumed.wait()
            if (
                self.options.full_rescan_interval
                and time.monotonic() - self._last_full > self.options.full_rescan_interval
            ):
                self.local.mark(None)
                self.remote.mark(None)
            if self.local.dirty or self.remote.dirty:
                await self._cycle()
                continue
            if self._status.state not in (SyncState.HALTED, SyncState.PAUSED):
                self._set_state(SyncState.WATCHING, "watching both sides")
            self._wake.clear()
            timeout = self.options.full_rescan_interval or None
            await wait_event(self._wake, timeout)
            await self._debounce()

    async def _debounce(self) -> None:
        """Let a burst of events (an editor's temp-file-and-rename save) finish first."""
        start = time.monotonic()
        while time.monotonic() - start < self.options.max_debounce:
            self._wake.clear()
            if not await wait_event(self._wake, self.options.debounce):
                return

    def _settle_flushes(self, error: BaseException | None = None) -> None:
        for f in self._flushes:
            if not f.done():
                if error is None:
                    f.set_result(None)
                else:
                    f.set_exception(error)
        self._flushes.clear()

    def _filtered(
        self, A: Snapshot, L: Snapshot, R: Snapshot
    ) -> tuple[Snapshot, Snapshot, Snapshot, set[str]]:
        """The three trees without what must not be synced: paths either side ignores, files
        above the size limit, paths a scan could not read, symbolic links leading outside the
        root. Sets `self._scan_problems` and `self._not_synced`."""
        A, L, R, listed = leave_large(
            A, L, R, self.local.large, self.remote.large, self.options.max_file_size
        )
        self._not_synced = tuple(listed)
        excluded: set[str] = set(self.local.problems) | set(self.remote.problems)
        problems: dict[str, Problem] = {}
        for side in (self.local, self.remote):
            for p in side.problems.values():
                problems[p.path] = p
        now = utcnow()
        for snap in (L, R):
            for path, e in snap.items():
                if e.kind == "symlink" and symlink_escapes(path, e.target):
                    excluded.add(path)
                    problems[path] = Problem(
                        path,
                        f"symbolic link to {e.target!r} leads outside the synced directory; not synced",
                        now,
                    )
        if self.local.rules != self.remote.rules:
            lr, rr = rules_from_files(self.local.rules), rules_from_files(self.remote.rules)
            for snap in (L, R):
                for path, e in snap.items():
                    if lr.ignored(path, e.is_dir) or rr.ignored(path, e.is_dir):
                        excluded.add(path)
        self._scan_problems = problems
        if excluded:
            L, R, A = without(L, excluded), without(R, excluded), without(A, excluded)
        return A, L, R, excluded

    def _views(self, roots: list[str] | None) -> tuple[Snapshot, Snapshot, Snapshot, set[str]]:
        if roots is None:
            return self._filtered(self.ancestor, self.local.snapshot, self.remote.snapshot)
        return self._filtered(
            restrict(self.ancestor, roots),
            restrict(self.local.snapshot, roots),
            restrict(self.remote.snapshot, roots),
        )

    async def _cycle(self) -> None:
        full = self.local.pending is None or self.remote.pending is None
        if full:
            self._set_state(SyncState.SCANNING, "scanning both sides")
        local_roots, remote_roots = await asyncio.gather(self.local.rescan(), self.remote.rescan())
        self.remote.share_with(self.local)
        self.local.share_with(self.remote)
        if full and self.local.pending == set() and self.remote.pending == set():
            self._last_full = time.monotonic()
        if self._paused:
            return
        # Reconcile only the changed subtrees (and paths a previous cycle left unsettled), unless
        # a side was fully rescanned or a whole side is empty (the refill rule needs whole trees).
        roots: list[str] | None = None
        if local_roots is not None and remote_roots is not None and not self._force:
            whole_side_empty = bool(self.ancestor) and not (self.local.snapshot and self.remote.snapshot)
            if not whole_side_empty:
                roots = minimal_roots(set(local_roots) | set(remote_roots) | self._unsettled)
        now = time.time()
        problems_before = self._problems
        if roots == []:
            plan = Plan()
            landed = 0
            problems = dict(problems_before)
        else:
            plan, landed, problems = await self._reconcile_and_apply(roots, now)
            if plan.halt_reason:
                return
        for path, p in problems.items():
            if path not in problems_before:
                self._emit(ProblemFound(p))
        self._problems = problems
        self._status = replace(self._status, last_cycle=from_epoch(now))
        if roots is None:
            _release_free_memory()
        if self._flushes:
            # A flush is answered by a full-scan cycle that changed nothing: both sides agree
            # (up to the paths reported as problems). Otherwise scan everything once more.
            if full and landed == 0 and not self.local.dirty and not self.remote.dirty:
                self._settle_flushes()
            else:
                self.local.mark(None)
                self.remote.mark(None)

    async def _reconcile_and_apply(
        self, roots: list[str] | None, now: float
    ) -> tuple[Plan, int, dict[str, Problem]]:
        if self._seeding and roots is None and not self.ancestor and self._context_files:
            await self._seed()
        A, L, R, excluded = self._views(roots)
        guard = None if self._force else self.options.delete_guard
        plan = reconcile(
            A,
            L,
            R,
            stamp=_stamp(now),
            guard=guard,
            refill=roots is None,
            ancestor_files=None if roots is None else self._ancestor_files,
        )
        if plan.halt_reason:
            self._set_state(SyncState.HALTED, plan.halt_reason)
            self._paused = True
            self._resumed.clear()
            self._settle_flushes(FailedPrecondition(f"the sync session halted: {plan.halt_reason}"))
            return plan, 0, self._problems
        self._force = False
        self._status = replace(self._status, cycles=self._status.cycles + 1)
        problems = dict(self._scan_problems)
        landed = 0
        conflicts: list[Conflict] = []
        if not plan.empty:
            self._set_state(SyncState.SYNCING, self._describe(plan))
            applied = await apply_plan(
                plan,
                self.local.endpoint,
                self.remote.endpoint,
                self.local.snapshot,
                self.remote.snapshot,
                self._report_change,
            )
            landed = len(applied.done_to_local) + len(applied.done_to_remote)
            for c in plan.conflicts:
                c = replace(c, time=from_epoch(now))
                conflicts.append(c)
                self._status = replace(self._status, conflicts=(*self._status.conflicts, c)[-MAX_CONFLICTS:])
                self._emit(ConflictFound(c))
            if roots is not None:  # conflict copies live beside the changed paths
                roots = minimal_roots(roots + [c.copy_path for c in plan.conflicts])
            A, L, R, excluded = self._views(roots)
            problems.update(self._scan_problems)
            for p in applied.problems:
                problems[p.path] = p
        # Settle: every path of the region both sides now agree on joins the ancestor.
        settled = settle(A, L, R)
        delta: dict[str, Entry | None] = {}
        for path in set(A) | set(L) | set(R):
            new = settled.get(path)
            old = self.ancestor.get(path)
            if old != new:
                delta[path] = new
            elif old is not new and new is not None:
                self.ancestor[path] = new  # the same state: share the object (memory), no journal
            if L.get(path) != R.get(path):
                self._unsettled.add(path)
            else:
                self._unsettled.discard(path)
        if roots is None:
            self._unsettled &= set(L) | set(R)
        for path, e in delta.items():
            if e is None:
                self.ancestor.pop(path, None)
            else:
                self.ancestor[path] = e
        if delta:
            self._ancestor_files = sum(1 for e in self.ancestor.values() if not e.is_dir)
        resolved = await asyncio.to_thread(self._resolved_conflicts)
        if resolved:
            done = {(c.path, c.copy_path) for c in resolved}
            self._status = replace(
                self._status,
                conflicts=tuple(c for c in self._status.conflicts if (c.path, c.copy_path) not in done),
                resolved_conflicts=(*self._status.resolved_conflicts, *resolved)[-MAX_RESOLVED_CONFLICTS:],
            )
        await self._persist(delta, conflicts, resolved)
        return plan, landed, problems

    async def _seed(self) -> None:
        """Give a sync without an ancestor the build context's entries the pod still holds, and
        persist them at once (so a crash after the first cycle keeps them)."""
        assert self._context_files is not None
        self._seeding = False
        seeded = seed_ancestor(self._context_files, self.remote.snapshot)
        if not seeded:
            return
        self.ancestor = seeded
        self._ancestor_files = sum(1 for e in seeded.values() if not e.is_dir)
        log.info("sync of %s starts from %d entries of its build context", self.local_root, len(seeded))
        await asyncio.to_thread(
            self._store.save,
            dict(self.ancestor),
            list(self._status.conflicts),
            self._status.resolved_conflicts,
        )

    def _resolved_conflicts(self) -> list[Conflict]:
        """The open conflicts the user resolved locally: the copy is gone (deleted or renamed), or
        the file was edited after the conflict."""
        resolved = []
        for c in self._status.conflicts:
            copy = os.path.join(self.local_root, *c.copy_path.split("/")) if c.copy_path else ""
            if copy and not os.path.lexists(copy):
                resolved.append(c)
                continue
            try:
                mtime = os.lstat(os.path.join(self.local_root, *c.path.split("/"))).st_mtime
            except OSError:
                continue  # the file itself is gone: the copy still holds the other side's version
            if c.time is not None and mtime > c.time.timestamp():
                resolved.append(c)
        return resolved

    async def _persist(
        self,
        delta: dict[str, Entry | None],
        conflicts: list[Conflict],
        resolved: list[Conflict] | None = None,
    ) -> None:
        resolved = resolved or []
        if not delta and not conflicts and not resolved:
            return
        if not self._store.needs_compaction(len(self.ancestor), pending=len(delta)):
            await asyncio.to_thread(self._store.append, delta, conflicts, resolved)
        else:  # a large delta (the first cycle): write the snapshot directly
            await asyncio.to_thread(
                self._store.save,
                dict(self.ancestor),
                list(self._status.conflicts),
                self._status.resolved_conflicts,
            )

    def _describe(self, plan: Plan) -> str:
        n_local, n_remote = len(plan.to_local), len(plan.to_remote)
        if plan.refilled:
            return f"refilling the {plan.refilled} side ({n_local + n_remote} changes)"
        return f"applying {n_remote} change(s) to the pod and {n_local} locally"

    def _report_change(self, direction: str, change: Change, nbytes: int) -> None:
        if change.new is not None and change.new.is_dir:
            pass
        elif direction == "to_local":
            s = self._status
            self._status = replace(
                s, files_to_local=s.files_to_local + 1, bytes_to_local=s.bytes_to_local + nbytes
            )
        else:
            s = self._status
            self._status = replace(
                s, files_to_remote=s.files_to_remote + 1, bytes_to_remote=s.bytes_to_remote + nbytes
            )
        self._emit(ChangeApplied(direction, change.path, change.action, nbytes))
