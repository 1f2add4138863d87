"""What a launch, a stop, a cancel and a daemon start do with a session, decided without I/O.

The launcher observes (the registry's session of the key, whether this daemon holds its forward
and sync, the Notebook in the cluster when it matters), calls these functions and acts on what they
return, the way `nbd_controller.decisions` drives the controller. Every rule about which session
and which Notebook a launch may use lives here and is tested by table (tests/launch/test_decisions.py):

- a fresh launch (no session of the key) versus a relaunch (the session is updated; its forward
  and sync are re-used when they run);
- `--attach`: only to a ready session whose forward runs in this daemon;
- name clashes: a session of the key launched from another directory, or (for a fresh launch) a
  Notebook in the cluster whose local-directory annotation names another directory, is never taken
  over: applying ours would replace its pod and its content;
- suspended notebooks: a stopped session is relaunched like any other (the applied manifest sets
  `suspend: false`, the forward comes back on the remembered port); a stop suspends the Notebook or,
  with `--delete`, deletes it; the daemon never resumes a stopped session by itself;
- a cancelled launch never suspends or deletes the Notebook: the session is marked failed, except
  a relaunch of a ready, live session cancelled before it wrote to the cluster, which stays ready.

Refusals are data (`Refuse`), raised by the launcher as `FailedPrecondition`, so a table can name
the reason and the message a user reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nbd.launch.spec import DEFAULT_PORT, LOCAL_DIRECTORY_ANNOTATION
from nbd.session import ForwardRecord, NotebookSpec, Phase, Session, SessionKey, SyncRecord
from nbd.status import ForwardState, SyncState, SyncStatus

__all__ = [
    "Attach",
    "CANCELLED",
    "CANCELLED_RELAUNCH",
    "CancelOutcome",
    "DAEMON_STOPPED",
    "Existing",
    "Intent",
    "Launch",
    "LaunchPlan",
    "MarkFailed",
    "ObservedNotebook",
    "Refuse",
    "Resume",
    "SUSPENDED",
    "at_daemon_start",
    "cancelled",
    "decide",
    "forward_ports",
    "new_session",
    "observes_notebook",
    "stopped",
]

CANCELLED = "launch cancelled; run `nbctl launch` again to resume it"
CANCELLED_RELAUNCH = "the relaunch was cancelled; the notebook runs unchanged"
DAEMON_STOPPED = "the daemon stopped during this step; relaunch to continue"
SUSPENDED = "stopped; the Notebook is suspended (relaunch to start it again, --delete to remove it)"

# A session in one of these phases was in the middle of a launch or a stop.
_IN_FLIGHT = frozenset({Phase.PACKAGING, Phase.UPLOADING, Phase.BUILDING, Phase.STARTING, Phase.STOPPING})


# --- what the launcher observed ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Intent:
    """What one launch asks for, resolved: the directory absolute, the name and namespace known.

    `image` is the merged spec's prebuilt image ("" when the directory is built); `spec` is what
    the session records of the merged spec.
    """

    key: SessionKey
    directory: str
    kubeconfig: str = ""
    spec: NotebookSpec = dataclasses.field(default_factory=NotebookSpec)
    image: str = ""
    attach: bool = False
    no_sync: bool = False


@dataclass(frozen=True)
class Existing:
    """The registry's session of the key, and what of it lives in this daemon.

    `running`: the daemon holds the session's runtime (its forward and sync objects);
    `forwarding`: that runtime's forward is up.
    """

    session: Session
    running: bool = False
    forwarding: bool = False


@dataclass(frozen=True)
class ObservedNotebook:
    """The Notebook of the name in the cluster, as far as a launch cares: who launched it."""

    owner: str = ""  # the local directory it was launched from ("" when not annotated)

    @classmethod
    def of(cls, notebook: dict[str, Any] | None) -> ObservedNotebook | None:
        """The observation of a Notebook object (None: there is none)."""
        if notebook is None:
            return None
        annotations = (notebook.get("metadata") or {}).get("annotations") or {}
        return cls(owner=str(annotations.get(LOCAL_DIRECTORY_ANNOTATION) or ""))


# --- what a launch does ------------------------------------------------------------------------


@dataclass(frozen=True)
class Refuse:
    """The launch does not start: nothing changes, the request fails with this reason and message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Attach:
    """`--attach` to a live session: no packaging and no cluster writes; its URL and port answer."""

    session: Session


@dataclass(frozen=True)
class Launch:
    """The launch runs its steps.

    `fresh`: no session yet, one is created (`new_session`) in PACKAGING; otherwise the session's
    spec, kubeconfig and directory are updated and its phase is kept until a step changes it (a
    ready session stays ready while it is repackaged, which `cancelled` reads). `package`: the
    directory is packaged, uploaded and built (no prebuilt image). `sync`: once ready the sync
    starts (or keeps running); without it a running sync is flushed and stopped.
    """

    fresh: bool
    package: bool
    sync: bool


LaunchPlan = Refuse | Attach | Launch


