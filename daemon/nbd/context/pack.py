"""Writing the build context: a deterministic `tar.gz` and its MD5 in one streaming pass.

Why it is shaped like this: compression is the ceiling of packaging (one core of gzip -6 moves
≈ 37 MB/s), so the archive is cut into gzip members that are compressed in parallel by a thread
pool (ISA-L or zlib, and hashlib, release the GIL) and written in order, and data that does not compress is
framed as stored deflate blocks at copy speed instead of being compressed for nothing.

The member boundaries are a function of the content only, never of timing: small members are
batched until a batch reaches `BATCH_BYTES`; a file larger than `BIG_FILE` ends the current batch
with its header and is cut into `SEGMENT_BYTES` segments; whether a batch or a big file is
compressed is decided by compressing its first `PROBE_BYTES` at level 1 (a batch compresses
that probe as the start of its own stream, so nothing is compressed twice). The same content thus
always gives the same bytes and the same MD5.

Threads: the caller's thread reads files and builds headers; `workers` threads compress; one
writer thread writes members in order to a temporary file in the spool directory and feeds the
MD5. The file gets its final name (`ctx-<md5>.tar.gz`) only when complete.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import queue
import threading
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from nbd.errors import Cancelled

from . import tarformat as tf
from .errors import ContextChanged, ContextError, UnreadableFile
from .walk import DIR, FILE, SYMLINK, ContextPlan

__all__ = [
    "BATCH_BYTES",
    "BIG_FILE",
    "CancelFlag",
    "PackProgress",
    "Packaged",
    "package",
    "write_archive",
]

BATCH_BYTES = 1 << 20
BIG_FILE = 1 << 20
SEGMENT_BYTES = 4 << 20
PROBE_BYTES = 64 << 10
# A probe that does not save at least this fraction means "store, don't compress".
MIN_SAVING = 0.10
DEFAULT_LEVEL = 1

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_DIRS = 16
_IOV_MAX = 1024


class CancelFlag(Protocol):
    """Anything with `is_set()` (threading.Event, asyncio.Event): checked between files."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class PackProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class Packaged:
    """A complete archive in the spool directory."""

    path: str
    md5_hex: str
    md5_b64: str
    size: int
    files: int


Pieces = list[bytes | memoryview]
_Job = Future[Pieces]


def _compressible(probe: bytes | memoryview) -> bool:
    if not probe:
        return True
    c = tf.compressor(1)
    return len(c.compress(probe)) + len(c.flush()) < (1.0 - MIN_SAVING) * len(probe)


def _encode_batch(parts: list[bytes], level: int) -> Pieces:
    """One member for a batch of small members: probed, then compressed or stored."""
    data = b"".join(parts)
    if level == 0:
        return tf.stored_member(data)
    view = memoryview(data)
    probe = view[:PROBE_BYTES]
    compressor = tf.compressor(level)
    head = compressor.compress(probe) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if len(probe) and len(head) >= (1.0 - MIN_SAVING) * len(probe):
        return tf.stored_member(data)
    rest = compressor.compress(view[PROBE_BYTES:]) + compressor.flush()
    return [tf.GZIP_HEADER, head, rest, tf.gzip_trailer(zlib.crc32(data), len(data))]


def _encode_segment(parts: list[bytes | memoryview], compress: bool, level: int) -> Pieces:
    """One member for a segment of a big file whose mode was decided by its probe."""
    if not compress:
        if len(parts) == 1:
            return tf.stored_member(parts[0])
        return tf.stored_member(b"".join(parts))
    return list(tf.deflate_member(parts, level))


def _writev_all(fd: int, pieces: Pieces) -> int:
    written_total = 0
    for start in range(0, len(pieces), _IOV_MAX):
        batch = [memoryview(p) for p in pieces[start : start + _IOV_MAX]]
        while batch:
            written = os.writev(fd, batch)
            written_total += written
            while batch and written >= len(batch[0]):
                written -= len(batch[0])
                batch.pop(0)
            if batch and written:
                batch[0] = batch[0][written:]
    return written_total


class _Writer(threading.Thread):
    """Writes members in submission order and hashes them; drains (and discards) after a failure."""

    def __init__(self, fd: int, jobs: "queue.Queue[_Job | None]") -> None:
        super().__init__(name="nbd-context-writer", daemon=True)
        self._fd = fd
        self._jobs = jobs
        self.md5 = hashlib.md5()
        self.size = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self.error is not None:
                job.cancel()
                continue
            try:
                pieces = job.result()
                update = self.md5.update
                for piece in pieces:
                    update(piece)
                self.size += _writev_all(self._fd, pieces)
            except BaseException as e:  # reported to the producer, which stops
                self.error = e


