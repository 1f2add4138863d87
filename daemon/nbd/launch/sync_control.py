"""The sync capability: status, pause, resume and flush of a live session's two-way sync.

Kept apart from the launch: it acts only on a runtime this daemon holds (`LiveSessions`), never on
the cluster, and reports the sync's status into the session.
"""

from __future__ import annotations

from nbd.app import App
from nbd.capabilities import SyncAction
from nbd.errors import FailedPrecondition
from nbd.launch.live import LiveSessions
from nbd.session import Phase, Session
from nbd.status import SyncStatus

__all__ = ["SyncCommands"]

# How long a flush waits for the sync to settle.
FLUSH_TIMEOUT = 60.0


class SyncCommands:
    """Runs a sync action on a session's sync session (a `nbd.capabilities.SyncControl`)."""

    def __init__(self, app: App, live: LiveSessions) -> None:
        self.app = app
        self.live = live

    async def sync(self, session: Session, action: SyncAction, *, force: bool = False) -> SyncStatus:
        runtime = self.live.runtime(session.key)
        if runtime is None and session.phase == Phase.GONE:
            raise FailedPrecondition(
                f"session {session.name} does not sync: {session.message}", reason="NotebookGone"
            )
        if runtime is None:
            raise FailedPrecondition(
                f"session {session.name} is not running; relaunch it with `nbctl launch`", reason="NotRunning"
            )
        sync = runtime.sync_session()
        if action == SyncAction.PAUSE:
            sync.pause()
        elif action == SyncAction.RESUME:
            sync.resume(force=force)
        elif action == SyncAction.FLUSH:
            await sync.flush(FLUSH_TIMEOUT)
        status = sync.status()
        await self.app.registry.update(session.key, sync=status)
        return status
