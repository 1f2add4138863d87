"""Container probes (tcpSocket, httpGet, exec), run from inside the pod's network namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["probe_once", "ProbeRunner"]

# run_exec(argv, timeout) -> exit code
ExecRunner = Callable[[list[str], float], Awaitable[int]]
Connector = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _port(value: Any, container: dict[str, Any]) -> int:
    if isinstance(value, int):
        return value
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    return int(value)


async def probe_once(
    probe: dict[str, Any], container: dict[str, Any], connect: Connector, run_exec: ExecRunner
) -> bool:
    """One probe attempt; True on success."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "tcpSocket" in probe:
            r, w = await asyncio.wait_for(connect(_port(probe["tcpSocket"].get("port"), container)), timeout)
            w.close()
            return True
        if "httpGet" in probe:
            hg = probe["httpGet"]
            r, w = await asyncio.wait_for(connect(_port(hg.get("port"), container)), timeout)
            try:
                host = hg.get("host") or "127.0.0.1"
                headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in hg.get("httpHeaders") or [])
                w.write(f"GET {hg.get('path') or '/'} HTTP/1.0\r\nHost: {host}\r\n{headers}\r\n".encode())
                await w.drain()
                line = await asyncio.wait_for(r.readline(), timeout)
                parts = line.split()
                return len(parts) >= 2 and 200 <= int(parts[1]) < 400
            finally:
                w.close()
        if "exec" in probe:
            code = await run_exec(list(probe["exec"].get("command") or []), timeout)
            return code == 0
    except (TimeoutError, OSError, ValueError):
        return False
    return False


class ProbeRunner:
    """Runs one probe periodically and reports state changes (success/failure thresholds)."""

    def __init__(
        self,
        probe: dict[str, Any],
        container: dict[str, Any],
        connect: Connector,
        run_exec: ExecRunner,
        on_change: Callable[[bool], None],
    ) -> None:
        self.probe = probe
        self.container = container
        self.connect = connect
        self.run_exec = run_exec
        self.on_change = on_change
        self.ok: bool | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._loop())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _loop(self) -> None:
        p = self.probe
        period = float(p.get("periodSeconds") or 10)
        success_needed = int(p.get("successThreshold") or 1)
        failure_needed = int(p.get("failureThreshold") or 3)
        await asyncio.sleep(float(p.get("initialDelaySeconds") or 0))
        successes = failures = 0
        while True:
            ok = await probe_once(p, self.container, self.connect, self.run_exec)
            if ok:
                successes, failures = successes + 1, 0
                if successes >= success_needed and self.ok is not True:
                    self.ok = True
                    self.on_change(True)
            else:
                failures, successes = failures + 1, 0
                if failures >= failure_needed and self.ok is not False:
                    self.ok = False
                    self.on_change(False)
            # A readiness probe that has not yet succeeded is retried quickly (at most 1 s).
            delay = period if self.ok else min(period, 1.0)
            await asyncio.sleep(delay)
