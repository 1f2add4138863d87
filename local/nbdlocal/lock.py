"""One daemon per state dir: the instance lock, and the format of the file that names its holder.

The lock is an flock on `<state dir>/nbd.lock`, held for the daemon's whole life; the kernel drops
it when the process dies however it dies, so a lock that can be taken means no daemon runs. The
file holds the holder's pid and socket, one per line, so a refused second start (and anything else
looking for the daemon) can name them. The lock file is never deleted: deleting it would let two
daemons lock two different files.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["Holder", "InstanceLock", "LockHeld", "read_holder"]

# More than a pid and a socket path (at most 107 bytes) ever take.
_MAX_RECORD = 4096


class Holder(NamedTuple):
    """Who holds the lock, as its file says. Either field is "" when the file does not say."""

    pid: str
    socket: str

    def encode(self) -> bytes:
        return f"{self.pid}\n{self.socket}\n".encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder:
        lines = data.decode(errors="replace").splitlines()
        pid = lines[0].strip() if lines else ""
        socket = lines[1].strip() if len(lines) > 1 else ""
        return cls(pid, socket)


class LockHeld(Exception):
    """Another process holds the lock."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(
            f"the lock is held by pid {holder.pid or 'unknown'} (socket {holder.socket or 'unknown'})"
        )
        self.holder = holder


class InstanceLock:
    """The lock on one lock file; `acquire` once, `release` at exit (or let the process end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, socket: Path) -> None:
        """Takes the lock and records our pid and `socket`; LockHeld names the holder otherwise."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = Holder.decode(os.pread(fd, _MAX_RECORD, 0))
            os.close(fd)
            raise LockHeld(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder(str(os.getpid()), str(socket)).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_holder(path: Path) -> Holder | None:
    """What the lock file says of its last holder (who may have exited since); None without a file."""
    try:
        with open(path, "rb") as f:
            return Holder.decode(f.read(_MAX_RECORD))
    except FileNotFoundError:
        return None
