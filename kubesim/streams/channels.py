"""The channel framing of `pods/exec`, `pods/attach` and `pods/portforward` over WebSocket.

Every WebSocket message starts with one channel byte; the rest is payload. Exec uses channels
0 stdin, 1 stdout, 2 stderr, 3 status (a JSON `Status`), 4 resize (a JSON `{"Width","Height"}`).
`v5.channel.k8s.io` adds a close signal: a message `[255, ch]` says the peer will send nothing
more on channel `ch` (kubectl sends `[255, 0]` at stdin EOF). Port-forward (`v4`) uses, for the
i-th requested port, data channel 2i and error channel 2i+1, each opened by a 3-byte frame
`[ch, port_lo, port_hi]` from the server.

The Python client sends stdin as TEXT messages (`"\\x00" + data`), so the channel is taken from
the first byte whatever the opcode. Pure: no I/O.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "STDIN",
    "STDOUT",
    "STDERR",
    "STATUS",
    "RESIZE",
    "CLOSE",
    "EXEC_PROTOCOLS",
    "PORTFORWARD_WS_PROTOCOLS",
    "Frame",
    "decode",
    "encode",
    "encode_close",
    "exit_status",
    "status_frame",
    "FrameError",
    "port_frame",
    "choose_protocol",
    "FRAME_DATA",
    "frame_buffer",
    "put_frame_header",
]

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4
# v5 only: payload is one byte, the channel that the sender closed.
CLOSE = 255

# In order of preference: the first one the client offers from this list wins.
EXEC_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
PORTFORWARD_WS_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")


@dataclass(frozen=True)
class Frame:
    """One decoded message: `channel` and its payload.

    Invariant: for a v5 close message, `channel == CLOSE` and `closed` is the channel being closed.
    """

    channel: int
    data: bytes
    closed: int | None = None


class FrameError(ValueError):
    """A message that does not follow the channel framing."""


def decode(message: bytes | str, *, v5: bool) -> Frame:
    """Decode one WebSocket message (BINARY bytes or TEXT str) into a `Frame`."""
    raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    if not raw:
        raise FrameError("empty channel message")
    channel = raw[0]
    if channel == CLOSE and v5:
        if len(raw) < 2:
            raise FrameError("close message without a channel")
        return Frame(CLOSE, b"", closed=raw[1])
    return Frame(channel, raw[1:])


def encode(channel: int, data: bytes | bytearray | memoryview = b"") -> bytes:
    """One message carrying `data` on `channel` (one copy of `data`)."""
    if not 0 <= channel <= 255:
        raise FrameError(f"channel {channel} out of range")
    return bytes((channel,)) + data


def encode_close(channel: int) -> bytes:
    """The v5 message saying the sender will send nothing more on `channel`."""
    return bytes((CLOSE, channel))


def exit_status(exit_code: int | None, message: str | None = None) -> dict[str, Any]:
    """The `Status` sent on channel 3 when an exec ends (kubectl exits with the cause's code).

    `exit_code` None with a `message` is an internal failure (no exit code to report).
    """
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    if exit_code is None:
        return {
            "metadata": {},
            "status": "Failure",
            "message": message or "exec failed",
            "reason": "InternalError",
            "code": 500,
        }
    return {
        "metadata": {},
        "status": "Failure",
        "message": message or f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def status_frame(exit_code: int | None, message: str | None = None) -> bytes:
    """Channel-3 message carrying `exit_status(...)` as JSON."""
    return encode(STATUS, json.dumps(exit_status(exit_code, message)).encode())


def port_frame(channel: int, port: int) -> bytes:
    """The 3-byte frame that opens a port-forward channel: `[ch, port little-endian u16]`."""
    return bytes((channel,)) + struct.pack("<H", port)


# A server's binary WebSocket frame built in place: header room (2, 4 or 10 bytes, right-aligned
# against the channel byte), the channel byte, then the payload from FRAME_DATA on.
_HEADROOM = 10
FRAME_DATA = _HEADROOM + 1
_BINARY_FIN = 0x82


def frame_buffer(channel: int, capacity: int) -> bytearray:
    """A buffer for one unmasked binary frame on `channel` carrying up to `capacity` bytes at FRAME_DATA."""
    if not 0 <= channel <= 255:
        raise FrameError(f"channel {channel} out of range")
    buf = bytearray(FRAME_DATA + capacity)
    buf[_HEADROOM] = channel
    return buf


def put_frame_header(buf: bytearray, length: int) -> int:
    """Write the header of a `length`-byte message (channel byte included) before it; returns where the frame starts.

    The frame is `buf[start:_HEADROOM + length]`, header and message contiguous (one write).
    """
    if length < 126:
        start = _HEADROOM - 2
        buf[start] = _BINARY_FIN
        buf[start + 1] = length
    elif length < 65536:
        start = _HEADROOM - 4
        struct.pack_into("!BBH", buf, start, _BINARY_FIN, 126, length)
    else:
        start = 0
        struct.pack_into("!BBQ", buf, start, _BINARY_FIN, 127, length)
    return start


def choose_protocol(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The subprotocol to answer: the first of `supported` (our preference) that was offered."""
    wanted = {p.strip() for p in offered if p.strip()}
    for proto in supported:
        if proto in wanted:
            return proto
    return None
