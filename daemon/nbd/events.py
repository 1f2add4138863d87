"""What the daemon tells its clients while it works: session events and launch events.

Domain twins of nbdapi.v1.SessionEvent and nbdapi.v1.LaunchEvent. Capabilities produce these; the
servicers convert them to protobuf at the edge. Like sessions, they are frozen values.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from nbd.session import Phase, Session
from nbd.status import Conflict, Problem, utcnow

__all__ = [
    "Cached",
    "CachedStep",
    "Direction",
    "Failure",
    "LaunchEvent",
    "LaunchPayload",
    "LogLine",
    "Notice",
    "NoticeLevel",
    "PhaseChanged",
    "PodStatus",
    "Progress",
    "Ready",
    "SessionEvent",
    "SessionEventKind",
    "SyncChange",
]


# --- session events (the Events RPC) --------------------------------------------------------------


class SessionEventKind(enum.Enum):
    UNSPECIFIED = 0
    SNAPSHOT = 1
    ADDED = 2
    UPDATED = 3
    REMOVED = 4
    SYNC_CHANGE = 5
    CONFLICT = 6
    PROBLEM = 7


class Direction(enum.Enum):
    UNSPECIFIED = 0
    TO_LOCAL = 1
    TO_REMOTE = 2


@dataclasses.dataclass(frozen=True)
class SyncChange:
    direction: Direction
    path: str
    # "create", "modify" or "delete".
    action: str
    bytes: int = 0


@dataclasses.dataclass(frozen=True)
class SessionEvent:
    """A change of one session; `session` is the session after the change."""

    kind: SessionEventKind
    session: Session
    detail: SyncChange | Conflict | Problem | None = None
    time: datetime = dataclasses.field(default_factory=utcnow)


# --- launch events (the Launch RPC) ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PhaseChanged:
    phase: Phase
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Progress:
    """Byte or file progress of the current phase; `eta_seconds` < 0 means unknown."""

    phase: Phase
    done_bytes: int = 0
    total_bytes: int = 0
    done_files: int = 0
    total_files: int = 0
    bytes_per_second: float = 0.0
    eta_seconds: float = -1.0


class CachedStep(enum.Enum):
    UNSPECIFIED = 0
    PACKAGE = 1
    UPLOAD = 2
    BUILD = 3


@dataclasses.dataclass(frozen=True)
class Cached:
    step: CachedStep
    reason: str = ""
    md5: str = ""


@dataclasses.dataclass(frozen=True)
class LogLine:
    text: str
    container: str = ""
    time: datetime | None = None


@dataclasses.dataclass(frozen=True)
class PodStatus:
    pod: str
    phase: str = ""
    reason: str = ""
    message: str = ""
    ready: bool = False


@dataclasses.dataclass(frozen=True)
class Ready:
    url: str
    local_port: int
    session: Session
    # The UI the URL opens (lab, notebook, server, custom) and, when not JupyterLab, why.
    ui: str = "lab"
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Failure:
    """A launch failed; `message` says what happened and what to do."""

    reason: str
    message: str
    log_tail: tuple[str, ...] = ()


class NoticeLevel(enum.Enum):
    UNSPECIFIED = 0
    INFO = 1
    WARNING = 2


@dataclasses.dataclass(frozen=True)
class Notice:
    message: str
    level: NoticeLevel = NoticeLevel.INFO


LaunchPayload = PhaseChanged | Progress | Cached | LogLine | PodStatus | Ready | Failure | Notice


@dataclasses.dataclass(frozen=True)
class LaunchEvent:
    """One event of a launch; `session` is the reference of the session it belongs to.

    A `LogLine` payload is a build log line.
    """

    session: str
    payload: LaunchPayload
    time: datetime = dataclasses.field(default_factory=utcnow)
