"""A capability used by the tests: launch, stop, logs and sync that touch no cluster.

Loaded by a daemon started with `--capabilities nbdtestcap.capability` and this folder's parent on
PYTHONPATH. The launch's behaviour is chosen by the requested name.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from nbd.app import App
from nbd.capabilities import LaunchRequest, LogSource, LogsQuery, SyncAction
from nbd.errors import InvalidArgument
from nbd.events import (
    Cached,
    CachedStep,
    Direction,
    Failure,
    LaunchEvent,
    LogLine,
    Notice,
    NoticeLevel,
    PhaseChanged,
    PodStatus,
    Progress,
    Ready,
    SyncChange,
)
from nbd.session import Phase, Session, SyncState, SyncStatus


class FakeLauncher:
    def __init__(self, app: App) -> None:
        self.app = app

    async def launch(self, request: LaunchRequest) -> AsyncIterator[LaunchEvent]:
        name = request.name or "nb"
        if name == "bad":
            raise InvalidArgument("the name bad is not allowed; choose another with --name")
        if name == "boom":
            raise RuntimeError("leaked secret-token-123")
        reg = self.app.registry
        session = await reg.put(
            Session(
                name=name,
                namespace=request.namespace or "default",
                context=request.context or "fake",
                kubeconfig=request.kubeconfig,
                directory=request.directory,
                phase=Phase.PACKAGING,
                spec=request.spec,
            )
        )
        ref = reg.ref_of(session)
        if name == "hang":
            # A client that goes away closes this generator wherever it is suspended (GeneratorExit
            # at a yield, CancelledError at an await): both must reach the finally.
            try:
                yield LaunchEvent(ref, PhaseChanged(Phase.PACKAGING, "packaging " + request.directory))
                await asyncio.sleep(3600)
            finally:
                await reg.update(session.key, message="launch cancelled")
            return
        yield LaunchEvent(ref, PhaseChanged(Phase.PACKAGING, "packaging " + request.directory))
        for done in (0, 512, 1024):
            yield LaunchEvent(
                ref,
                Progress(
                    Phase.PACKAGING, done_bytes=done, total_bytes=1024, done_files=done // 512, total_files=2
                ),
            )
        yield LaunchEvent(ref, Cached(CachedStep.UPLOAD, "already uploaded", "abc123"))
        yield LaunchEvent(ref, PhaseChanged(Phase.BUILDING))
        yield LaunchEvent(ref, LogLine("STEP 1/2: FROM python", container="build"))
        if name == "fail":
            await reg.update(session.key, phase=Phase.FAILED, message="the build failed")
            yield LaunchEvent(
                ref,
                Failure(
                    "BuildFailed",
                    "the image build failed: pip install exited 1; fix requirements.txt and launch again",
                    ("ERROR: no such package", "exit 1"),
                ),
            )
            return
        yield LaunchEvent(ref, Notice("port 8888 is busy, using 8889", NoticeLevel.WARNING))
        yield LaunchEvent(ref, PodStatus("nb-pod", "Pending", "ContainerCreating"))
        yield LaunchEvent(ref, PodStatus("nb-pod", "Running", ready=True))
        url = "http://127.0.0.1:8889/?token=tok"
        session = await reg.update(session.key, phase=Phase.READY, url=url, pod="nb-pod")
        yield LaunchEvent(ref, Ready(url, 8889, session))

    async def stop(self, session: Session, *, delete: bool, delete_workspace: bool = False) -> Session:
        if delete:
            await self.app.registry.remove(session.key)
            return dataclasses.replace(session, phase=Phase.STOPPED, message="deleted")
        return await self.app.registry.update(session.key, phase=Phase.STOPPED, url="")


class FakeLogs:
    async def logs(self, session: Session, query: LogsQuery) -> AsyncIterator[LogLine]:
        prefix = "build" if query.source == LogSource.BUILD else "notebook"
        lines = [f"{prefix} line {i}" for i in range(1, 6)]
        if query.tail_lines:
            lines = lines[-query.tail_lines :]
        for text in lines:
            yield LogLine(text, container=query.container or prefix)
        if query.follow:
            await asyncio.sleep(3600)


class FakeSync:
    def __init__(self, app: App) -> None:
        self.app = app

    async def sync(self, session: Session, action: SyncAction) -> SyncStatus:
        state = {
            SyncAction.PAUSE: SyncState.PAUSED,
            SyncAction.RESUME: SyncState.WATCHING,
            SyncAction.FLUSH: SyncState.WATCHING,
            SyncAction.STATUS: session.sync.state,
        }[action]
        status = dataclasses.replace(
            session.sync, state=state, message=action.name.lower(), local_root=session.directory
        )
        await self.app.registry.update(session.key, sync=status)
        self.app.registry.publish_detail(session.key, SyncChange(Direction.TO_LOCAL, "out.csv", "create", 10))
        return status


async def _resume(app: App) -> None:
    for s in app.registry.list():
        if s.phase == Phase.READY:
            await app.registry.update(s.key, message="resumed")


def install(app: App) -> None:
    app.capabilities.launcher = FakeLauncher(app)
    app.capabilities.logs = FakeLogs()
    app.capabilities.sync = FakeSync(app)
    app.on_start(_resume)
