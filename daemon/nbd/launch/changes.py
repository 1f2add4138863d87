"""What a change of the Notebook in the cluster means for its session, decided without I/O.

The daemon follows each session's Notebook with a watch (`nbd.launch.following`); every state it
sees, and its absence, goes through `judge`, which compares it with what this daemon last wrote
(the session's `NotebookRecord`: the object's uid and the generation after the daemon's last write
of its spec) and says what the session becomes. The same rules run on the first read after a
daemon start, so what changed while no daemon ran is acted on the same way. Tested by table in
tests/launch/test_changes.py.

- Deleted (a DELETED event, a list without it, a deletionTimestamp, or another object of the same
  name): the session is `gone`. The reason names the deleter when an nbd annotated the object
  before deleting it (`nbd.dev/deleted-by`); a Kubernetes DELETE records no author otherwise.
- Suspended while the session is ready (or failed): the session is `suspended`, naming the field
  manager of the write (e.g. "kubectl-patch", another nbd).
- The spec changed (a generation past the recorded one) by someone else: the session keeps its
  phase and its Notebook status says who changed it. The daemon never writes the Notebook back.
- The daemon's own writes (its field manager with its own identity in `nbd.dev/written-by`) are
  adopted: the record moves to the new generation.
- A session in the middle of a launch or a stop, or already gone, is left to what drives it; a
  session whose Notebook this daemon never wrote has nothing to follow, except a ready one
  recorded before daemons followed Notebooks, which adopts what it finds.

Who made a write is read from `metadata.managedFields`: the newest entry (by time, later entries
winning ties) that owns fields of the spec. Its time has a one-second resolution, so two writes in
the same second may be attributed to the later entry of the list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nbd.launch.spec import FIELD_MANAGER, WRITTEN_BY_ANNOTATION
from nbd.session import NotebookRecord, Session
from nbd.status import ForwardState, NotebookState, Phase, SyncState
from nbdcontract import ANNOTATION_DELETED_BY, ANNOTATION_IDLE_STOPPED

__all__ = [
    "Gone",
    "Note",
    "Seen",
    "Suspended",
    "Verdict",
    "gone_changes",
    "judge",
    "spec_writer",
    "suspended_changes",
]

# A session in one of these phases is being launched or stopped: its launch or stop decides.
_DRIVEN = frozenset({Phase.PACKAGING, Phase.UPLOADING, Phase.BUILDING, Phase.STARTING, Phase.STOPPING})
_RUNNING = frozenset({Phase.READY, Phase.FAILED})
_AT_REST = frozenset({Phase.STOPPED, Phase.SUSPENDED})


@dataclass(frozen=True, kw_only=True)
class Seen:
    """The Notebook as the follower saw it; `deleted` marks the last state a DELETED event carried."""

    uid: str
    generation: int = 0
    suspend: bool = False
    deleting: bool = False
    deleted: bool = False
    writer: str = ""  # the field manager of the newest write of the spec ("" unknown)
    written_by: str = ""  # the nbd that last wrote the spec (its annotation)
    deleted_by: str = ""  # the nbd that deleted it (its annotation)
    idle_stopped: str = ""  # how long it was idle when the controller's idle stop suspended it
    # status.idle as the controller reports it: the setting, when it stops if unused, and why.
    idle_stop_after: str = ""
    idle_stop_at: str = ""
    idle_message: str = ""

    @classmethod
    def of(cls, notebook: dict[str, Any], *, deleted: bool = False) -> Seen:
        meta = notebook.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        spec = notebook.get("spec") or {}
        idle = (notebook.get("status") or {}).get("idle") or {}
        if not isinstance(idle, dict):
            idle = {}
        generation = meta.get("generation")
        return cls(
            uid=str(meta.get("uid") or ""),
            generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else 0,
            suspend=spec.get("suspend") is True,
            deleting=bool(meta.get("deletionTimestamp")),
            deleted=deleted,
            writer=spec_writer(meta.get("managedFields")),
            written_by=str(annotations.get(WRITTEN_BY_ANNOTATION) or ""),
            deleted_by=str(annotations.get(ANNOTATION_DELETED_BY) or ""),
            idle_stopped=str(annotations.get(ANNOTATION_IDLE_STOPPED) or ""),
            idle_stop_after=str(idle.get("stopAfter") or ""),
            idle_stop_at=str(idle.get("stopAt") or "") if not idle.get("busy") else "",
            idle_message=str(idle.get("message") or ""),
        )


def spec_writer(managed_fields: Any) -> str:
    """The manager of the newest managedFields entry that owns spec fields ("" when none does)."""
    best: tuple[str, int] | None = None
    manager = ""
    for index, entry in enumerate(managed_fields if isinstance(managed_fields, list) else []):
        if not isinstance(entry, dict) or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if not isinstance(fields, dict) or "f:spec" not in fields:
            continue
        rank = (str(entry.get("time") or ""), index)
        if best is None or rank > best:
            best, manager = rank, str(entry.get("manager") or "")
    return manager


# --- what the session becomes --------------------------------------------------------------------


@dataclass(frozen=True)
class Gone:
    """The Notebook is deleted: stop the forward and the sync (after a last pull), phase GONE."""

    message: str
    by: str = ""


@dataclass(frozen=True)
class Suspended:
    """Suspended elsewhere: stop the forward and the sync (after a last pull), phase SUSPENDED;
    `record` adopts the suspend's generation, so it is not read as a spec change later."""

    message: str
    by: str
    record: NotebookRecord


