"""The local plumbing the daemon and its clients share: the lock file's format, the lock, the probe.

Socket discovery (`nbdlocal.paths`) has its table in tests/client/test_paths.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from nbdlocal.lock import Holder, InstanceLock, LockHeld, read_holder
from nbdlocal.probe import accepts


@pytest.mark.parametrize(
    ("data", "holder"),
    [
        (b"123\n/run/user/1/nbd/nbd.sock\n", Holder("123", "/run/user/1/nbd/nbd.sock")),
        (b"123\n", Holder("123", "")),
        (b"", Holder("", "")),
        (b"  7 \n /s.sock \nmore\n", Holder("7", "/s.sock")),
        (b"\xff\n/s\n", Holder("\ufffd", "/s")),
    ],
)
def test_lock_file_format(data: bytes, holder: Holder) -> None:
    assert Holder.decode(data) == holder
    assert Holder.decode(holder.encode()) == holder


def test_a_held_lock_names_its_holder_and_frees_on_release(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nbd.lock"
    assert read_holder(path) is None
    first = InstanceLock(path)
    first.acquire(tmp_path / "a.sock")
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert read_holder(path) == Holder(str(os.getpid()), str(tmp_path / "a.sock"))

    # flock locks belong to open file descriptions: a second open in this process is refused too.
    second = InstanceLock(path)
    with pytest.raises(LockHeld) as held:
        second.acquire(tmp_path / "b.sock")
    assert held.value.holder == Holder(str(os.getpid()), str(tmp_path / "a.sock"))
    assert str(os.getpid()) in str(held.value) and "a.sock" in str(held.value)

    first.release()
    first.release()  # twice is harmless
    second.acquire(tmp_path / "b.sock")
    assert read_holder(path) == Holder(str(os.getpid()), str(tmp_path / "b.sock"))
    second.release()
    assert path.exists(), "the lock file is never deleted"


def test_probe_tells_a_listening_socket_from_a_dead_one(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    assert not accepts(path), "no file"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        assert accepts(path)
    finally:
        server.close()
    assert path.exists() and not accepts(path), "a socket file left behind by a dead listener"
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert not accepts(plain)
