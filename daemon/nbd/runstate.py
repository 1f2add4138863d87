"""What the API says about runs, without protobuf: the run as the cluster reports it, the events
a run streams, and the requests of the run RPCs.

Plain values, below the capabilities that produce them and the servicers that convert them.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from nbd.events import Cached, Failure, LogLine, Notice, PhaseChanged, Progress
from nbd.session import NotebookSpec, utcnow
from nbd.status import Conflict
from nbdcontract import DEFAULT_OUTPUTS

__all__ = [
    "ClusterTarget",
    "FetchPayload",
    "FetchRequest",
    "FetchResult",
    "Rank",
    "RunEvent",
    "RunFinished",
    "RunInfo",
    "RunLog",
    "RunPayload",
    "RunPhase",
    "RunRequest",
    "RunStatus",
]


class RunPhase(enum.Enum):
    """nbdapi.v1.RunPhase."""

    UNSPECIFIED = 0
    PACKAGING = 1
    UPLOADING = 2
    BUILDING = 3
    PENDING = 4
    STARTING = 5
    RUNNING = 6
    SUCCEEDED = 7
    FAILED = 8
    STOPPED = 9

    @property
    def finished(self) -> bool:
        return self in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)


@dataclasses.dataclass(frozen=True)
class Rank:
    index: int
    pod: str = ""
    phase: str = ""
    exit_code: int | None = None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    name: str
    namespace: str
    context: str = ""
    phase: RunPhase = RunPhase.PENDING
    reason: str = ""
    message: str = ""
    command: tuple[str, ...] = ()
    nodes: int = 1
    gpus_per_node: int = 0
    gpu_type: str = ""
    image: str = ""
    context_md5: str = ""
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    failed_rank: int | None = None
    ranks: tuple[Rank, ...] = ()
    outputs_path: str = DEFAULT_OUTPUTS
    directory: str = ""
    job: str = ""
    uid: str = ""
    generation: int = 0
    observed_generation: int = 0


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """The run as the cluster reports it, each time its phase (or a rank's) changes."""

    info: RunInfo


@dataclasses.dataclass(frozen=True)
class RunLog:
    rank: int
    text: str
    pod: str = ""
    time: datetime | None = None


@dataclasses.dataclass(frozen=True)
class RunFinished:
    info: RunInfo


RunPayload = RunStatus | RunLog | RunFinished


RunEventPayload = PhaseChanged | Progress | Cached | LogLine | Notice | Failure | RunPayload


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """One event of a Run or Logs stream: `run` is the run's name."""

    run: str
    payload: RunEventPayload
    time: datetime = dataclasses.field(default_factory=utcnow)


@dataclasses.dataclass(frozen=True)
class ClusterTarget:
    """Which cluster and namespace; empty fields take the kubeconfig's defaults."""

    context: str = ""
    namespace: str = ""
    kubeconfig: str = ""


@dataclasses.dataclass(frozen=True)
class RunRequest:
    directory: str
    command: tuple[str, ...]
    name: str = ""
    target: ClusterTarget = ClusterTarget()
    notebook_file: str = ""
    spec: NotebookSpec = dataclasses.field(default_factory=NotebookSpec)
    nodes: int = 1
    detach: bool = False
    rebuild: bool = False
    ttl_seconds_after_finished: int | None = None


@dataclasses.dataclass(frozen=True)
class FetchRequest:
    run: str
    target: ClusterTarget = ClusterTarget()
    directory: str = ""
    path: str = ""


@dataclasses.dataclass(frozen=True)
class FetchResult:
    destination: str
    written: int = 0
    unchanged: int = 0
    bytes: int = 0
    conflicts: tuple[Conflict, ...] = ()


FetchPayload = Progress | Notice | FetchResult
