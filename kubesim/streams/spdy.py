"""A SPDY/3.1 frame codec, enough for the port-forward streams of kubectl.

kubectl 1.32 forwards ports with `Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`: the
WebSocket carries a SPDY/3.1 session byte stream in its binary messages (message boundaries mean
nothing: a frame may span messages and a message may hold several frames). Per local connection
the client opens an error stream then a data stream (SYN_STREAM with headers `streamtype`,
`port`, `requestID`); the server answers each with SYN_REPLY, moves bytes in DATA frames, echoes
PINGs and half-closes with FLAG_FIN.

Header blocks are zlib-compressed with the SPDY/3 dictionary; each direction of a session keeps
one compression context for its whole life (a fresh context per frame breaks the peer).

Pure: no I/O. `Parser.feed(bytes)` returns complete frames; the `encode_*` functions build them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

__all__ = [
    "DICTIONARY",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "SYN_STREAM",
    "SYN_REPLY",
    "RST_STREAM",
    "SETTINGS",
    "PING",
    "GOAWAY",
    "HEADERS",
    "WINDOW_UPDATE",
    "ControlFrame",
    "DataFrame",
    "Frame",
    "HeaderCompressor",
    "HeaderDecompressor",
    "Parser",
    "SpdyError",
    "encode_data",
    "encode_goaway",
    "encode_headers_block",
    "decode_headers_block",
    "encode_ping",
    "encode_rst",
    "encode_syn_reply",
    "encode_syn_stream",
    "encode_window_update",
]

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

# RST_STREAM status codes used here.
RST_PROTOCOL_ERROR = 1
RST_REFUSED_STREAM = 3
RST_CANCEL = 5
RST_INTERNAL_ERROR = 6

# A frame's length field is 24 bits; we never emit DATA payloads larger than this.
MAX_DATA = 0xFFFFFF


def _dictionary() -> bytes:
    """The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).

    Built from its parts rather than pasted as 1423 hex bytes; `DICTIONARY_ADLER32` pins it.
    """
    words = (
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    out = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    out += (
        b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        b"401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        b"503 Service Unavailable"
        b"Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        b"chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
        b"text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        b"charset=iso-8859-1,utf-,*,enq=0."
    )
    return out


DICTIONARY = _dictionary()
DICTIONARY_ADLER32 = 0xE3C6A7C2
assert len(DICTIONARY) == 1423 and zlib.adler32(DICTIONARY) == DICTIONARY_ADLER32


class SpdyError(ValueError):
    """Bytes that are not a SPDY/3 session."""


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    flags: int
    data: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class ControlFrame:
    """A control frame with its fields decoded; `headers` only for SYN_STREAM/SYN_REPLY/HEADERS."""

    type: int
    flags: int
    stream_id: int = 0
    headers: dict[str, list[str]] = field(default_factory=dict)
    # PING id, RST_STREAM / GOAWAY status, WINDOW_UPDATE delta.
    value: int = 0
    associated_id: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


Frame = DataFrame | ControlFrame


def encode_headers_block(headers: dict[str, list[str]] | dict[str, str]) -> bytes:
    """The uncompressed SPDY/3 name/value block (names lower-cased, values joined by NUL)."""
    parts = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        joined = value if isinstance(value, str) else "\x00".join(value)
        n = name.lower().encode()
        v = joined.encode()
        parts.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
    return b"".join(parts)


def decode_headers_block(block: bytes) -> dict[str, list[str]]:
    """Inverse of `encode_headers_block`."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        pos = 4
        out: dict[str, list[str]] = {}
        for _ in range(count):
            (nlen,) = struct.unpack_from(">I", block, pos)
            pos += 4
            name = block[pos : pos + nlen].decode()
            pos += nlen
            (vlen,) = struct.unpack_from(">I", block, pos)
            pos += 4
            value = block[pos : pos + vlen].decode()
            pos += vlen
            if pos > len(block):
                raise SpdyError("truncated header block")
            out.setdefault(name.lower(), []).extend(value.split("\x00"))
        return out
    except (struct.error, UnicodeDecodeError) as e:
        raise SpdyError(f"bad header block: {e}") from e


