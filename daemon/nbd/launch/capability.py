"""Installs the launch capability into the daemon: Launch, Stop, Logs and Sync, and session resume."""

from __future__ import annotations

from nbd.app import App
from nbd.launch.launcher import Launcher


def install(app: App) -> None:
    launcher = Launcher(app)
    app.capabilities.launcher = launcher
    app.capabilities.logs = launcher
    app.capabilities.sync = launcher
    app.on_start(launcher.resume_all, name="resume sessions")
    app.on_stop(launcher.close, name="stop sessions")
