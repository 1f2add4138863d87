"""The session registry: the daemon's one owner of live sessions.

It keeps every session in memory, resolves the references users type ("NAME", "NAMESPACE/NAME",
"CONTEXT/NAMESPACE/NAME"), persists every change through the store and publishes it on the event
bus. Capabilities (launch, forward, sync) change sessions only through `put`, `update` and
`remove`, and report sync activity through `publish_detail`, so persistence and events stay in one
place.

Loop-only: call it from the event loop's thread. Invariants: the in-memory map is the truth; a
change is visible in memory and published before its persistence finishes, and the file on disk
always ends up holding the latest state of its session (each write takes the newest snapshot under
a per-key lock, so two writes finishing out of order cannot leave an older state on disk).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from nbd.bus import EventBus, Subscription
from nbd.errors import InvalidArgument, NotFound
from nbd.events import SessionEvent, SessionEventKind, SyncChange
from nbd.session import Session, SessionKey
from nbd.status import Conflict, Problem, utcnow
from nbd.store import SessionStore

__all__ = ["SessionRegistry", "parse_ref", "ref_matches"]

log = logging.getLogger(__name__)

R = TypeVar("R")
BlockingRunner = Callable[[Callable[[], R]], Awaitable[R]]


def parse_ref(ref: str) -> tuple[str | None, str | None, str]:
    """Splits a reference into (context, namespace, name); absent parts are None.

    A context may itself contain "/" (EKS contexts are ARNs), so everything before the last two
    parts is the context.
    """
    ref = ref.strip()
    if not ref:
        raise InvalidArgument(
            "a session reference is required: NAME, NAMESPACE/NAME or CONTEXT/NAMESPACE/NAME"
        )
    parts = ref.split("/")
    if any(not p for p in parts[-2:]):
        raise InvalidArgument(
            f"session reference {ref!r} is malformed; use NAME, NAMESPACE/NAME or CONTEXT/NAMESPACE/NAME"
        )
    if len(parts) == 1:
        return None, None, parts[0]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return "/".join(parts[:-2]), parts[-2], parts[-1]


def ref_matches(ref: str, key: SessionKey) -> bool:
    context, namespace, name = parse_ref(ref)
    return (
        key.name == name
        and (namespace is None or key.namespace == namespace)
        and (context is None or key.context == context)
    )


async def _to_thread(fn: Callable[[], R]) -> R:
    return await asyncio.to_thread(fn)


class SessionRegistry:
    def __init__(
        self,
        store: SessionStore,
        bus: EventBus[SessionEvent] | None = None,
        run_blocking: BlockingRunner[Any] = _to_thread,
    ) -> None:
        self.store = store
        self.bus: EventBus[SessionEvent] = bus if bus is not None else EventBus()
        self._run_blocking = run_blocking
        self._sessions: dict[SessionKey, Session] = {}
        self._write_locks: dict[SessionKey, asyncio.Lock] = {}
        self._pending: set[asyncio.Task[None]] = set()

    # --- loading ---------------------------------------------------------------------------------

    async def load(self) -> builtins.list[Session]:
        """Reads the persisted sessions (at start); corrupted files are skipped by the store."""
        sessions = await self._run_blocking(self.store.load_all)
        for s in sessions:
            self._sessions[s.key] = s
        log.info("loaded %d session(s) from %s", len(sessions), self.store.directory)
        return list(sessions)

    # --- reading ---------------------------------------------------------------------------------

    def list(self) -> list[Session]:
        return sorted(self._sessions.values(), key=lambda s: (s.name, s.namespace, s.context))

    def find(self, key: SessionKey) -> Session | None:
        return self._sessions.get(key)

    def candidates(self, ref: str) -> builtins.list[Session]:
        return [s for s in self.list() if ref_matches(ref, s.key)]

    def resolve(self, ref: str) -> Session:
        """The one session `ref` names; NotFound or InvalidArgument (ambiguous) otherwise."""
        parse_ref(ref)  # A malformed reference is an error even when there are no sessions.
        found = self.candidates(ref)
        if not found:
            raise NotFound(f"no session {ref.strip()}; see `nbctl list`")
        if len(found) > 1:
            names = ", ".join(str(s.key) for s in found)
            raise InvalidArgument(
                f"session reference {ref.strip()!r} is ambiguous: it matches {names}; "
                "use NAMESPACE/NAME or CONTEXT/NAMESPACE/NAME"
            )
        return found[0]

    def ref_of(self, session: Session) -> str:
        """The shortest reference that names this session unambiguously among the current ones."""
        others = [k for k in self._sessions if k != session.key]
        if not any(k.name == session.name for k in others):
            return session.name
        if not any(k.name == session.name and k.namespace == session.namespace for k in others):
            return f"{session.namespace}/{session.name}"
        return str(session.key)

    # --- changing --------------------------------------------------------------------------------

    async def put(self, session: Session) -> Session:
        """Adds or replaces a session (stamping `updated`), persists it and publishes ADDED/UPDATED."""
        existed = session.key in self._sessions
        session = dataclasses.replace(session, updated=utcnow())
        self._sessions[session.key] = session
        self.bus.publish(
            SessionEvent(
                kind=SessionEventKind.UPDATED if existed else SessionEventKind.ADDED, session=session
            )
        )
        await self._persist(session.key)
        return session

    async def update(self, key: SessionKey | str, **changes: Any) -> Session:
        """Applies field changes to an existing session (by key or reference)."""
        current = self._sessions.get(key) if isinstance(key, SessionKey) else self.resolve(key)
        if current is None:
            raise NotFound(f"no session {key}; see `nbctl list`")
        return await self.put(dataclasses.replace(current, **changes))

    async def remove(self, key: SessionKey) -> Session | None:
        """Forgets a session and deletes its file; publishes REMOVED."""
        session = self._sessions.pop(key, None)
        if session is None:
            return None
        self.bus.publish(SessionEvent(kind=SessionEventKind.REMOVED, session=session))
        await self._persist(key)
        return session

    def publish_detail(self, key: SessionKey, detail: SyncChange | Conflict | Problem) -> None:
        """Publishes a sync change, conflict or problem of a session without changing it."""
        session = self._sessions.get(key)
        if session is None:
            return
        kind = {
            SyncChange: SessionEventKind.SYNC_CHANGE,
            Conflict: SessionEventKind.CONFLICT,
            Problem: SessionEventKind.PROBLEM,
        }[type(detail)]
        self.bus.publish(SessionEvent(kind=kind, session=session, detail=detail))

    def subscribe(
        self, refs: Iterable[str] = (), *, name: str = "events", maxsize: int | None = None
    ) -> Subscription[SessionEvent]:
        """A subscription to session events, filtered to `refs` (empty: all sessions).

        A reference may name a session that does not exist yet; its events arrive once it does.
        """
        wanted = [r for r in refs if r.strip()]
        for r in wanted:
            parse_ref(r)  # Malformed references fail here, at subscription time.

        def accept(event: SessionEvent) -> bool:
            return not wanted or any(ref_matches(r, event.session.key) for r in wanted)

        return self.bus.subscribe(name=name, maxsize=maxsize, accept=accept)

    def snapshot(self, refs: Iterable[str] = ()) -> builtins.list[SessionEvent]:
        wanted = [r for r in refs if r.strip()]
        return [
            SessionEvent(kind=SessionEventKind.SNAPSHOT, session=s)
            for s in self.list()
            if not wanted or any(ref_matches(r, s.key) for r in wanted)
        ]

    async def flush(self) -> None:
        """Waits for every write in flight (at shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # --- persistence -----------------------------------------------------------------------------

    async def _persist(self, key: SessionKey) -> None:
        # The write runs as its own task so that a caller cancelled mid-write (a client hanging up)
        # never leaves the file behind the in-memory state.
        task = asyncio.ensure_future(self._write_latest(key))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _write_latest(self, key: SessionKey) -> None:
        lock = self._write_locks.setdefault(key, asyncio.Lock())
        async with lock:
            latest = self._sessions.get(key)
            if latest is None:
                await self._run_blocking(lambda: self.store.delete(key))
            else:
                await self._run_blocking(lambda: self.store.save(latest))
