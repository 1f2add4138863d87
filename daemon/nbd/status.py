"""The status vocabulary: where a session is, and how its forward, sync and Notebook say where they stand.

Each concept has exactly one type, defined here and imported by everything that produces or
shows it: the forward (`nbd.forward`), the sync engine (`nbd.sync`) and the daemon's follower of
the Notebook in the cluster (`nbd.launch.following`) build these values, the
session (`nbd.session`) holds them, the store persists them generically (`nbd.store`), and the
servicers convert them to protobuf at the edge (`nbd.convert`). So a new status field touches its
type here, its conversion in `nbd.convert`, and the code that fills it in; nothing translates
between look-alike types on the way.

Invariants:
- this module imports the standard library only, so the pure cores (`nbd.sync.snapshot`,
  `nbd.sync.reconcile`) may import it;
- every type is a frozen dataclass (or an enum): a status handed to a subscriber never changes;
- enums carry the numbers of their nbdapi.v1 twins (same names without the prefix), so they
  convert by value;
- times are timezone-aware UTC datetimes, or None when unknown.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "Conflict",
    "ForwardState",
    "ForwardStatus",
    "NotebookState",
    "NotSynced",
    "NotebookStatus",
    "Phase",
    "Problem",
    "SyncState",
    "SyncStatus",
    "from_epoch",
    "size_text",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(seconds: float | None) -> datetime | None:
    """A wall-clock time in epoch seconds as a UTC datetime; None for None or 0 (unset)."""
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


class Phase(enum.Enum):
    """Where a session is in its life; mirrors nbdapi.v1.Phase (same names without the prefix).

    STOPPED is a stop this daemon made; SUSPENDED is a suspend made elsewhere (another client,
    `kubectl patch`, the controller); GONE is a Notebook deleted in the cluster while the session
    still knew it (its local files are kept; a launch starts it anew, a stop with --delete forgets it).
    """

    UNSPECIFIED = 0
    PACKAGING = 1
    UPLOADING = 2
    BUILDING = 3
    STARTING = 4
    READY = 5
    FAILED = 6
    STOPPED = 7
    STOPPING = 8
    GONE = 9
    SUSPENDED = 10


class NotebookState(enum.Enum):
    """How the Notebook in the cluster compares with what this daemon last wrote; mirrors
    nbdapi.v1.NotebookState."""

    UNSPECIFIED = 0
    # As this daemon last wrote it.
    FOLLOWING = 1
    # Its spec was changed by someone else; the daemon leaves it so.
    CHANGED = 2
    # Suspended by someone else.
    SUSPENDED = 3
    # Deleted in the cluster.
    DELETED = 4
    # The daemon cannot read it now (unreachable, forbidden); it keeps trying.
    ERROR = 5


@dataclass(frozen=True)
class NotebookStatus:
    """What the daemon last saw of the session's Notebook in the cluster.

    Attributes:
        state: See `NotebookState`; `message` says what changed and what to do.
        message: A human sentence ("" while following).
        changed_by: Who made the change, when the cluster says (a field manager such as
            "kubectl-edit", or another nbd's identity); "" when unknown.
        generation: The Notebook's metadata.generation last seen (0: none seen).
        observed: When the daemon last heard from the cluster about it.
        idle_stop_after: The controller's idle stop in effect ("2h"; "" when off).
        idle_stop_at: When it suspends the notebook unless it is used (None: off, busy, unknown).
        idle_message: The controller's sentence about idleness ("Idle since 14:02 UTC; ...").
    """

    state: NotebookState = NotebookState.UNSPECIFIED
    message: str = ""
    changed_by: str = ""
    generation: int = 0
    observed: datetime | None = None
    idle_stop_after: str = ""
    idle_stop_at: datetime | None = None
    idle_message: str = ""


class ForwardState(enum.Enum):
    """Whether new connections to the notebook's local port reach its pod; mirrors nbdapi.v1.ForwardState."""

    UNSPECIFIED = 0
    ACTIVE = 1
    WAITING_FOR_POD = 2
    ERROR = 3
    STOPPED = 4


@dataclass(frozen=True)
class ForwardStatus:
    """A forward's state now.

    Attributes:
        state: See `ForwardState`; `message` says why when it is not ACTIVE.
        local_port: The bound 127.0.0.1 port (0 before start).
        remote_port: The pod's port.
        pod: The pod new connections go to now ("" if none is Ready).
        message: A human sentence about the state ("" when active).
        open_connections: Connections being relayed now.
        last_probe: When the forward last probed the notebook through the tunnel.
    """

    state: ForwardState = ForwardState.UNSPECIFIED
    local_port: int = 0
    remote_port: int = 0
    pod: str = ""
    message: str = ""
    open_connections: int = 0
    last_probe: datetime | None = None


class SyncState(enum.Enum):
    """Where a two-way sync session is; mirrors nbdapi.v1.SyncState."""

    UNSPECIFIED = 0
    DISABLED = 1
    CONNECTING = 2
    SCANNING = 3
    SYNCING = 4
    WATCHING = 5
    PAUSED = 6
    HALTED = 7
    ERROR = 8


@dataclass(frozen=True, slots=True)
class Conflict:
    """Both sides changed `path` differently: the local version kept the name, the remote one
    was kept as `copy_path` on both sides."""

    path: str
    copy_path: str = ""
    message: str = ""
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """A path that could not be synchronised this cycle; the cycle went on without it."""

    path: str
    message: str = ""
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotSynced:
    """A file the sync leaves on its side by rule (larger than the size limit): neither a conflict
    nor a deletion. `side` is "remote" (the pod) or "local"; `reason` is for a person."""

    path: str
    size: int = 0
    reason: str = ""
    side: str = "remote"


def size_text(n: int) -> str:
    """A size for a person, in binary units: "512 bytes", "100 MiB", "1.2 GiB"."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


@dataclass(frozen=True)
class SyncStatus:
    """A sync session's state and counters now (what `nbctl sync status` shows).

    Attributes:
        state: See `SyncState`; `message` says what it is doing or why it stopped.
        files: Files both sides agree on (the ancestor's files).
        cycles: Reconcile cycles run since the session started.
        bytes_to_remote, bytes_to_local, files_to_remote, files_to_local: What was copied, each way.
        last_cycle: When the last cycle ended.
        conflicts: Open conflicts, oldest first (bounded by the engine): the user has not yet
            deleted or renamed the copy, nor edited the file since.
        resolved_conflicts: The last resolved conflicts, oldest first (bounded by the engine).
        problems: Paths that are not synced now, sorted by path.
        not_synced: Files left on one side by rule (above the size limit), sorted by path.
        local_root, remote_root: The two directories kept equal.
    """

    state: SyncState = SyncState.UNSPECIFIED
    message: str = ""
    files: int = 0
    cycles: int = 0
    bytes_to_remote: int = 0
    bytes_to_local: int = 0
    files_to_remote: int = 0
    files_to_local: int = 0
    last_cycle: datetime | None = None
    conflicts: tuple[Conflict, ...] = ()
    resolved_conflicts: tuple[Conflict, ...] = ()
    problems: tuple[Problem, ...] = ()
    not_synced: tuple[NotSynced, ...] = ()
    local_root: str = ""
    remote_root: str = ""
