"""Installs the runs capability into the daemon: Run, Logs, Get, List, Stop and Fetch of runs."""

from __future__ import annotations

from nbd.app import App
from nbd.runs.runner import Runner


def install(app: App) -> None:
    runner = Runner(app)
    app.capabilities.runs = runner

    async def close(_app: App) -> None:
        await runner.close()

    app.on_stop(close, name="close run clients")
