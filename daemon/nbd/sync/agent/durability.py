"""How received bytes land on disk: through a temp file beside the target, made durable, then renamed.

Invariant: after a crash a synchronised name holds either its old or its new complete content,
never a mix. So a file is written to a temp file `.nbd-tmp-PID-HANDLE-NAME` in the target's own
directory (same file system: the rename is atomic), hashed as it is written, given its mode,
fsynced (or, for a batch, all of them made durable by one `syncfs`), and only then renamed over
the target (`Tree.write_commit`, which checks the target first). Temp files are never synced
(`TEMP_PREFIX`) and a stale one is removed at the next start.

Python 3.8 syntax, stdlib only (it runs in the pod, see the package docstring).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, List, Optional

from .paths import TEMP_PREFIX

WRITEBACK_STEP = 8 << 20


def temp_path(full: str, handle: int) -> str:
    """The temp name beside `full` for the write with this handle."""
    d, name = os.path.split(full)
    return os.path.join(d, "%s%d-%d-%s" % (TEMP_PREFIX, os.getpid(), handle, name[:80]))


def file_mode(executable: bool, old_mode: Optional[int], umask: int) -> int:
    """The mode of a written file: the old file's (or the umask's default), with the executable
    bits set (where readable) or cleared."""
    base = (old_mode & 0o7777) if old_mode is not None else (0o666 & ~umask)
    if executable:
        return base | ((base & 0o444) >> 2) | 0o100
    return base & ~0o111


class Incoming(object):
    """One file being received: an exclusive temp file beside its target (never through a
    link), hashed as it is written. `rel`, `expected`, `executable` and `digest` are what the
    daemon asked for; `Tree` checks them before sealing and before the rename."""

    __slots__ = ("fd", "tmp", "rel", "expected", "executable", "digest", "hash", "size")

    def __init__(
        self, tmp: str, rel: str, expected: Optional[List[Any]], executable: bool, digest: str
    ) -> None:
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self.tmp = tmp
        self.rel = rel
        self.expected = expected
        self.executable = executable
        self.digest = digest
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.hash.update(data)
        before = self.size
        self.size += len(data)
        if self.size // WRITEBACK_STEP != before // WRITEBACK_STEP:
            write_back(self.fd, (before // WRITEBACK_STEP) * WRITEBACK_STEP, self.size)

    def seal(self, mode: int, fsync: bool) -> None:
        """Set the mode, optionally fsync, and close: the content is complete."""
        os.fchmod(self.fd, mode)
        if fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def discard(self) -> None:
        """Close (if still open) and remove the temp file; errors are ignored."""
        if self.fd != -1:
            try:
                os.close(self.fd)
            except OSError:
                pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def syncfs(path: str) -> None:
    """Flush the file system holding `path` (Linux syncfs), else everything (sync)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


_SYNC_FILE_RANGE: List[Any] = []


def sync_file_range() -> Any:
    """libc's sync_file_range (Linux), or None."""
    if not _SYNC_FILE_RANGE:
        fn = None
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _SYNC_FILE_RANGE.append(fn)
    return _SYNC_FILE_RANGE[0]


def write_back(fd: int, start: int, end: int) -> None:
    """A large file being received: start writing [start, end) to disk now, and wait until the
    step before it is on disk (then drop those clean pages: in a pod, page cache counts against
    the memory limit). At most two steps are ever dirty, so the fsync before the rename (which
    alone makes the content durable, and which a crash-safe write still needs: after a crash the
    name holds either the old or the new complete file) finds almost nothing left to flush, and
    disk writes overlap the network instead of following it. sync_file_range only schedules and
    waits for data pages; it is never relied on for durability."""
    sfr = sync_file_range()
    if sfr is not None:
        sfr(fd, start, end - start, 2)  # SYNC_FILE_RANGE_WRITE: start, don't wait
        prev = start - WRITEBACK_STEP
        if prev >= 0:
            sfr(fd, prev, WRITEBACK_STEP, 1 | 2 | 4)  # WAIT_BEFORE | WRITE | WAIT_AFTER
            if hasattr(os, "posix_fadvise"):
                try:
                    os.posix_fadvise(fd, prev, WRITEBACK_STEP, os.POSIX_FADV_DONTNEED)
                except OSError:
                    pass
    elif hasattr(os, "posix_fadvise"):  # starts the write-back of dirty pages, drops clean ones
        try:
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
