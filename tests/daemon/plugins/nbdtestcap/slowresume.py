"""The test capability with a resume of the persisted sessions that waits for the file named by
$NBD_TEST_RESUME_GATE, so a test controls when the daemon's start-up resume ends. The session RPCs
wait for that resume at most $NBD_TEST_SESSIONS_WAIT seconds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nbd.app import App
from nbd.session import Phase
from nbdtestcap import capability

__all__ = ["install"]


async def _gated_resume(app: App) -> None:
    gate = Path(os.environ["NBD_TEST_RESUME_GATE"])
    deadline = asyncio.get_running_loop().time() + 60
    while not gate.exists() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    for s in app.registry.list():
        if s.phase == Phase.READY:
            await app.registry.update(s.key, message="resumed after the gate")


def install(app: App) -> None:
    capability.install(app)
    app.on_start(_gated_resume, name="gated resume")
    app.sessions_wait = float(os.environ.get("NBD_TEST_SESSIONS_WAIT", "30"))