def _read_exact(fd: int, size: int, path: str) -> bytes:
    """The whole content of a small file, which must still have the size the walk saw."""
    data = os.read(fd, size + 1)
    if len(data) != size:
        if len(data) < size:
            # A short read on a regular file means it shrank (or a signal interrupted us).
            rest = os.read(fd, size + 1 - len(data))
            data += rest
        if len(data) != size:
            raise ContextChanged(
                f"{path} changed while it was being packaged; relaunch when it is stable, or add it to .dockerignore",
                path=path,
            )
    return data


def write_archive(
    plan: ContextPlan,
    fd: int,
    *,
    level: int = DEFAULT_LEVEL,
    workers: int | None = None,
    progress: Callable[[PackProgress], None] | None = None,
    cancel: CancelFlag | None = None,
    open_file: Callable[[str], int] | None = None,
) -> tuple[bytes, int]:
    """Writes the archive of `plan` to `fd`; returns (md5 digest, bytes written).

    Args:
        level: Deflate level for compressible data (1 fastest; 0 stores everything).
        workers: compression threads (default: the number of CPUs).
        progress: called from this thread at most every 64 files / 8 MiB and at the end.
        cancel: checked before every file and every segment.
        open_file: the I/O seam for opening a file for reading (tests inject failures here).

    Raises:
        UnreadableFile: a file cannot be opened or read.
        ContextChanged: a file's size changed since the walk.
        Cancelled: `cancel` was set.
    """
    root_dir = plan.root
    # Files are opened relative to a descriptor of their directory (one name to resolve, not the
    # whole path); a few recent directories stay open, as sorted entries revisit a parent soon.
    dir_fds: collections.OrderedDict[str, int] = collections.OrderedDict()

    def open_relative(rel: str) -> int:
        parent, _, name = rel.rpartition("/")
        dir_fd = dir_fds.get(parent)
        if dir_fd is None:
            dir_fd = os.open(root_prefix + parent if parent else root_dir, _DIR_FLAGS)
            dir_fds[parent] = dir_fd
            if len(dir_fds) > _OPEN_DIRS:
                os.close(dir_fds.popitem(last=False)[1])
        else:
            dir_fds.move_to_end(parent)
        return os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)

    workers = workers or os.cpu_count() or 2
    jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=workers * 3)
    writer = _Writer(fd, jobs)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbd-context-gzip")
    writer.start()
    root_prefix = plan.root.rstrip("/") + "/"
    files_total = plan.files
    bytes_total = plan.total_bytes
    files_done = 0
    bytes_done = 0
    next_report_files = 64
    next_report_bytes = 8 << 20
    batch: list[bytes] = []
    batch_size = 0
    submit = pool.submit
    put = jobs.put
    padding = tf.PADDING
    header_blocks = tf.header_blocks
    fsencode = os.fsencode

    def flush_batch() -> None:
        nonlocal batch, batch_size
        if batch:
            put(submit(_encode_batch, batch, level))
            batch = []
            batch_size = 0

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("packaging was cancelled", reason="Cancelled")
        if writer.error is not None:
            raise writer.error

    try:
        for entry in plan.entries:
            check()
            kind = entry.kind
            if kind == DIR:
                block = header_blocks(fsencode(entry.path) + b"/", 0o755, 0, tf.DIRECTORY)
                batch.append(block)
                batch_size += len(block)
            elif kind == SYMLINK:
                block = header_blocks(fsencode(entry.path), 0o777, 0, tf.SYMLINK, fsencode(entry.link))
                batch.append(block)
                batch_size += len(block)
            elif kind == FILE:
                path = root_prefix + entry.path
                size = entry.size
                mode = 0o755 if entry.mode & 0o111 else 0o644
                try:
                    fd_in = open_file(path) if open_file is not None else open_relative(entry.path)
                except OSError as e:
                    raise UnreadableFile(
                        f"cannot read {path}: {e.strerror or e}; fix its permissions or add it to .dockerignore",
                        path=path,
                    ) from e
                try:
                    if size <= BIG_FILE:
                        data = _read_exact(fd_in, size, path)
                        block = header_blocks(fsencode(entry.path), mode, size, tf.REGULAR)
                        pad = padding[-size % 512]
                        batch.append(block)
                        batch.append(data)
                        batch.append(pad)
                        batch_size += len(block) + size + len(pad)
                    else:
                        batch.append(header_blocks(fsencode(entry.path), mode, size, tf.REGULAR))
                        flush_batch()
                        _segments(fd_in, path, size, level, check, lambda job: put(job), submit)
                except OSError as e:
                    raise UnreadableFile(
                        f"cannot read {path}: {e.strerror or e}; fix its permissions or add it to .dockerignore",
                        path=path,
                    ) from e
                finally:
                    os.close(fd_in)
                files_done += 1
                bytes_done += size
            if batch_size >= BATCH_BYTES:
                flush_batch()
            if progress is not None and (files_done >= next_report_files or bytes_done >= next_report_bytes):
                next_report_files = files_done + 64
                next_report_bytes = bytes_done + (8 << 20)
                progress(PackProgress(files_done, files_total, bytes_done, bytes_total))
        batch.append(tf.END_OF_ARCHIVE)
        batch_size += len(tf.END_OF_ARCHIVE)
        flush_batch()
    except BaseException:
        writer.error = writer.error or Cancelled("packaging stopped")
        raise
    finally:
        for dir_fd in dir_fds.values():
            os.close(dir_fd)
        put(None)
        writer.join()
        pool.shutdown(wait=True, cancel_futures=True)
    check_error = writer.error
    if check_error is not None:
        if isinstance(check_error, ContextError):
            raise check_error
        raise ContextError(f"writing the build context failed: {check_error}") from check_error
    if progress is not None:
        progress(PackProgress(files_done, files_total, bytes_done, bytes_total))
    return writer.md5.digest(), writer.size