@dataclass(frozen=True)
class Note:
    """Only the session's Notebook status changes (and, for the daemon's own writes, its record)."""

    state: NotebookState
    message: str = ""
    by: str = ""
    generation: int = 0
    record: NotebookRecord | None = None


Verdict = Gone | Suspended | Note


def _who(seen: Seen, identity: str, *, deleter: bool = False) -> str:
    """Who made the change, as a user reads it ("" when unknown)."""
    if deleter:
        nbd = seen.deleted_by
        if not nbd:
            return ""
        return "this nbd" if nbd == identity else f"another nbd ({nbd})"
    if seen.writer == FIELD_MANAGER:
        if seen.written_by and seen.written_by != identity:
            return f"another nbd ({seen.written_by})"
        return "nbd"
    return seen.writer


def _ours(seen: Seen, identity: str) -> bool:
    return seen.writer == FIELD_MANAGER and seen.written_by == identity


def _by(who: str) -> str:
    return f" by {who}" if who else ""


def judge(session: Session, seen: Seen | None, *, identity: str) -> Verdict | None:
    """What the session becomes now that its Notebook is `seen` (None: there is none).

    `identity` is this daemon's (what it writes in `nbd.dev/written-by`). None: nothing to do.
    """
    record = session.runtime.notebook
    if session.phase in _DRIVEN or session.phase == Phase.GONE:
        return None
    if record is None and session.phase != Phase.READY:
        return None
    name = session.name
    ways = f"the local files are kept; `nbctl launch {session.directory or 'DIR'}` starts it anew, `nbctl stop {name} --delete` forgets it"
    if seen is None or seen.deleted or seen.deleting:
        who = _who(seen, identity, deleter=True) if seen is not None else ""
        return Gone(f"the Notebook was deleted in the cluster{_by(who)}; {ways}", who)
    if record is None:
        # A ready session recorded before its daemon followed Notebooks: what runs now is its.
        return Note(
            NotebookState.FOLLOWING,
            generation=seen.generation,
            record=NotebookRecord(seen.uid, seen.generation),
        )
    if record.uid and seen.uid != record.uid:
        who = _who(seen, identity)
        return Gone(f"the Notebook was deleted in the cluster and created again{_by(who)}; {ways}", who)
    changed = seen.generation > record.generation
    if changed and _ours(seen, identity):
        return Note(
            NotebookState.FOLLOWING,
            generation=seen.generation,
            record=NotebookRecord(seen.uid, seen.generation),
        )
    who = _who(seen, identity)
    if seen.suspend and session.phase in _RUNNING and seen.idle_stopped:
        return Suspended(
            f"stopped after {seen.idle_stopped} idle (no kernel, terminal, browser or sync activity); "
            f"`nbctl launch {session.directory or 'DIR'}` starts it again",
            "the idle stop",
            NotebookRecord(seen.uid, seen.generation),
        )
    if seen.suspend and session.phase in _RUNNING:
        return Suspended(
            f"suspended in the cluster{_by(who)}; `nbctl launch {session.directory or 'DIR'}` starts it again",
            who,
            NotebookRecord(seen.uid, seen.generation),
        )
    if changed and not seen.suspend and session.phase in _AT_REST:
        return Note(
            NotebookState.CHANGED,
            f"the Notebook was started again in the cluster{_by(who)}; "
            f"`nbctl launch {session.directory or 'DIR'}` reconnects to it",
            who,
            seen.generation,
        )
    if changed:
        return Note(
            NotebookState.CHANGED,
            f"the Notebook's spec was changed in the cluster{_by(who)}; nbd leaves it so "
            f"(`nbctl launch {session.directory or 'DIR'}` applies this directory's spec again)",
            who,
            seen.generation,
        )
    if session.phase == Phase.SUSPENDED:
        return Note(
            NotebookState.SUSPENDED, session.notebook.message, session.notebook.changed_by, seen.generation
        )
    return Note(NotebookState.FOLLOWING, generation=seen.generation)


# --- the session changes of a verdict ------------------------------------------------------------


def _at_rest(current: Session, sync_message: str) -> dict[str, Any]:
    return {
        "url": "",
        "pod": "",
        "forward": dataclasses.replace(
            current.forward, state=ForwardState.STOPPED, open_connections=0, pod=""
        ),
        "sync": dataclasses.replace(current.sync, state=SyncState.DISABLED, message=sync_message),
    }


def gone_changes(current: Session, verdict: Gone) -> dict[str, Any]:
    """The session changes once its forward and sync stopped for a deleted Notebook."""
    return {
        **_at_rest(current, "stopped: the Notebook is gone; the local files are kept"),
        "phase": Phase.GONE,
        "message": verdict.message,
        "notebook": dataclasses.replace(
            current.notebook, state=NotebookState.DELETED, message=verdict.message, changed_by=verdict.by
        ),
    }


def suspended_changes(current: Session, verdict: Suspended) -> dict[str, Any]:
    """The session changes once its forward and sync stopped for a Notebook suspended elsewhere."""
    return {
        **_at_rest(current, "stopped with the notebook"),
        "phase": Phase.SUSPENDED,
        "message": verdict.message,
        "notebook": dataclasses.replace(
            current.notebook,
            state=NotebookState.SUSPENDED,
            message=verdict.message,
            changed_by=verdict.by,
            generation=verdict.record.generation,
            idle_stop_at=None,
        ),
        "runtime": dataclasses.replace(current.runtime, notebook=verdict.record),
    }
