"""The gRPC servicers of nbdapi.v1: validate, delegate, convert.

Each method converts its request to domain types (`nbd.convert`), delegates to the registry or a
capability, and converts the answer back. Errors are `NbdError`s, mapped to statuses by
`nbd.interceptors.ErrorInterceptor`; nothing here catches them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc.aio

from nbd import convert
from nbd.app import App
from nbd.errors import InvalidArgument
from nbd.version import API_VERSION
from nbdapi.v1 import daemon_pb2, daemon_pb2_grpc, notebooks_pb2, notebooks_pb2_grpc, runs_pb2, runs_pb2_grpc

__all__ = ["DaemonServicer", "NotebooksServicer", "RunsServicer"]

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


async def _close(agen: Any) -> None:
    aclose = getattr(agen, "aclose", None)
    if aclose is not None:
        await aclose()


class NotebooksServicer(notebooks_pb2_grpc.NotebooksServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    def _session(self, session: Any) -> notebooks_pb2.Session:
        return convert.session_to_proto(session, self.app.registry.ref_of(session))

    async def Launch(
        self, request: notebooks_pb2.LaunchRequest, context: Context
    ) -> AsyncIterator[notebooks_pb2.LaunchEvent]:
        await self.app.wait_sessions_ready()
        launcher = self.app.capabilities.require_launcher()
        launch = convert.launch_request_from_proto(request)
        events = launcher.launch(launch)
        try:
            async for event in events:
                yield convert.launch_event_to_proto(event, self.app.registry.ref_of)
        finally:
            await _close(events)

    async def Stop(self, request: notebooks_pb2.StopRequest, context: Context) -> notebooks_pb2.StopResponse:
        await self.app.wait_sessions_ready()
        launcher = self.app.capabilities.require_stopper()
        session = self.app.registry.resolve(request.session)
        if request.delete_workspace and not request.delete:
            raise InvalidArgument(
                "delete_workspace applies only with delete (the workspace goes with the notebook)"
            )
        stopped = await launcher.stop(
            session, delete=request.delete, delete_workspace=request.delete_workspace
        )
        return notebooks_pb2.StopResponse(session=self._session(stopped))

    async def Get(self, request: notebooks_pb2.GetRequest, context: Context) -> notebooks_pb2.Session:
        return self._session(self.app.registry.resolve(request.session))

    async def List(self, request: notebooks_pb2.ListRequest, context: Context) -> notebooks_pb2.ListResponse:
        return notebooks_pb2.ListResponse(sessions=[self._session(s) for s in self.app.registry.list()])

    async def Logs(
        self, request: notebooks_pb2.LogsRequest, context: Context
    ) -> AsyncIterator[notebooks_pb2.LogLine]:
        await self.app.capabilities_ready.wait()
        reader = self.app.capabilities.require_logs()
        session = self.app.registry.resolve(request.session)
        lines = reader.logs(session, convert.logs_query_from_proto(request))
        try:
            async for line in lines:
                yield convert.log_line_to_proto(line)
        finally:
            await _close(lines)

    async def Sync(self, request: notebooks_pb2.SyncRequest, context: Context) -> notebooks_pb2.SyncResponse:
        await self.app.wait_sessions_ready()
        action, force = convert.sync_request_from_proto(request)
        control = self.app.capabilities.require_sync()
        session = self.app.registry.resolve(request.session)
        # Only a forced resume passes the flag: capabilities without the parameter keep working.
        status = await (control.sync(session, action, force=True) if force else control.sync(session, action))
        return notebooks_pb2.SyncResponse(status=convert.sync_to_proto(status))

    async def Events(
        self, request: notebooks_pb2.EventsRequest, context: Context
    ) -> AsyncIterator[notebooks_pb2.SessionEvent]:
        registry = self.app.registry
        # Subscribe before taking the snapshot: a change between the two is then delivered (perhaps
        # twice) rather than lost.
        with registry.subscribe(request.sessions, name=f"Events({context.peer() or 'client'})") as sub:
            if request.initial:
                for event in registry.snapshot(request.sessions):
                    yield convert.session_event_to_proto(event, registry.ref_of(event.session))
            async for event in sub:
                yield convert.session_event_to_proto(event, registry.ref_of(event.session))


class DaemonServicer(daemon_pb2_grpc.DaemonServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def Version(
        self, request: daemon_pb2.VersionRequest, context: Context
    ) -> daemon_pb2.VersionResponse:
        app = self.app
        return daemon_pb2.VersionResponse(
            version=app.version,
            api_version=API_VERSION,
            pid=os.getpid(),
            socket=str(app.paths.socket),
            state_dir=str(app.paths.state_dir),
            log_file=str(app.paths.log_file),
            started=convert.timestamp(app.started),
        )

    async def Shutdown(
        self, request: daemon_pb2.ShutdownRequest, context: Context
    ) -> daemon_pb2.ShutdownResponse:
        grace = request.grace_seconds if request.grace_seconds > 0 else None
        self.app.request_shutdown(grace)
        return daemon_pb2.ShutdownResponse()


class RunsServicer(runs_pb2_grpc.RunsServicer):
    """The run RPCs: runs live in the cluster, so none waits for the persisted sessions."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def _runs(self) -> Any:
        await self.app.capabilities_ready.wait()
        return self.app.capabilities.require_runs()

    async def Run(self, request: runs_pb2.RunRequest, context: Context) -> AsyncIterator[runs_pb2.RunEvent]:
        runs = await self._runs()
        events = runs.run(convert.run_request_from_proto(request))
        try:
            async for event in events:
                yield convert.run_event_to_proto(event)
        finally:
            await _close(events)

    async def Logs(
        self, request: runs_pb2.RunLogsRequest, context: Context
    ) -> AsyncIterator[runs_pb2.RunEvent]:
        runs = await self._runs()
        rank = request.rank if request.HasField("rank") and request.rank >= 0 else None
        events = runs.logs(
            request.run, convert.target_from_proto(request.target), follow=request.follow, rank=rank
        )
        try:
            async for event in events:
                yield convert.run_event_to_proto(event)
        finally:
            await _close(events)

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: Context) -> runs_pb2.RunInfo:
        runs = await self._runs()
        info = await runs.get(request.run, convert.target_from_proto(request.target))
        return convert.run_info_to_proto(info)

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: Context
    ) -> runs_pb2.ListRunsResponse:
        runs = await self._runs()
        found, ctx, namespace = await runs.list(convert.target_from_proto(request.target))
        return runs_pb2.ListRunsResponse(
            runs=[convert.run_info_to_proto(r) for r in found], context=ctx, namespace=namespace
        )

    async def StopRun(self, request: runs_pb2.StopRunRequest, context: Context) -> runs_pb2.RunInfo:
        runs = await self._runs()
        info = await runs.stop(request.run, convert.target_from_proto(request.target))
        return convert.run_info_to_proto(info)

    async def Fetch(
        self, request: runs_pb2.FetchRequest, context: Context
    ) -> AsyncIterator[runs_pb2.FetchEvent]:
        runs = await self._runs()
        events = runs.fetch(convert.fetch_request_from_proto(request))
        try:
            async for event in events:
                yield convert.fetch_event_to_proto(event)
        finally:
            await _close(events)
