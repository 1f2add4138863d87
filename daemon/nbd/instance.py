"""One daemon per user: the instance lock and the socket file.

The lock is an flock on `<state dir>/nbd.lock`, held for the daemon's whole life; the kernel drops
it when the process dies however it dies, so a lock that can be taken means no daemon runs. The
file holds the holder's pid and socket so a refused second start can name them. The lock file is
never deleted (deleting it would let two daemons lock two different files).

A socket file that is left behind (kill -9) is only removed when nothing answers on it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket as socketlib
import stat
from pathlib import Path

from nbd.errors import FailedPrecondition

__all__ = ["AlreadyRunning", "InstanceLock", "prepare_socket_path", "remove_socket"]


class AlreadyRunning(FailedPrecondition):
    default_reason = "AlreadyRunning"

    def __init__(self, pid: str, socket: str) -> None:
        super().__init__(
            f"nbd is already running (pid {pid or 'unknown'}, socket {socket or 'unknown'}); "
            "stop it with `nbctl daemon stop`"
        )
        self.pid = pid
        self.socket = socket


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, socket: Path) -> None:
        """Takes the lock and records our pid and socket; AlreadyRunning when another holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            content = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
            os.close(fd)
            pid = content[0].strip() if content else ""
            sock = content[1].strip() if len(content) > 1 else ""
            raise AlreadyRunning(pid, sock) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{socket}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _answers(path: Path) -> bool:
    s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def prepare_socket_path(path: Path, *, own_dir: bool) -> None:
    """Makes the socket's folder (0700) and clears a stale socket file.

    `own_dir` says the folder is the daemon's own (the default location, or one it creates): only
    then are its permissions forced to 0700, so a `--socket /tmp/x.sock` never chmods /tmp.
    """
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
        own_dir = True
    if own_dir:
        os.chmod(parent, 0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or choose another socket with NBD_SOCKET")
    if st.st_uid != os.getuid():
        raise FailedPrecondition(
            f"the socket {path} belongs to another user (uid {st.st_uid}); choose another socket with NBD_SOCKET"
        )
    if _answers(path):
        raise FailedPrecondition(
            f"another process is already serving on {path} (an nbd daemon with another state dir?); "
            "stop it or choose another socket with NBD_SOCKET"
        )
    # Nobody answers: the socket was left by a daemon that died without cleaning up.
    path.unlink()


def remove_socket(path: Path, inode: int | None) -> None:
    """Removes the socket file if it is still the one we bound (same inode)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if inode is None or st.st_ino == inode:
        path.unlink(missing_ok=True)
