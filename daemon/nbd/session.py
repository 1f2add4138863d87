"""The session: one notebook the daemon launched and keeps reachable and in sync.

These are the daemon's domain types, free of protobuf: the servicers convert them at the edge
(`nbd.convert`), the store persists them as JSON (`nbd.store`), the registry owns the live ones
(`nbd.registry`). Every type here is a frozen dataclass, so a value handed to an event subscriber or
a persisted snapshot can never change under its reader; changes are made with `dataclasses.replace`
(or `SessionRegistry.update`). The forward's and the sync's status types are `nbd.status`'s,
re-exported here for the session's readers.

`RuntimeRecord` is what the live parts of a session (its forward and its sync) persist with it so
that a restarted daemon brings them back; the API never shows it. Invariant: every record type is
typed all the way down (no free-form dicts) and checks its values when built, so a record that
loads is one the runtime can use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from nbd.errors import InvalidArgument
from nbd.status import (
    Conflict,
    ForwardState,
    ForwardStatus,
    NotebookState,
    NotebookStatus,
    Phase,
    Problem,
    SyncState,
    SyncStatus,
    utcnow,
)

__all__ = [
    "DEFAULT_SYNC_MAX_FILE_SIZE",
    "Conflict",
    "ForwardRecord",
    "ForwardState",
    "ForwardStatus",
    "LaunchRecord",
    "NotebookRecord",
    "NotebookSpec",
    "NotebookState",
    "NotebookStatus",
    "Phase",
    "Problem",
    "RuntimeRecord",
    "Session",
    "SessionKey",
    "SyncRecord",
    "SyncState",
    "SyncStatus",
    "utcnow",
]


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
    workspace_size: str = ""
    workspace_storage_class: str = ""
    shm: str = ""
    # spec.idle.stopAfter ("2h"; "0" off); "" leaves the cluster's default.
    idle_stop_after: str = ""


class SessionKey(NamedTuple):
    """The identity of a session: a notebook is one (context, namespace, name)."""

    context: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.context}/{self.namespace}/{self.name}"


def _port(value: int, what: str, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise ValueError(f"{what} must be a port number between {low} and 65535, not {value!r}")


@dataclasses.dataclass(frozen=True)
class ForwardRecord:
    """What the daemon persists to recreate a forward on the same port after a restart.

    Attributes:
        kubeconfig: The kubeconfig path the target was loaded from.
        context: Context name.
        namespace: Namespace of the pod.
        selector: Pod labels (all must match).
        remote_port: The pod's port.
        local_port: The bound local port (the preferred port when restored; 0: any).
        probe_path: HTTP path probed through the tunnel, or None for no probe.
    """

    kubeconfig: str
    context: str
    namespace: str
    selector: Mapping[str, str]
    remote_port: int
    local_port: int
    probe_path: str | None = "/api"

    def __post_init__(self) -> None:
        if not isinstance(self.selector, Mapping):
            raise TypeError("selector must be a mapping of labels")
        _port(self.remote_port, "remote_port", low=1)
        _port(self.local_port, "local_port", low=0)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "selector": dict(self.selector)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ForwardRecord:
        """The record from its JSON form; InvalidArgument (reason InvalidRecord) when it is not one."""
        try:
            selector = data["selector"]
            if not isinstance(selector, Mapping):
                raise TypeError("selector must be a mapping")
            probe = data.get("probe_path", "/api")
            return cls(
                kubeconfig=str(data["kubeconfig"]),
                context=str(data["context"]),
                namespace=str(data["namespace"]),
                selector={str(k): str(v) for k, v in selector.items()},
                remote_port=int(data["remote_port"]),
                local_port=int(data["local_port"]),
                probe_path=None if probe is None else str(probe),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgument(f"invalid forward record: {e}", reason="InvalidRecord") from e


# The sync's size limit when notebook.yaml sets no `sync.maxFileSize`: 100 MiB.
DEFAULT_SYNC_MAX_FILE_SIZE = 100 << 20


@dataclasses.dataclass(frozen=True)
class SyncRecord:
    """What a session's sync persists: what it syncs, the container its ancestor is bound to, a pause.

    Attributes:
        directory: The local directory (absolute).
        remote_root: The directory in the pod (absolute).
        pod_uid: The uid of the pod the ancestor was agreed with ("" before the first connect).
        paused: The user paused the sync (a pause outlives a daemon restart).
        container_id: The containerID of the notebook container instance the ancestor was agreed
            with, with `pod_uid` ("" before the first connect, and in files written before it
            was recorded: such a binding matches no instance).
        max_file_size: Files above this many bytes stay on their side (0: no limit), from
            notebook.yaml's `sync.maxFileSize`.
    """

    directory: str
    remote_root: str
    pod_uid: str = ""
    paused: bool = False
    container_id: str = ""
    max_file_size: int = DEFAULT_SYNC_MAX_FILE_SIZE

    def __post_init__(self) -> None:
        for what, path in (("directory", self.directory), ("remote_root", self.remote_root)):
            if not path.startswith("/"):
                raise ValueError(f"{what} must be an absolute path, not {path!r}")


@dataclasses.dataclass(frozen=True)
class LaunchRecord:
    """The launch options a resumed session keeps: `no_sync` (launched with --no-sync)."""

    no_sync: bool = False


@dataclasses.dataclass(frozen=True)
class NotebookRecord:
    """The Notebook as this daemon last wrote it: what the follower compares the cluster's with.

    Attributes:
        uid: The Notebook's metadata.uid (another uid is another object of the same name).
        generation: Its metadata.generation after this daemon's last write of its spec.
    """

    uid: str
    generation: int

    def __post_init__(self) -> None:
        if isinstance(self.generation, bool) or not isinstance(self.generation, int) or self.generation < 0:
            raise ValueError(f"generation must be a non-negative integer, not {self.generation!r}")


@dataclasses.dataclass(frozen=True)
class RuntimeRecord:
    """The persisted state of a session's live parts; None where that part never ran.

    Its JSON shape is the one the daemon persisted before this record had a type (the session
    field `extra`, with the keys forward, sync and launch), so those files load unchanged.
    """

    forward: ForwardRecord | None = None
    sync: SyncRecord | None = None
    launch: LaunchRecord = dataclasses.field(default_factory=LaunchRecord)
    # None until this daemon wrote the Notebook (a launch that never applied it has none).
    notebook: NotebookRecord | None = None


@dataclasses.dataclass(frozen=True)
class Session:
    """Everything the daemon knows about one notebook session.

    `runtime` is what the session's forward and sync persist with it and the API does not show
    (see `RuntimeRecord`); it stays in the user's 0700 state dir.
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
    notebook: NotebookStatus = dataclasses.field(default_factory=NotebookStatus)
    created: datetime = dataclasses.field(default_factory=utcnow)
    updated: datetime = dataclasses.field(default_factory=utcnow)
    runtime: RuntimeRecord = dataclasses.field(default_factory=RuntimeRecord)

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.context, self.namespace, self.name)
