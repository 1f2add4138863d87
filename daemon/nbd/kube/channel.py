"""Channel-multiplexed WebSockets to `pods/P/exec` and `pods/P/portforward`.

The API server speaks the `vN.channel.k8s.io` protocols: every WebSocket message starts with one
channel byte (exec: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, v5's 255 = "peer closed
channel"; portforward: 2i data / 2i+1 error for the i-th port). `Channel` is that framing and
nothing more; the forward relay and `ExecChannel` build on it. Authentication, TLS and proxying come
from the target's shared `Transport`.

`send_frame` is the hot path of every upload: it builds the client's masked frame (header, mask,
channel byte, data) in one allocation with one copy of the data, masks it in place and hands it
to the connection's transport in one write, where aiohttp's `send_bytes` would copy the data
three times (prefixing the channel byte, copying to mask, joining header and payload).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence
from urllib.parse import quote

import aiohttp
from aiohttp._websocket.helpers import websocket_mask

from nbd.errors import Unavailable
from nbd.kube.target import KubeTarget
from nbd.kube.transport import transport_for

__all__ = [
    "Channel",
    "open_channel",
    "send_frame",
    "V4_CHANNEL",
    "V5_CHANNEL",
    "PORTFORWARD_PROTOCOLS",
    "EXEC_PROTOCOLS",
]

V4_CHANNEL = "v4.channel.k8s.io"
V5_CHANNEL = "v5.channel.k8s.io"
PORTFORWARD_PROTOCOLS = (V4_CHANNEL,)
EXEC_PROTOCOLS = (V5_CHANNEL, V4_CHANNEL)

_BINARY_FIN = 0x82
_MASKED = 0x80
_random_bits = random.Random().getrandbits  # the masking key must be unpredictable, not secret


def masked_frame(channel: int, data: bytes | bytearray | memoryview) -> bytearray:
    """The complete client-to-server binary frame carrying `[channel] + data` (RFC 6455 section 5.2).

    One allocation and one copy of `data`; the payload is masked in place.
    """
    length = 1 + len(data)
    if length < 126:
        start = 2 + 4
    elif length < 65536:
        start = 4 + 4
    else:
        start = 10 + 4
    frame = bytearray(start + 1) + data
    frame[start] = channel
    key = _random_bits(32).to_bytes(4, "big")
    # websocket_mask masks the whole buffer from index 0; the payload starts at `start`, so the key is
    # rotated to keep payload byte j XORed with key[j % 4]. Header and key are written afterwards.
    shift = start % 4
    websocket_mask(key[-shift:] + key[:-shift] if shift else key, frame)
    if length < 126:
        frame[0], frame[1] = _BINARY_FIN, _MASKED | length
    elif length < 65536:
        struct.pack_into("!BBH", frame, 0, _BINARY_FIN, _MASKED | 126, length)
    else:
        struct.pack_into("!BBQ", frame, 0, _BINARY_FIN, _MASKED | 127, length)
    frame[start - 4 : start] = key
    return frame


async def send_frame(
    ws: aiohttp.ClientWebSocketResponse, channel: int, data: bytes | bytearray | memoryview
) -> None:
    """Send `[channel] + data` as one binary message, waiting while the connection's writer is paused.

    Writes the frame to the connection's transport directly (aiohttp frames are written whole and
    synchronously, so it never interleaves with aiohttp's own pings, pongs or close). The
    connection offers no compression (`Transport.ws_connect` passes compress=0), so frames are raw.

    Raises:
        ConnectionResetError: the connection is closing or gone.
    """
    writer = ws._writer
    transport = writer.transport
    if ws.closed or transport is None or transport.is_closing():
        raise ConnectionResetError("the WebSocket is closed")
    transport.write(masked_frame(channel, data))
    protocol = writer.protocol
    if protocol.writing_paused:
        await protocol._drain_helper()


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
        await send_frame(self.ws, channel, data)

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
    transport = transport_for(target)
    ws = await transport.ws_connect(pod_path(namespace, pod, subresource), query, protocols)
    if not ws.protocol:
        await ws.close()
        raise Unavailable(
            f"the cluster at {target.host} accepted the {subresource} stream without a channel "
            "protocol; it is not a Kubernetes API server nbd can talk to",
            reason="UpgradeFailed",
        )
    return Channel(ws, pod)
