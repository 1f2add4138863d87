"""The agent's transport in a real session: an exec stream into the notebook pod.

The pod is resolved at every connect (a callable may look it up by label), so a replaced pod is
picked up by the session's reconnect without anyone's help. When the stream ends, the exit status
and the tail of stderr become the message of the `AgentLost` the session reports, so "python3 is
not in the image" reads as such instead of as a bare disconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nbd.errors import NbdError
from nbd.kube.exec import ExecChannel, open_exec
from nbd.kube.target import KubeTarget
from nbd.sync.remote import AgentLost, AgentTransport, TransportFactory

__all__ = ["ExecTransport", "exec_transport_factory"]

PodResolver = Callable[[], Awaitable[str]]


class ExecTransport:
    """`AgentTransport` over an `ExecChannel` (stdin → agent, agent's stdout → us)."""

    def __init__(self, channel: ExecChannel, pod: str) -> None:
        self.channel = channel
        self.pod = pod

    async def send(self, data: bytes) -> None:
        try:
            await self.channel.write_stdin(data)
        except NbdError as e:
            raise AgentLost(f"the exec stream to pod {self.pod} closed: {e}") from e

    async def receive(self) -> bytes:
        data = await self.channel.read_stdout(1 << 20)
        if data:
            return data
        raise AgentLost(await self._why_ended())

    async def _why_ended(self) -> str:
        try:
            code: int | None = await self.channel.wait(timeout=2)
        except (TimeoutError, NbdError) as e:
            code, detail = None, str(e)
        else:
            detail = ""
        stderr = (await asyncio.wait_for(self.channel.read_stderr(), 1)).decode("utf-8", "replace").strip()
        tail = stderr.splitlines()[-1] if stderr else ""
        missing = (
            code == 127
            or "python3: not found" in stderr
            or (
                "python" in detail + stderr
                and ("No such file" in detail + stderr or "not found" in detail + stderr)
            )
        )
        if missing:
            return (
                f"python3 was not found in pod {self.pod}; the sync agent needs python3 in the notebook image"
            )
        if code is not None:
            return f"the sync agent in pod {self.pod} exited with code {code}" + (f": {tail}" if tail else "")
        return f"the exec stream to pod {self.pod} ended" + (f": {detail}" if detail else "")

    async def close(self) -> None:
        await self.channel.close()


def exec_transport_factory(
    target: KubeTarget, namespace: str, pod: str | PodResolver, container: str | None = None
) -> TransportFactory:
    """A `TransportFactory` that runs the agent with `exec` in `pod` (a name, or a resolver
    called at each connect so a replaced pod is found)."""

    async def factory(argv: list[str]) -> AgentTransport:
        name = pod if isinstance(pod, str) else await pod()
        try:
            channel = await open_exec(target, namespace, name, container, argv, stdin=True)
        except NbdError as e:
            raise AgentLost(f"could not start the sync agent in pod {name}: {e}") from e
        return ExecTransport(channel, name)

    return factory
