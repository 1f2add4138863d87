"""The wire between the daemon and the agent: frames, and how file contents are packed into them.

Both ends import this module (the daemon's `nbd.sync.remote` and the agent's server), so a frame
is encoded, split, decoded and compressed by the same code on both sides.

A frame is `>II` (header length, body length), a UTF-8 JSON header, then the body bytes. A body of
64 KiB or more is written after its head as a separate buffer, so it is never copied into the
frame.

File contents travel in two forms:
- a stream of chunks (`read` replies, `write_chunk` requests), each compressed with zlib level 1
  while that pays (`ChunkPacker`: the first chunk that does not shrink by 10 % turns compression
  off for the rest of the stream, which is then already-compressed data);
- a batch of small files in one body (`pack_parts`): their concatenation, the header saying per
  file its compressed length, or -1 when sent as it is. Compression is decided per file, because a
  batch mixes text (zlib level 1 shrinks it at ~1 GB/s) with already-compressed data (level 1
  wastes ~20 ms per MB on it and saves nothing): a file is compressed only when a small probe of
  it shrinks by 10 %, and kept compressed only when the whole shrinks by 10 %.

Python 3.8 syntax, stdlib only (it runs in the pod, see the package docstring).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Dict, List, Tuple

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">II")
# A body at least this long is sent after its frame's head instead of inside one buffer.
SMALL_BODY = 65536
PROBE = 1024


def frame_head(header: Dict[str, Any], body_length: int) -> bytes:
    """The frame up to its body (to send a large body without copying it)."""
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(h), body_length) + h


def encode_frame(header: Dict[str, Any], body: bytes = b"") -> bytes:
    return frame_head(header, len(body)) + body


def frame_parts(header: Dict[str, Any], body: bytes = b"") -> List[bytes]:
    """The buffers to write for one frame, in order: one for a small body, head and body apart
    for a large one."""
    if len(body) < SMALL_BODY:
        return [encode_frame(header, body)]
    return [frame_head(header, len(body)), body]


class FrameDecoder(object):
    """Incremental decoder: feed bytes, get complete (header, body) frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> List[Tuple[Dict[str, Any], bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            hl, bl = HEADER.unpack_from(self.buf, 0)
            total = HEADER.size + hl + bl
            if len(self.buf) < total:
                break
            header = json.loads(bytes(self.buf[HEADER.size : HEADER.size + hl]).decode("utf-8"))
            body = bytes(self.buf[HEADER.size + hl : total])
            del self.buf[:total]
            out.append((header, body))
        return out


def _read_exact(stream: Any, n: int) -> bytes:
    data = stream.read(n)  # a buffered reader returns n bytes unless the stream ends
    if len(data) != n:
        raise EOFError
    return bytes(data)


def read_frame(stream: Any) -> Tuple[Dict[str, Any], bytes]:
    """One frame from a buffered binary stream (the agent's stdin)."""
    hl, bl = HEADER.unpack(_read_exact(stream, HEADER.size))
    header = json.loads(_read_exact(stream, hl).decode("utf-8"))
    body = _read_exact(stream, bl) if bl else b""
    return header, body


def pack_json(value: Any) -> bytes:
    """A JSON body compressed with zlib level 1 (a scan reply; its header says `"z": 1`)."""
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode("utf-8"), 1)


def unpack_json(body: bytes, z: Any) -> Any:
    return json.loads(zlib.decompress(body) if z else body)


# ----------------------------------------------------------------------------------------------
# Streams of chunks


class ChunkPacker(object):
    """Compresses the chunks of one stream while that pays (see the module docstring)."""

    def __init__(self, compress: bool = True) -> None:
        self.compress = compress

    def pack(self, chunk: bytes) -> Tuple[bytes, int]:
        """(wire bytes, z): z is 1 when the bytes are zlib-compressed."""
        if self.compress:
            packed = zlib.compress(chunk, 1)
            if len(packed) < len(chunk) * 0.9:
                return packed, 1
            self.compress = False
        return chunk, 0


def unpack_chunk(body: bytes, z: Any) -> bytes:
    return zlib.decompress(body) if z else body


# ----------------------------------------------------------------------------------------------
# Batched file contents


def pack_parts(parts: List[bytes]) -> Tuple[bytes, List[int]]:
    """(body, zl) for `parts`; see the module docstring."""
    out: List[bytes] = []
    zl: List[int] = []
    compress = zlib.compress
    for data in parts:
        n = len(data)
        if n < 64 or (n > 4 * PROBE and len(compress(data[:PROBE], 1)) > 0.9 * PROBE):
            out.append(data)
            zl.append(-1)
            continue
        packed = compress(data, 1)
        if len(packed) < 0.9 * n:
            out.append(packed)
            zl.append(len(packed))
        else:
            out.append(data)
            zl.append(-1)
    return b"".join(out), zl


def unpack_parts(body: bytes, sizes: List[int], zl: List[int]) -> List[Any]:
    """The parts of a packed body: bytes, or a str saying why that part is unusable (a part
    never inflates beyond its announced size, so a hostile peer cannot exhaust memory)."""
    out: List[Any] = []
    off = 0
    for size, z in zip(sizes, zl):
        size, z = int(size), int(z)
        if z < 0:
            out.append(body[off : off + size])
            off += size
            continue
        d = zlib.decompressobj()
        try:
            data = d.decompress(body[off : off + z], size + 1)
        except zlib.error as e:
            data = None
            out.append("corrupted compressed content: %s" % e)
        off += z
        if data is not None:
            out.append(data if len(data) == size and d.eof else "compressed content of the wrong size")
    return out


def split_parts(blob: bytes, sizes: List[int]) -> List[bytes]:
    """The parts of a plain concatenation (the batch form of a peer without per-file
    compression, whose whole body may be compressed at once instead)."""
    parts, off = [], 0
    for size in sizes:
        parts.append(blob[off : off + size])
        off += size
    return parts
