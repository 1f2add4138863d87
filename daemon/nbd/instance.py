"""One daemon per user: the instance lock and the socket file.

The lock and the format of its file are the local plumbing's (`nbdlocal.lock`, shared with the
clients); here a held lock becomes the daemon's AlreadyRunning, which names the holder.

A socket file that is left behind (kill -9) is only removed when nothing answers on it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nbd.errors import FailedPrecondition
from nbdlocal import lock
from nbdlocal.probe import accepts

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


class InstanceLock(lock.InstanceLock):
    """The instance lock, refusing with AlreadyRunning."""

    def acquire(self, socket: Path) -> None:
        """Takes the lock and records our pid and socket; AlreadyRunning when another holds it."""
        try:
            super().acquire(socket)
        except lock.LockHeld as e:
            raise AlreadyRunning(e.holder.pid, e.holder.socket) from None


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
        raise FailedPrecondition(
            f"{path} exists and is not a socket; remove it or choose another socket with NBD_SOCKET"
        )
    if st.st_uid != os.getuid():
        raise FailedPrecondition(
            f"the socket {path} belongs to another user (uid {st.st_uid}); choose another socket with NBD_SOCKET"
        )
    if accepts(path):
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
