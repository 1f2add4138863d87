"""The hand-built tar headers and gzip members, read back by Python's tarfile/gzip and GNU tar."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from nbd.context import tarformat as tf


def archive(members: list[tuple[bytes, int, bytes, bytes, bytes]]) -> bytes:
    """members: (name, mode, type, link, data) → an uncompressed tar."""
    out = []
    for name, mode, typ, link, data in members:
        out.append(tf.header_blocks(name, mode, len(data), typ, link))
        out.append(data + tf.PADDING[tf.padding(len(data))])
    out.append(tf.END_OF_ARCHIVE)
    return b"".join(out)


MEMBERS = [
    (b"a.txt", 0o644, tf.REGULAR, b"", b"hello\n"),
    (b"bin/", 0o755, tf.DIRECTORY, b"", b""),
    (b"bin/run", 0o755, tf.REGULAR, b"", b"#!/bin/sh\n"),
    (b"empty", 0o644, tf.REGULAR, b"", b""),
    (b"d" * 99 + b"/", 0o755, tf.DIRECTORY, b"", b""),
    (("n" * 120 + "/ünï").encode(), 0o644, tf.REGULAR, b"", b"x" * 513),
    (b"link", 0o777, tf.SYMLINK, b"a.txt", b""),
    (b"longlink", 0o777, tf.SYMLINK, b"t" * 150, b""),
    (b"x" * 100, 0o644, tf.REGULAR, b"", b"exactly 100 bytes of name"),
]


def test_every_header_is_one_block_with_a_valid_checksum() -> None:
    block = tf.header_blocks(b"name", 0o644, 1234, tf.REGULAR)
    assert len(block) == 512
    expected = sum(block[:148]) + 8 * 32 + sum(block[156:])
    assert int(block[148:154], 8) == expected
    assert block[257:265] == b"ustar  \x00"


def test_python_tarfile_reads_back_every_member() -> None:
    data = archive(MEMBERS)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        got = [
            (m.name, m.mode, m.type, m.linkname, m.size, m.uid, m.gid, m.uname, m.gname, m.mtime) for m in t
        ]
        contents = {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]
    expected = [
        (n.decode().rstrip("/"), mode, typ, link.decode(), len(d), 0, 0, "", "", 0)
        for n, mode, typ, link, d in MEMBERS
    ]
    assert got == expected
    assert contents[("n" * 120 + "/ünï")] == b"x" * 513


def test_gnu_tar_lists_the_same_members(tmp_path: Path) -> None:
    path = tmp_path / "t.tar"
    path.write_bytes(archive(MEMBERS))
    listing = (
        subprocess.run(["tar", "tf", str(path)], check=True, capture_output=True).stdout.decode().splitlines()
    )
    assert listing == [n.decode() for n, *_ in MEMBERS]
    verbose = subprocess.run(["tar", "tvf", str(path)], check=True, capture_output=True).stdout.decode()
    assert "-rwxr-xr-x 0/0" in verbose and "link -> a.txt" in verbose and "t" * 150 in verbose


def test_huge_size_uses_base256() -> None:
    size = 9 * 1024**3
    block = tf.header_blocks(b"huge", 0o644, size, tf.REGULAR)
    assert block[124] == 0x80
    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    assert info.size == size


def test_nul_in_name_is_refused() -> None:
    with pytest.raises(ValueError):
        tf.header_blocks(b"a\x00b", 0o644, 0, tf.REGULAR)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_000])
def test_stored_member_is_valid_gzip(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    member = b"".join(bytes(p) for p in tf.stored_member(payload))
    assert gzip.decompress(member) == payload
    assert member[:10] == tf.GZIP_HEADER
    assert len(member) <= size + 18 + 5 * (size // 65535 + 1)


def test_members_concatenate_into_one_stream() -> None:
    a = b"".join(bytes(p) for p in tf.stored_member(b"first "))
    b = b"".join(tf.deflate_member([b"second ", b"part"], 6))
    assert gzip.decompress(a + b) == b"first second part"
    # zlib with automatic header detection reads members one by one too.
    d = zlib.decompressobj(31)
    assert d.decompress(a + b) == b"first " and d.unused_data == b


def test_gzip_header_is_fixed() -> None:
    member = b"".join(tf.deflate_member([b"abc"], 1))
    assert member[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def test_normalised_mode() -> None:
    assert tf.normalised_mode(0o100600, tf.REGULAR) == 0o644
    assert tf.normalised_mode(0o100700, tf.REGULAR) == 0o755
    assert tf.normalised_mode(0o100641, tf.REGULAR) == 0o755
    assert tf.normalised_mode(0o40700, tf.DIRECTORY) == 0o755
    assert tf.normalised_mode(0o120600, tf.SYMLINK) == 0o777
