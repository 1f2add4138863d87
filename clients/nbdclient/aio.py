"""The asyncio client: the same typed methods as `nbdclient.Client`, awaitable.

For editors and other asyncio programs. `connect_async()` finds or starts the daemon (the blocking
part runs in a thread) and returns an `AsyncClient` on a `grpc.aio` channel. Streaming methods
return an `AsyncStream`, an async iterator with `cancel()`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from nbdapi.v1 import daemon_pb2, daemon_pb2_grpc, notebooks_pb2, notebooks_pb2_grpc
from nbdclient import daemon as daemon_control
from nbdclient.client import sync_action
from nbdclient.daemon import CHANNEL_OPTIONS
from nbdclient.errors import from_rpc_error
from nbdlocal.paths import DaemonPaths, resolve
from nbdlocal.version import __version__

__all__ = ["AsyncClient", "AsyncStream", "connect_async"]

T = TypeVar("T")


class AsyncStream(Generic[T]):
    def __init__(self, call: Any, paths: DaemonPaths) -> None:
        self._call = call
        self._paths = paths
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for item in self._call:
                yield item
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancelled and not (task is not None and task.cancelling()):
                # Our own cancel(): grpc.aio reports it as CancelledError; the iteration just ends.
                return
            self._call.cancel()
            raise
        except grpc.RpcError as e:
            if self._cancelled and e.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(e, str(self._paths.socket), str(self._paths.log_file)) from None


class AsyncClient:
    def __init__(
        self, channel: grpc.aio.Channel, paths: DaemonPaths, daemon: daemon_pb2.VersionResponse | None = None
    ):
        self.channel = channel
        self.paths = paths
        self.daemon = daemon
        self._notebooks = notebooks_pb2_grpc.NotebooksStub(channel)  # type: ignore[no-untyped-call]
        self._daemon = daemon_pb2_grpc.DaemonStub(channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e, str(self.paths.socket), str(self.paths.log_file)) from None

    def _stream(self, method: Any, request: Any) -> AsyncStream[Any]:
        return AsyncStream(method(request), self.paths)

    async def version(self, timeout: float | None = 10.0) -> daemon_pb2.VersionResponse:
        reply: daemon_pb2.VersionResponse = await self._unary(
            self._daemon.Version, daemon_pb2.VersionRequest(client_version=__version__), timeout
        )
        return reply

    async def shutdown(self, grace_seconds: float = 0.0) -> None:
        await self._unary(
            self._daemon.Shutdown, daemon_pb2.ShutdownRequest(grace_seconds=grace_seconds), 30.0
        )

    def launch(
        self, request: notebooks_pb2.LaunchRequest | None = None, **fields: Any
    ) -> AsyncStream[notebooks_pb2.LaunchEvent]:
        if request is None:
            request = notebooks_pb2.LaunchRequest(**fields)
        return self._stream(self._notebooks.Launch, request)

    async def stop(
        self, session: str, *, delete: bool = False, delete_workspace: bool = False
    ) -> notebooks_pb2.Session:
        reply = await self._unary(
            self._notebooks.Stop,
            notebooks_pb2.StopRequest(session=session, delete=delete, delete_workspace=delete_workspace),
        )
        session_msg: notebooks_pb2.Session = reply.session
        return session_msg

    async def get(self, session: str) -> notebooks_pb2.Session:
        reply: notebooks_pb2.Session = await self._unary(
            self._notebooks.Get, notebooks_pb2.GetRequest(session=session), 30.0
        )
        return reply

    async def list(self) -> list[notebooks_pb2.Session]:
        reply = await self._unary(self._notebooks.List, notebooks_pb2.ListRequest(), 30.0)
        return list(reply.sessions)

    def logs(
        self,
        session: str,
        *,
        build: bool = False,
        follow: bool = False,
        tail_lines: int = 0,
        container: str = "",
    ) -> AsyncStream[notebooks_pb2.LogLine]:
        source = notebooks_pb2.LOG_SOURCE_BUILD if build else notebooks_pb2.LOG_SOURCE_NOTEBOOK
        return self._stream(
            self._notebooks.Logs,
            notebooks_pb2.LogsRequest(
                session=session, source=source, follow=follow, tail_lines=tail_lines, container=container
            ),
        )

    async def sync(
        self, session: str, action: str | int = "status", *, force: bool = False
    ) -> notebooks_pb2.SyncStatus:
        reply = await self._unary(
            self._notebooks.Sync,
            notebooks_pb2.SyncRequest(session=session, action=sync_action(action), force=force),
        )
        status: notebooks_pb2.SyncStatus = reply.status
        return status

    def events(
        self, sessions: Iterable[str] = (), *, initial: bool = False
    ) -> AsyncStream[notebooks_pb2.SessionEvent]:
        return self._stream(
            self._notebooks.Events, notebooks_pb2.EventsRequest(sessions=list(sessions), initial=initial)
        )


async def connect_async(
    socket: str | os.PathLike[str] | None = None,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    autostart: bool = True,
    check_version: bool = True,
    start_timeout: float = daemon_control.DEFAULT_START_TIMEOUT,
) -> AsyncClient:
    """Like `nbdclient.connect`, for asyncio; the daemon check (and start) runs in a thread."""
    paths = resolve(socket=socket, state_dir=state_dir)

    def ensure() -> daemon_pb2.VersionResponse:
        channel, version = daemon_control.ensure_daemon(
            paths, autostart=autostart, check_version=check_version, start_timeout=start_timeout
        )
        channel.close()
        return version

    version = await asyncio.to_thread(ensure)
    channel = grpc.aio.insecure_channel(paths.target, options=CHANNEL_OPTIONS)
    return AsyncClient(channel, paths, version)
