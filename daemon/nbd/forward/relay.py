"""The byte relay between one local TCP connection and one `pods/portforward` v4 WebSocket.

Wire (v4.channel.k8s.io, one port): channel 0 carries data both ways, channel 1 carries errors
from the server. The first message on each channel starts with the port as a little-endian uint16;
those two bytes are not data. Text on channel 1 means the server could not reach the pod's port.

Invariants:
- Back-pressure both ways: a local read is at most READ_CHUNK bytes and the next read waits for
  the WebSocket writer to drain; a pod message is written to the local socket and the next one is
  received only after the local socket drained. Nothing is buffered without bound.
- v4 cannot half-close a data channel. When the local side sends EOF, nbd stops sending and keeps
  relaying the pod's bytes until the pod side closes the stream or stays silent for `eof_linger`.
- An error message or a pod-side close ends this one connection; the caller's listener is never
  touched from here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import aiohttp

from nbd.kube.channel import Channel, send_frame

__all__ = ["READ_CHUNK", "RelayResult", "relay_v4"]

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024  # aiohttp receivers (kubesim's too) handle 64 KiB frames best; larger ones cost copies
DATA, ERROR = 0, 1


@dataclass
class RelayResult:
    """What happened on one relayed connection.

    Attributes:
        sent: Bytes from the local side to the pod.
        received: Bytes from the pod to the local side.
        error: The server's error-channel message, if any.
        closed_by: "pod", "local" or "error".
    """

    sent: int = 0
    received: int = 0
    error: str | None = None
    closed_by: str = "local"


async def _local_to_pod(
    reader: asyncio.StreamReader, ws: aiohttp.ClientWebSocketResponse, result: RelayResult
) -> None:
    while True:
        data = await reader.read(READ_CHUNK)
        if not data:
            return
        result.sent += len(data)
        await send_frame(ws, DATA, data)


async def _pod_to_local(
    ws: aiohttp.ClientWebSocketResponse,
    writer: asyncio.StreamWriter,
    result: RelayResult,
) -> None:
    # `pending_port[ch]` counts the port bytes still to strip from the start of channel ch.
    pending_port = [2, 2]
    while True:
        msg = await ws.receive()
        mtype = msg.type
        if mtype is aiohttp.WSMsgType.BINARY:
            data = msg.data
        elif mtype is aiohttp.WSMsgType.TEXT:
            data = msg.data.encode("utf-8")
        else:  # CLOSE/CLOSED/ERROR: the pod side is gone
            result.closed_by = "pod"
            return
        if not data:
            continue
        channel = data[0]
        if channel > ERROR:
            continue
        start = 1
        skip = pending_port[channel]
        if skip:
            take = min(skip, len(data) - 1)
            pending_port[channel] -= take
            start += take
        if start >= len(data):
            continue
        if channel == ERROR:
            result.error = bytes(data[start:]).decode("utf-8", "replace")
            result.closed_by = "error"
            return
        result.received += len(data) - start
        writer.write(memoryview(data)[start:])
        await writer.drain()


def _tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def relay_v4(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    channel: Channel,
    *,
    eof_linger: float = 10.0,
) -> RelayResult:
    """Relay until either side ends; closes the WebSocket and the local connection before returning."""
    _tune(writer)
    ws = channel.ws
    result = RelayResult()
    up = asyncio.create_task(_local_to_pod(reader, ws, result))
    down = asyncio.create_task(_pod_to_local(ws, writer, result))
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up in done and down not in done:
            exc = up.exception()
            if exc is None:
                # Local EOF: keep delivering the pod's answer until it closes or falls silent.
                while True:
                    before = result.received
                    finished, _ = await asyncio.wait({down}, timeout=eof_linger)
                    if finished or result.received == before:
                        break
            else:
                result.closed_by = "local"
        for task in (up, down):
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None and not isinstance(exc, (ConnectionError, OSError, aiohttp.ClientError)):
                    log.debug("relay to pod %s ended with %r", channel.pod, exc)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        if not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (TimeoutError, OSError, aiohttp.ClientError):
                pass
        try:
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except OSError:
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ConnectionError):
            pass
    return result