class HeaderCompressor:
    """The sending side's zlib context: one per session direction, kept for its whole life."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def compress(self, headers: dict[str, list[str]] | dict[str, str]) -> bytes:
        block = encode_headers_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving side's zlib context (the dictionary is supplied when the stream asks)."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, zdict=DICTIONARY)

    def decompress(self, data: bytes) -> dict[str, list[str]]:
        try:
            block = self._z.decompress(data)
        except zlib.error as e:
            raise SpdyError(f"header block does not inflate: {e}") from e
        return decode_headers_block(block)


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_DATA:
        raise SpdyError("control frame too large")
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def encode_data(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
    """One DATA frame (callers split payloads larger than MAX_DATA)."""
    if len(data) > MAX_DATA:
        raise SpdyError("data frame too large")
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def encode_syn_stream(
    comp: HeaderCompressor,
    stream_id: int,
    headers: dict[str, str],
    *,
    fin: bool = False,
    associated_id: int = 0,
) -> bytes:
    block = comp.compress(headers)
    payload = struct.pack(">IIH", stream_id & 0x7FFFFFFF, associated_id & 0x7FFFFFFF, 0) + block
    return _control(SYN_STREAM, FLAG_FIN if fin else 0, payload)


def encode_syn_reply(
    comp: HeaderCompressor, stream_id: int, headers: dict[str, str], *, fin: bool = False
) -> bytes:
    block = comp.compress(headers)
    return _control(SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", stream_id & 0x7FFFFFFF) + block)


def encode_rst(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, status))


def encode_ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def encode_goaway(last_good: int, status: int = 0) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_good & 0x7FFFFFFF, status))


def encode_window_update(stream_id: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF))


class Parser:
    """Incremental frame parser for one direction of a session.

    Invariant: `_buf` holds at most one incomplete frame's bytes after `feed` returns; header
    blocks are inflated in arrival order through the single `HeaderDecompressor`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers = HeaderDecompressor()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            (word0, word1) = struct.unpack_from(">II", self._buf, 0)
            length = word1 & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            flags = word1 >> 24
            payload = bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            if word0 & 0x80000000:
                version = (word0 >> 16) & 0x7FFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version}")
                frames.append(self._control(word0 & 0xFFFF, flags, payload))
            else:
                frames.append(DataFrame(word0 & 0x7FFFFFFF, flags, payload))
        return frames

    def _control(self, ftype: int, flags: int, p: bytes) -> ControlFrame:
        try:
            if ftype == SYN_STREAM:
                sid, assoc = struct.unpack_from(">II", p, 0)
                headers = self._headers.decompress(p[10:])
                return ControlFrame(ftype, flags, sid & 0x7FFFFFFF, headers, associated_id=assoc & 0x7FFFFFFF)
            if ftype in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", p, 0)
                return ControlFrame(ftype, flags, sid & 0x7FFFFFFF, self._headers.decompress(p[4:]))
            if ftype in (RST_STREAM, WINDOW_UPDATE):
                sid, value = struct.unpack_from(">II", p, 0)
                return ControlFrame(ftype, flags, sid & 0x7FFFFFFF, value=value & 0x7FFFFFFF)
            if ftype == PING:
                (pid,) = struct.unpack_from(">I", p, 0)
                return ControlFrame(ftype, flags, value=pid)
            if ftype == GOAWAY:
                last, status = struct.unpack_from(">II", p, 0)
                return ControlFrame(ftype, flags, last & 0x7FFFFFFF, value=status)
            # SETTINGS, CREDENTIAL and unknown types are passed up undecoded (and ignored).
            return ControlFrame(ftype, flags)
        except struct.error as e:
            raise SpdyError(f"short control frame of type {ftype}") from e