def observes_notebook(existing: Existing | None, intent: Intent) -> bool:
    """Whether `decide` needs the cluster's Notebook: only a fresh launch (not an attach) reads it."""
    return existing is None and not intent.attach


def decide(existing: Existing | None, notebook: ObservedNotebook | None, intent: Intent) -> LaunchPlan:
    """What a launch of `intent` does, given the session of its key and the Notebook of its name.

    `notebook` is None when there is none or when it was not looked at (see `observes_notebook`).
    """
    name, namespace = intent.key.name, intent.key.namespace
    session = existing.session if existing is not None else None
    if session is not None and session.directory and session.directory != intent.directory:
        return Refuse(
            "NameTaken",
            f"notebook {name} in {namespace} is already launched from {session.directory}; "
            "pass another --name, or stop it first with `nbctl stop --delete`",
        )
    if intent.attach:
        if (
            existing is None
            or existing.session.phase != Phase.READY
            or not (existing.running and existing.forwarding)
        ):
            return Refuse(
                "NothingToAttach",
                f"there is no live session of {name} to attach to; launch it without --attach",
            )
        return Attach(existing.session)
    if existing is None and notebook is not None and notebook.owner and notebook.owner != intent.directory:
        return Refuse(
            "NameTaken",
            f"notebook {name} in {namespace} already exists, launched from {notebook.owner} by another "
            f"nbd; pass another --name, or delete it first (kubectl delete notebook {name} -n {namespace})",
        )
    return Launch(fresh=existing is None, package=not intent.image, sync=not intent.no_sync)


def new_session(intent: Intent, now: datetime) -> Session:
    """The session a fresh launch records before its first step."""
    return Session(
        name=intent.key.name,
        namespace=intent.key.namespace,
        context=intent.key.context,
        kubeconfig=intent.kubeconfig,
        directory=intent.directory,
        spec=intent.spec,
        phase=Phase.PACKAGING,
        created=now,
        updated=now,
        sync=SyncStatus(state=SyncState.DISABLED if intent.no_sync else SyncState.UNSPECIFIED),
    )


def forward_ports(session: Session | None, local_port: int) -> tuple[int, int | None]:
    """(preferred, explicit) local port of a launch's forward.

    The port the session's forward had before is preferred (so a relaunch, also of a stopped
    session, keeps its URL when the port is free), else Jupyter's; `--port` (`local_port`) is
    explicit: that port or an error.
    """
    remembered = session.runtime.forward.local_port if session is not None and session.runtime.forward else 0
    return remembered or DEFAULT_PORT, local_port or None


# --- cancel, stop and daemon start ---------------------------------------------------------------


@dataclass(frozen=True)
class CancelOutcome:
    """How a cancelled launch leaves its session (if it exists by then); the Notebook is never touched."""

    phase: Phase
    message: str


def cancelled(session: Session | None, *, running: bool, applied: bool) -> CancelOutcome:
    """The outcome of a launch cancelled now.

    `session` is the registry's session at the moment of the cancel, `running` whether the daemon
    holds its runtime, `applied` whether this launch already applied the Notebook. Only a relaunch
    of a ready, live session cancelled before it wrote to the cluster leaves what runs unchanged;
    anything else may be half done, so the session is failed and a relaunch resumes it.
    """
    if session is not None and session.phase == Phase.READY and running and not applied:
        return CancelOutcome(Phase.READY, CANCELLED_RELAUNCH)
    return CancelOutcome(Phase.FAILED, CANCELLED)


def stopped(current: Session, *, deleted: bool) -> dict[str, Any]:
    """The session changes of a stop, after its forward and sync stopped.

    Deleted: the session is forgotten and answered as stopped, "deleted". Suspended: no URL, no
    pod, the forward stopped, the sync disabled, and a message naming the ways on.
    """
    if deleted:
        return {"phase": Phase.STOPPED, "message": "deleted"}
    return {
        "phase": Phase.STOPPED,
        "url": "",
        "pod": "",
        "forward": dataclasses.replace(
            current.forward, state=ForwardState.STOPPED, open_connections=0, pod=""
        ),
        "sync": dataclasses.replace(
            current.sync, state=SyncState.DISABLED, message="stopped with the notebook"
        ),
        "message": SUSPENDED,
    }


@dataclass(frozen=True)
class Resume:
    """A ready session comes back: its forward (when it had one) and its sync (unless it had none
    or was launched with --no-sync), from the records; nothing is rebuilt."""

    forward: ForwardRecord | None
    sync: SyncRecord | None


@dataclass(frozen=True)
class MarkFailed:
    message: str


def at_daemon_start(session: Session) -> Resume | MarkFailed | None:
    """What the daemon does with a persisted session when it starts (None: leave it as it is).

    A launch or a stop the previous daemon was in the middle of is failed; a stopped or failed
    session stays so until it is relaunched.
    """
    if session.phase == Phase.READY:
        record = session.runtime
        return Resume(record.forward, record.sync if not record.launch.no_sync else None)
    if session.phase in _IN_FLIGHT:
        return MarkFailed(DAEMON_STOPPED)
    return None
