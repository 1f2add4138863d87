"""Byte formats of the build context, built by hand for speed: GNU tar headers and gzip members.

Why not `tarfile`/`gzip`: `tarfile` costs about 70 µs per member (PAX records, name lookups,
copies), which is most of the packaging time of a tree of small files; and `gzip.GzipFile` writes
the current time and the file name into its header. Everything here is pure (bytes in, bytes out)
and deterministic: the same entries always give the same bytes, on any machine.

Invariants:
- every header is one 512-byte block in GNU format (magic "ustar  "); uid/gid 0, empty user and
  group names, mtime 0; a name or link target longer than 100 bytes is carried by a preceding GNU
  `././@LongLink` entry (type L or K), which GNU tar, Python's tarfile, BuildKit and kaniko read;
- sizes of 8 GiB and more use GNU's base-256 numeric encoding;
- a gzip member has a fixed 10-byte header (no name, mtime 0, XFL 0, OS 255 "unknown"), so two
  machines packaging the same content produce the same bytes. Members concatenate into one valid
  `.tar.gz` (RFC 1952 §2.2);
- stored members (deflate block type 0) are built here, not by a library, so incompressible data
  is framed at copy speed and their bytes never depend on a library version. Compressed members
  come from ISA-L's deflate (`isal`, ≈ 3–5× faster than zlib at level 1 with a slightly better
  ratio) when it is installed, else from zlib; `COMPRESSOR` names the one in use and its version,
  and is part of the manifest digest, because identical input gives identical bytes only with the
  same compressor and version.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from types import ModuleType
from typing import Final, Literal


def _deflate_library() -> tuple[ModuleType, str, int]:
    """The deflate implementation, its name+version, and its highest level."""
    try:
        import isal
        from isal import isal_zlib
    except ImportError:
        return zlib, f"zlib-{zlib.ZLIB_RUNTIME_VERSION}", 9
    return isal_zlib, f"isal-{isal.__version__}", 3


DEFLATE, COMPRESSOR, MAX_LEVEL = _deflate_library()

__all__ = [
    "BLOCK",
    "COMPRESSOR",
    "DEFLATE",
    "MAX_LEVEL",
    "END_OF_ARCHIVE",
    "GZIP_HEADER",
    "PADDING",
    "TypeFlag",
    "deflate_member",
    "gzip_trailer",
    "header_blocks",
    "normalised_mode",
    "padding",
    "stored_member",
]

BLOCK: Final = 512
END_OF_ARCHIVE: Final = bytes(2 * BLOCK)
# PADDING[n] is n zero bytes; a member's data is followed by PADDING[padding(size)].
PADDING: Final = tuple(bytes(n) for n in range(BLOCK))

TypeFlag = Literal[b"0", b"2", b"5"]
REGULAR: Final = b"0"
SYMLINK: Final = b"2"
DIRECTORY: Final = b"5"

GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_MAX_STORED: Final = 65535

_NAME_LEN: Final = 100
_OCTAL_SIZE_LIMIT: Final = 8**11
_LONGLINK_NAME: Final = b"././@LongLink"


def padding(size: int) -> int:
    """Bytes of zeros after `size` bytes of member data, up to the next block boundary."""
    return -size % BLOCK


def normalised_mode(st_mode: int, type_flag: bytes) -> int:
    """0755 for directories and executables, 0777 for symlinks, 0644 for everything else."""
    if type_flag == DIRECTORY:
        return 0o755
    if type_flag == SYMLINK:
        return 0o777
    return 0o755 if st_mode & 0o111 else 0o644


def _fixed_fields() -> tuple[bytes, bytes, bytes, int]:
    """The constant parts of a header and the checksum they contribute (chksum counted as spaces)."""
    uid_gid = b"0000000\x00" * 2  # offsets 108..124
    mtime_chk = b"00000000000\x00" + b" " * 8  # offsets 136..156 (chksum as spaces)
    tail = (
        b"ustar  \x00"  # magic + version, GNU (257..265)
        + bytes(32)  # uname
        + bytes(32)  # gname
        + bytes(8)  # devmajor
        + bytes(8)  # devminor
        + bytes(167)  # GNU extension area + padding to 512
    )
    assert len(tail) == BLOCK - 257
    return uid_gid, b"00000000000\x00", tail, sum(uid_gid) + sum(mtime_chk) + sum(tail)


_UID_GID, _MTIME, _TAIL, _FIXED_SUM = _fixed_fields()
_MODE_FIELDS: Final = {m: b"%07o\x00" % m for m in (0o644, 0o755, 0o777)}
_MODE_SUMS: Final = {m: sum(f) for m, f in _MODE_FIELDS.items()}
_ZERO_SIZE: Final = b"00000000000\x00"


def _size_field(size: int) -> bytes:
    if size < 0:
        raise ValueError(f"negative size {size}")
    if size < _OCTAL_SIZE_LIMIT:
        return b"%011o\x00" % size
    # GNU base-256: a leading 0x80 byte, then the value big-endian in the remaining 11 bytes.
    return b"\x80" + size.to_bytes(11, "big")


def _block(name: bytes, mode: int, size: int, type_flag: bytes, link: bytes) -> bytes:
    """One header block; `name` and `link` are at most 100 bytes."""
    mode_field = _MODE_FIELDS.get(mode) or b"%07o\x00" % mode
    size_field = _ZERO_SIZE if size == 0 else _size_field(size)
    checksum = _FIXED_SUM + sum(name) + sum(mode_field) + sum(size_field) + type_flag[0] + sum(link)
    return b"".join(
        (
            name,
            PADDING[_NAME_LEN - len(name)],
            mode_field,
            _UID_GID,
            size_field,
            _MTIME,
            b"%06o\x00 " % checksum,
            type_flag,
            link,
            PADDING[_NAME_LEN - len(link)],
            _TAIL,
        )
    )


def _long_entry(kind: bytes, value: bytes) -> bytes:
    """A GNU `././@LongLink` entry carrying `value` (a long name for kind L, a long target for K)."""
    data = value + b"\x00"
    return _block(_LONGLINK_NAME, 0o644, len(data), kind, b"") + data + PADDING[padding(len(data))]


def header_blocks(name: bytes, mode: int, size: int, type_flag: bytes, link: bytes = b"") -> bytes:
    """The header of one member: one block, preceded by GNU long-name/long-link entries if needed.

    Args:
        name: The member path as bytes; directories end with b"/".
        mode: Permission bits (already normalised).
        size: Data bytes that follow (0 for directories and symlinks).
        type_flag: REGULAR, SYMLINK or DIRECTORY.
        link: The symlink target.
    """
    prefix = b""
    if len(link) > _NAME_LEN:
        prefix += _long_entry(b"K", link)
        link = link[:_NAME_LEN]
    if len(name) > _NAME_LEN:
        prefix = _long_entry(b"L", name) + prefix
        name = name[:_NAME_LEN]
    if b"\x00" in name or b"\x00" in link:
        raise ValueError("NUL byte in a tar name")
    block = _block(name, mode, size, type_flag, link)
    return prefix + block if prefix else block


def gzip_trailer(crc: int, size: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def stored_member(data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
    """A gzip member holding `data` in stored deflate blocks, as pieces to write in order.

    The data itself is not copied: the pieces are memoryviews of it between 5-byte block headers.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    pieces: list[bytes | memoryview] = [GZIP_HEADER]
    if total == 0:
        pieces.append(b"\x01\x00\x00\xff\xff")
    pack = struct.Struct("<BHH").pack
    for start in range(0, total, _MAX_STORED):
        chunk = view[start : start + _MAX_STORED]
        final = 1 if start + _MAX_STORED >= total else 0
        n = len(chunk)
        pieces.append(pack(final, n, n ^ 0xFFFF))
        pieces.append(chunk)
    pieces.append(gzip_trailer(zlib.crc32(view), total))
    return pieces


def compressor(level: int) -> zlib._Compress:
    """A raw-deflate compressor at `level` (1 = fastest), clamped to the library's range."""
    obj: zlib._Compress = DEFLATE.compressobj(max(1, min(level, MAX_LEVEL)), zlib.DEFLATED, -15)
    return obj


def deflate_member(parts: Sequence[bytes | bytearray | memoryview], level: int) -> list[bytes]:
    """A gzip member of `parts` (concatenated) compressed at `level`, as pieces."""
    compressor_ = compressor(level)
    out: list[bytes] = [GZIP_HEADER]
    crc = 0
    total = 0
    for part in parts:
        out.append(compressor_.compress(part))
        crc = zlib.crc32(part, crc)
        total += len(part)
    out.append(compressor_.flush())
    out.append(gzip_trailer(crc, total))
    return out
