"""Channel-multiplexed WebSockets to `pods/P/exec` and `pods/P/portforward`.

The API server speaks the `vN.channel.k8s.io` protocols: every WebSocket message starts with one
channel byte (exec: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, v5's 255 = "peer closed
channel"; portforward: 2i data / 2i+1 error for the i-th port). `Channel` is that framing and
nothing more; the forward relay and `ExecChannel` build on it. Authentication, TLS and proxying come
from the target's shared `Transport`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote

import aiohttp

from nbd.errors import Unavailable
from nbd.kube.target import KubeTarget

__all__ = [
    "Channel",
    "open_channel",
    "V4_CHANNEL",
    "V5_CHANNEL",
    "PORTFORWARD_PROTOCOLS",
    "EXEC_PROTOCOLS",
]

V4_CHANNEL = "v4.channel.k8s.io"
V5_CHANNEL = "v5.channel.k8s.io"
PORTFORWARD_PROTOCOLS = (V4_CHANNEL,)
EXEC_PROTOCOLS = (V5_CHANNEL, V4_CHANNEL)


class Channel:
    """One channel-framed WebSocket.

    Attributes:
        ws: The underlying aiohttp WebSocket (the relay's hot path uses it directly).
        protocol: The subprotocol the server chose (e.g. "v4.channel.k8s.io").
        pod: The pod it is attached to.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, pod: str) -> None:
        self.ws = ws
        self.pod = pod
        self.protocol = ws.protocol or ""

    async def send(self, channel: int, data: bytes | bytearray | memoryview) -> None:
        """Send `data` on `channel` (one message: channel byte + data)."""
        await self.ws.send_bytes(bytes((channel,)) + bytes(data))

    async def receive(self) -> tuple[int, bytes] | None:
        """The next (channel, payload), or None once the server closed the stream.

        The channel is taken from the first byte whatever the opcode (servers send text too).
        """
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
            elif msg.type is aiohttp.WSMsgType.TEXT:
                data = msg.data.encode("utf-8")
            elif msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                return None
            if not data:
                continue
            return data[0], data[1:]

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def close(self) -> None:
        await self.ws.close()


def pod_path(namespace: str, pod: str, subresource: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/{subresource}"


async def open_channel(
    target: KubeTarget,
    namespace: str,
    pod: str,
    subresource: str,
    query: Sequence[tuple[str, str]],
    protocols: Iterable[str],
) -> Channel:
    """Open a channel WebSocket to `pods/<pod>/<subresource>` (exec or portforward).

    Raises:
        nbd.errors.NbdError: mapped from the API server's answer (401/403 PermissionDenied, 404 NotFound,
            503 Unavailable, unreachable cluster Unavailable, ...).
    """
    transport = target.transport()
    ws = await transport.ws_connect(pod_path(namespace, pod, subresource), query, protocols)
    if not ws.protocol:
        await ws.close()
        raise Unavailable(
            f"the cluster at {target.host} accepted the {subresource} stream without a channel "
            "protocol; it is not a Kubernetes API server nbd can talk to",
            reason="UpgradeFailed",
        )
    return Channel(ws, pod)
