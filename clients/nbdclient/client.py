"""The synchronous client: one typed method per RPC of nbdapi.v1.

`connect()` finds (and if needed starts) the daemon and returns a `Client`. Unary methods return
protobuf messages; streaming methods (`launch`, `logs`, `events`) return a `Stream` that iterates
messages and can be cancelled from another thread (Ctrl-C handlers). Every failure raises
`NbdClientError`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, cast

import grpc

from nbdapi.v1 import daemon_pb2, daemon_pb2_grpc, notebooks_pb2, notebooks_pb2_grpc, runs_pb2, runs_pb2_grpc
from nbdclient import daemon as daemon_control
from nbdclient.daemon import CHANNEL_OPTIONS
from nbdclient.errors import SESSIONS_RESUMING, NbdClientError, from_rpc_error
from nbdlocal.paths import DaemonPaths, resolve

__all__ = ["CHANNEL_OPTIONS", "Client", "Stream", "connect"]

T = TypeVar("T")

SyncAction = notebooks_pb2.SyncRequest.Action


class _End:
    """What the reader thread queues last: the error that ended the stream, if any."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Stream(Generic[T]):
    """An iterator over a server stream; `cancel()` ends it (the iteration then simply stops).

    The call is read by a helper thread and handed over through a queue, so the iterating thread
    only ever waits on that queue. A KeyboardInterrupt therefore never lands inside gRPC's own
    code (where it can leave the channel unable to close); it cancels the call and propagates.
    Leaving the iteration early (break, an exception) cancels the call too.
    """

    def __init__(self, call: Any, paths: DaemonPaths) -> None:
        self._call = call
        self._paths = paths
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        with daemon_control.deferred_interrupt():
            self._call.cancel()

    def _pump(self, out: queue.SimpleQueue[Any]) -> None:
        try:
            for item in self._call:
                out.put(item)
        except BaseException as e:  # Handed to the iterating thread.
            out.put(_End(e))
        else:
            out.put(_End(None))

    def __iter__(self) -> Iterator[T]:
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        reader = threading.Thread(target=self._pump, args=(items,), name="nbdclient-stream", daemon=True)
        reader.start()
        finished = False
        try:
            while True:
                try:
                    item = items.get(timeout=0.25)
                except queue.Empty:
                    continue
                if isinstance(item, _End):
                    finished = True
                    if item.error is None:
                        return
                    if isinstance(item.error, grpc.RpcError):
                        if self._cancelled and item.error.code() == grpc.StatusCode.CANCELLED:
                            return
                        raise from_rpc_error(
                            item.error, str(self._paths.socket), str(self._paths.log_file)
                        ) from None
                    raise item.error
                yield item
        finally:
            if not finished:
                self.cancel()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Client:
    """A connection to the daemon. Use `connect()` to make one; close it (or use `with`)."""

    def __init__(
        self, channel: grpc.Channel, paths: DaemonPaths, daemon: daemon_pb2.VersionResponse | None = None
    ):
        self.channel = channel
        self.paths = paths
        # The daemon's Version answer at connect time (pid, socket, state dir, log file).
        self.daemon = daemon
        self._notebooks = notebooks_pb2_grpc.NotebooksStub(channel)  # type: ignore[no-untyped-call]
        self._daemon = daemon_pb2_grpc.DaemonStub(channel)  # type: ignore[no-untyped-call]
        self._runs = runs_pb2_grpc.RunsStub(channel)  # type: ignore[no-untyped-call]
        # Seconds a unary call keeps asking a daemon that is still resuming its sessions.
        self.resume_retry = 60.0

    def close(self) -> None:
        daemon_control.close_channel(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        # A daemon that is still resuming its sessions answers UNAVAILABLE (reason
        # SessionsResuming) after a wait of its own: asked again until `resume_retry` runs out.
        deadline = time.monotonic() + self.resume_retry
        while True:
            try:
                return daemon_control.unary_call(method, request, timeout)
            except grpc.RpcError as e:
                error = from_rpc_error(e, str(self.paths.socket), str(self.paths.log_file))
            if error.reason != SESSIONS_RESUMING or time.monotonic() >= deadline:
                raise error
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _stream(self, method: Callable[..., Any], request: Any) -> Stream[Any]:
        with daemon_control.deferred_interrupt():
            call = method(request)
        return Stream(call, self.paths)

    # --- Daemon ----------------------------------------------------------------------------------

    def version(self, timeout: float | None = 10.0) -> daemon_pb2.VersionResponse:
        from nbdlocal.version import __version__

        reply: daemon_pb2.VersionResponse = self._unary(
            self._daemon.Version, daemon_pb2.VersionRequest(client_version=__version__), timeout
        )
        return reply

    def shutdown(self, grace_seconds: float = 0.0) -> None:
        self._unary(self._daemon.Shutdown, daemon_pb2.ShutdownRequest(grace_seconds=grace_seconds), 30.0)

    # --- Notebooks -------------------------------------------------------------------------------

    def launch(
        self, request: notebooks_pb2.LaunchRequest | None = None, **fields: Any
    ) -> Stream[notebooks_pb2.LaunchEvent]:
        """Streams a launch. Pass a LaunchRequest or its fields (e.g. directory=..., name=...)."""
        if request is None:
            request = notebooks_pb2.LaunchRequest(**fields)
        return self._stream(self._notebooks.Launch, request)

    def stop(
        self, session: str, *, delete: bool = False, delete_workspace: bool = False
    ) -> notebooks_pb2.Session:
        reply: notebooks_pb2.StopResponse = self._unary(
            self._notebooks.Stop,
            notebooks_pb2.StopRequest(session=session, delete=delete, delete_workspace=delete_workspace),
        )
        return reply.session

    def get(self, session: str) -> notebooks_pb2.Session:
        reply: notebooks_pb2.Session = self._unary(
            self._notebooks.Get, notebooks_pb2.GetRequest(session=session), 30.0
        )
        return reply

    def list(self) -> list[notebooks_pb2.Session]:
        return list(self._unary(self._notebooks.List, notebooks_pb2.ListRequest(), 30.0).sessions)

    def logs(
        self,
        session: str,
        *,
        build: bool = False,
        follow: bool = False,
        tail_lines: int = 0,
        container: str = "",
    ) -> Stream[notebooks_pb2.LogLine]:
        source = notebooks_pb2.LOG_SOURCE_BUILD if build else notebooks_pb2.LOG_SOURCE_NOTEBOOK
        request = notebooks_pb2.LogsRequest(
            session=session, source=source, follow=follow, tail_lines=tail_lines, container=container
        )
        return self._stream(self._notebooks.Logs, request)

    def sync(
        self, session: str, action: str | int = "status", *, force: bool = False
    ) -> notebooks_pb2.SyncStatus:
        """action: "status", "pause", "resume", "flush" (or a SyncRequest.Action value).

        `force` (with resume only) lets the sync pass the delete guard that halted it.
        """
        reply: notebooks_pb2.SyncResponse = self._unary(
            self._notebooks.Sync,
            notebooks_pb2.SyncRequest(session=session, action=sync_action(action), force=force),
        )
        return reply.status

    def events(
        self, sessions: Iterable[str] = (), *, initial: bool = False
    ) -> Stream[notebooks_pb2.SessionEvent]:
        return self._stream(
            self._notebooks.Events, notebooks_pb2.EventsRequest(sessions=list(sessions), initial=initial)
        )

    # --- Runs ------------------------------------------------------------------------------------

    def run(self, request: runs_pb2.RunRequest | None = None, **fields: Any) -> Stream[runs_pb2.RunEvent]:
        """Streams a run: its creation, status and every rank's log, until it ends (or runs, detached)."""
        if request is None:
            request = runs_pb2.RunRequest(**fields)
        return self._stream(self._runs.Run, request)

    def run_logs(
        self,
        run: str,
        *,
        follow: bool = False,
        rank: int | None = None,
        target: runs_pb2.ClusterTarget | None = None,
    ) -> Stream[runs_pb2.RunEvent]:
        request = runs_pb2.RunLogsRequest(run=run, follow=follow, target=target)
        if rank is not None:
            request.rank = rank
        return self._stream(self._runs.Logs, request)

    def get_run(self, run: str, *, target: runs_pb2.ClusterTarget | None = None) -> runs_pb2.RunInfo:
        reply: runs_pb2.RunInfo = self._unary(
            self._runs.GetRun, runs_pb2.GetRunRequest(run=run, target=target), 60.0
        )
        return reply

    def list_runs(self, *, target: runs_pb2.ClusterTarget | None = None) -> runs_pb2.ListRunsResponse:
        reply: runs_pb2.ListRunsResponse = self._unary(
            self._runs.ListRuns, runs_pb2.ListRunsRequest(target=target), 60.0
        )
        return reply

    def stop_run(self, run: str, *, target: runs_pb2.ClusterTarget | None = None) -> runs_pb2.RunInfo:
        reply: runs_pb2.RunInfo = self._unary(
            self._runs.StopRun, runs_pb2.StopRunRequest(run=run, target=target), 180.0
        )
        return reply

    def fetch(
        self,
        run: str,
        *,
        directory: str = "",
        path: str = "",
        target: runs_pb2.ClusterTarget | None = None,
    ) -> Stream[runs_pb2.FetchEvent]:
        return self._stream(
            self._runs.Fetch, runs_pb2.FetchRequest(run=run, directory=directory, path=path, target=target)
        )


def sync_action(action: str | int) -> notebooks_pb2.SyncRequest.Action:
    """The SyncRequest.Action of a name ("pause") or number."""
    if isinstance(action, int):
        return cast(notebooks_pb2.SyncRequest.Action, action)
    try:
        return cast(notebooks_pb2.SyncRequest.Action, SyncAction.Value(f"ACTION_{action.upper()}"))
    except ValueError:
        raise NbdClientError(
            f"unknown sync action {action!r}; use status, pause, resume or flush",
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidArgument",
        ) from None


def connect(
    socket: str | os.PathLike[str] | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    autostart: bool = True,
    check_version: bool = True,
    start_timeout: float = daemon_control.DEFAULT_START_TIMEOUT,
) -> Client:
    """A Client of the user's daemon, started first when its socket does not answer (`autostart`).

    Raises:
        DaemonNotRunning: autostart is off and nothing answers.
        DaemonStartError: the daemon could not be started (the message names its log).
        VersionMismatch: the daemon runs another version than this client.
    """
    paths = resolve(socket=socket, state_dir=state_dir)
    channel, version = daemon_control.ensure_daemon(
        paths, autostart=autostart, check_version=check_version, start_timeout=start_timeout
    )
    return Client(channel, paths, version)
