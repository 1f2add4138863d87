"""The daemon's extension point: what launch, logs and sync must offer to plug into the API.

The servicers answer Get/List/Events/Version/Shutdown themselves. Launch, Stop, Logs and Sync are
delegated to optional capabilities registered on `App.capabilities`; until one is registered, its
RPCs answer UNIMPLEMENTED naming what is missing. A capability is installed by a module
`nbd.<subpackage>.capability` exposing `install(app: nbd.app.App) -> None`; the daemon's own are
listed in `nbd.app.BUILTIN` (`nbd --capabilities` names others, e.g. a test's, by module path).
The daemon imports these modules in a worker thread once it already answers (their imports are
slow), then calls `install` on the event loop; Launch/Stop/Logs/Sync wait until that is done.
`install` sets the fields below and may add start hooks (`app.on_start`, e.g. to resume persisted
sessions; they run right after every capability is installed) and stop hooks (`app.on_stop`).

Every type here is proto-free; the servicers convert at the edge.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from nbd.errors import Unimplemented
from nbd.events import LaunchEvent, LogLine
from nbd.runstate import ClusterTarget, FetchPayload, FetchRequest, RunEvent, RunInfo, RunRequest
from nbd.session import NotebookSpec, Session, SyncStatus

__all__ = [
    "Capabilities",
    "LaunchRequest",
    "Launcher",
    "LogReader",
    "LogSource",
    "LogsQuery",
    "RunControl",
    "SyncAction",
    "SyncControl",
]


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    """What a client asked to launch (nbdapi.v1.LaunchRequest without protobuf).

    `directory` is absolute; `kubeconfig` is the client's `--kubeconfig` or `$KUBECONFIG` ("" means
    the daemon's default); `spec` holds only the overrides the client gave.
    """

    directory: str
    name: str = ""
    namespace: str = ""
    context: str = ""
    kubeconfig: str = ""
    notebook_file: str = ""
    spec: NotebookSpec = dataclasses.field(default_factory=NotebookSpec)
    local_port: int = 0
    no_sync: bool = False
    attach: bool = False
    # Build the image again although this content was built (spec.build.rebuild).
    rebuild: bool = False
    # How long the notebook may take to start once its image is ready; 0: the default.
    timeout_seconds: int = 0


class LogSource(enum.Enum):
    UNSPECIFIED = 0
    NOTEBOOK = 1
    BUILD = 2


@dataclasses.dataclass(frozen=True)
class LogsQuery:
    source: LogSource = LogSource.NOTEBOOK
    follow: bool = False
    # Last N lines; 0 means all.
    tail_lines: int = 0
    container: str = ""


class SyncAction(enum.Enum):
    STATUS = 1
    PAUSE = 2
    RESUME = 3
    FLUSH = 4


@runtime_checkable
class Launcher(Protocol):
    """Launches and stops notebooks (the launch capability)."""

    def launch(self, request: LaunchRequest) -> AsyncIterator[LaunchEvent]:
        """Streams the launch's events; ends after a `Ready` or `Failure` payload.

        Raise `NbdError` for a request that cannot start at all. If the client goes away the
        iterator is closed (`aclose`), which raises GeneratorExit/CancelledError inside it.
        """
        ...

    async def stop(self, session: Session, *, delete: bool, delete_workspace: bool = False) -> Session:
        """Suspends (or deletes) the session's notebook and returns the session after the change.

        A delete of a notebook whose workspace claim exists is refused (FailedPrecondition) unless
        `delete_workspace`: the claim, and every file on it, goes with the notebook."""
        ...


@runtime_checkable
class LogReader(Protocol):
    """Streams a session's build or notebook log (the logs capability)."""

    def logs(self, session: Session, query: LogsQuery) -> AsyncIterator[LogLine]: ...


@runtime_checkable
class SyncControl(Protocol):
    """Pauses, resumes, flushes and reports a session's two-way sync (the sync capability).

    `force` (only with RESUME) lets the next cycle pass the delete guard that halted the sync. The
    servicer passes it only when it is set, so a capability without the parameter still serves
    every other request.
    """

    async def sync(self, session: Session, action: SyncAction, *, force: bool = False) -> SyncStatus: ...


@runtime_checkable
class RunControl(Protocol):
    """Runs the directory's content as a Job and follows it (the runs capability)."""

    def run(self, request: RunRequest) -> AsyncIterator[RunEvent]:
        """Streams the run's creation, status and logs; ends after `RunFinished` or `Failure` (or
        once the run runs, when detached). Raise `NbdError` for a request that cannot start at all."""
        ...

    def logs(
        self, name: str, target: ClusterTarget, *, follow: bool, rank: int | None
    ) -> AsyncIterator[RunEvent]: ...

    async def get(self, name: str, target: ClusterTarget) -> RunInfo: ...

    async def list(self, target: ClusterTarget) -> tuple[list[RunInfo], str, str]:
        """The runs of the target's namespace, with the context and namespace they were read from."""
        ...

    async def stop(self, name: str, target: ClusterTarget) -> RunInfo: ...

    def fetch(self, request: FetchRequest) -> AsyncIterator[FetchPayload]: ...


@dataclasses.dataclass
class Capabilities:
    """The optional parts of the daemon. `problems` says why a capability failed to install."""

    launcher: Launcher | None = None
    logs: LogReader | None = None
    sync: SyncControl | None = None
    runs: RunControl | None = None
    problems: dict[str, str] = dataclasses.field(default_factory=dict)

    def _missing(self, what: str, capability: str) -> Unimplemented:
        why = self.problems.get(capability)
        if why:
            detail = f"the {capability} capability failed to load ({why}); see the daemon log"
        elif self.problems:
            failed = "; ".join(f"{name}: {problem}" for name, problem in sorted(self.problems.items()))
            detail = (
                f"the {capability} capability is not installed (capabilities that failed to load: {failed})"
            )
        else:
            detail = f"the {capability} capability is not installed"
        return Unimplemented(
            f"{what} is not available in this daemon build: {detail}", reason="CapabilityMissing"
        )

    def require_launcher(self) -> Launcher:
        if self.launcher is None:
            raise self._missing("launch", "launch")
        return self.launcher

    def require_stopper(self) -> Launcher:
        if self.launcher is None:
            raise self._missing("stop", "launch")
        return self.launcher

    def require_logs(self) -> LogReader:
        if self.logs is None:
            raise self._missing("logs", "logs")
        return self.logs

    def require_sync(self) -> SyncControl:
        if self.sync is None:
            raise self._missing("sync", "sync")
        return self.sync

    def require_runs(self) -> RunControl:
        if self.runs is None:
            raise self._missing("runs", "runs")
        return self.runs