def _segments(
    fd_in: int,
    path: str,
    size: int,
    level: int,
    check: Callable[[], None],
    put: Callable[[_Job], None],
    submit: Callable[..., _Job],
) -> None:
    """Reads a big file in SEGMENT_BYTES pieces and queues one member per piece, in order."""
    remaining = size
    compress: bool | None = None
    while remaining > 0:
        check()
        want = min(SEGMENT_BYTES, remaining)
        data = os.read(fd_in, want)
        if len(data) < want:
            data = _read_rest(fd_in, data, want)
            if len(data) < want:
                raise ContextChanged(
                    f"{path} changed while it was being packaged (it shrank); relaunch when it is stable, "
                    "or add it to .dockerignore",
                    path=path,
                )
        if compress is None:
            compress = level != 0 and _compressible(memoryview(data)[:PROBE_BYTES])
        remaining -= len(data)
        parts: list[bytes | memoryview] = [data]
        if remaining == 0:
            pad = tf.padding(size)
            if pad:
                parts.append(tf.PADDING[pad])
        put(submit(_encode_segment, parts, compress, level))


def _read_rest(fd_in: int, data: bytes, want: int) -> bytes:
    """Completes a short read; stops early only at end of file."""
    buf = bytearray(data)
    while len(buf) < want:
        chunk = os.read(fd_in, want - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def package(
    plan: ContextPlan,
    spool_dir: str | os.PathLike[str],
    *,
    level: int = DEFAULT_LEVEL,
    workers: int | None = None,
    progress: Callable[[PackProgress], None] | None = None,
    cancel: CancelFlag | None = None,
    open_file: Callable[[str], int] | None = None,
) -> Packaged:
    """Writes the archive to `spool_dir/ctx-<md5>.tar.gz` via a temporary file and a rename.

    Nothing half-written ever carries the final name: on any error or cancellation the temporary
    file is removed. See `write_archive` for the arguments and errors.
    """
    spool = os.fspath(spool_dir)
    os.makedirs(spool, mode=0o700, exist_ok=True)
    tmp = os.path.join(spool, f".ctx-{uuid.uuid4().hex}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            digest, size = write_archive(
                plan, fd, level=level, workers=workers, progress=progress, cancel=cancel, open_file=open_file
            )
        finally:
            os.close(fd)
        md5_hex = digest.hex()
        final = os.path.join(spool, f"ctx-{md5_hex}.tar.gz")
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return Packaged(
        path=final,
        md5_hex=md5_hex,
        md5_b64=base64.b64encode(digest).decode("ascii"),
        size=size,
        files=plan.files,
    )
