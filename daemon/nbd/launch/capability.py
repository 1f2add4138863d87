"""Installs the launch capability into the daemon: Launch, Stop, Logs and Sync, and session resume.

The three capabilities share one `LiveSessions` (the cluster clients and the sessions' runtimes),
which resumes the ready sessions at daemon start and stops them at shutdown.
"""

from __future__ import annotations

from nbd.app import App
from nbd.launch.launcher import Launcher
from nbd.launch.live import LiveSessions
from nbd.launch.logs import NotebookLogs
from nbd.launch.sync_control import SyncCommands


def install(app: App) -> None:
    live = LiveSessions(app)
    app.capabilities.launcher = Launcher(app, live)
    app.capabilities.logs = NotebookLogs(live.clients)
    app.capabilities.sync = SyncCommands(app, live)
    app.on_start(live.resume_all, name="resume sessions")
    app.on_stop(live.close, name="stop sessions")
