"""The session: one notebook the daemon launched and keeps reachable and in sync.

These are the daemon's domain types, free of protobuf: the servicers convert them at the edge
(`nbd.convert`), the store persists them as JSON (`nbd.store`), the registry owns the live ones
(`nbd.registry`). Every type here is a frozen dataclass, so a value handed to an event subscriber or
a persisted snapshot can never change under its reader; changes are made with `dataclasses.replace`
(or `SessionRegistry.update`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

__all__ = [
    "Conflict",
    "ForwardState",
    "ForwardStatus",
    "NotebookSpec",
    "Phase",
    "Problem",
    "Session",
    "SessionKey",
    "SyncState",
    "SyncStatus",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Phase(enum.Enum):
    """Where a session is in its life; mirrors nbdapi.v1.Phase (same names without the prefix)."""

    UNSPECIFIED = 0
    PACKAGING = 1
    UPLOADING = 2
    BUILDING = 3
    STARTING = 4
    READY = 5
    FAILED = 6
    STOPPED = 7
    STOPPING = 8


class ForwardState(enum.Enum):
    UNSPECIFIED = 0
    ACTIVE = 1
    WAITING_FOR_POD = 2
    ERROR = 3
    STOPPED = 4


class SyncState(enum.Enum):
    UNSPECIFIED = 0
    DISABLED = 1
    CONNECTING = 2
    SCANNING = 3
    SYNCING = 4
    WATCHING = 5
    PAUSED = 6
    HALTED = 7
    ERROR = 8


@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    """The notebook's requested shape. Unset (empty / None) fields keep the file's or default value."""

    image: str = ""
    gpu_count: int | None = None
    gpu_type: str = ""
    cpu: str = ""
    memory: str = ""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    command: tuple[str, ...] = ()
    workdir: str = ""
    port: int | None = None


@dataclasses.dataclass(frozen=True)
class ForwardStatus:
    state: ForwardState = ForwardState.UNSPECIFIED
    local_port: int = 0
    remote_port: int = 0
    pod: str = ""
    message: str = ""
    open_connections: int = 0
    last_probe: datetime | None = None


@dataclasses.dataclass(frozen=True)
class Conflict:
    path: str
    copy_path: str = ""
    message: str = ""
    time: datetime | None = None


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    message: str = ""
    time: datetime | None = None


@dataclasses.dataclass(frozen=True)
class SyncStatus:
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
    problems: tuple[Problem, ...] = ()
    local_root: str = ""
    remote_root: str = ""


class SessionKey(NamedTuple):
    """The identity of a session: a notebook is one (context, namespace, name)."""

    context: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.context}/{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Session:
    """Everything the daemon knows about one notebook session.

    `extra` holds state that capabilities (launch, forward, sync) persist with the session and that
    the API does not show; it must stay JSON-serialisable (str keys; str, int, float, bool, None,
    lists and dicts of those). Secrets stored there stay in the user's 0700 state dir and never
    reach a log.
    """

    name: str
    namespace: str
    context: str
    kubeconfig: str = ""
    directory: str = ""
    phase: Phase = Phase.UNSPECIFIED
    message: str = ""
    url: str = ""
    spec: NotebookSpec = dataclasses.field(default_factory=NotebookSpec)
    context_md5: str = ""
    image: str = ""
    pod: str = ""
    forward: ForwardStatus = dataclasses.field(default_factory=ForwardStatus)
    sync: SyncStatus = dataclasses.field(default_factory=SyncStatus)
    created: datetime = dataclasses.field(default_factory=utcnow)
    updated: datetime = dataclasses.field(default_factory=utcnow)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.context, self.namespace, self.name)
