"""Container processes: start a command in a pod's sandbox, capture its output, stop it.

A container is one local process (its own session and process group, so a stop reaches its
children), started through the sandbox's `nsenter` prefix; stdout and stderr go to the
instance's `LogFile`. Exit codes follow the container runtime convention: a process killed by
signal N reports 128+N (137 for SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence

from kubesim.kubelet.logs import LogFile
from kubesim.kubelet.namespaces import set_pdeathsig

__all__ = ["ContainerProcess", "exit_code_of"]

log = logging.getLogger("kubesim.kubelet.runtime")


def exit_code_of(returncode: int) -> int:
    """asyncio's returncode (negative for a signal) in the runtime's convention."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerProcess:
    """One running container instance.

    Invariant: `wait()` returns only after both output pumps have drained, so the log holds
    everything the process wrote when the container is reported terminated.
    """

    def __init__(self, proc: asyncio.subprocess.Process, log_file: LogFile) -> None:
        self.proc = proc
        self.log = log_file
        self.pid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        self._pumps = [
            asyncio.ensure_future(self._pump(proc.stdout, "stdout")),
            asyncio.ensure_future(self._pump(proc.stderr, "stderr")),
        ]
        self._exit: int | None = None

    @classmethod
    async def start(
        cls, argv: Sequence[str], env: dict[str, str], cwd: str | None, log_file: LogFile
    ) -> ContainerProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=set_pdeathsig,
        )
        return cls(proc, log_file)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            data = await stream.read(65536)
            if not data:
                return
            self.log.append(data, name)

    async def wait(self) -> int:
        if self._exit is None:
            rc = await self.proc.wait()
            # Children that kept the pipes open must not hold the container "running" forever.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), 2)
            self._exit = exit_code_of(rc)
        return self._exit

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float) -> int:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; returns the exit code."""
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), max(grace, 0.0))
            except TimeoutError:
                self.signal(signal.SIGKILL)
        return await self.wait()
