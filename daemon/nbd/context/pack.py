"""Writing the build context: a deterministic `tar.gz` and its MD5 in one streaming pass.

Why it is shaped like this: compression is the ceiling of packaging (one core of gzip -6 moves
≈ 37 MB/s), so the archive is cut into gzip members that are compressed in parallel by a thread
pool (ISA-L or zlib, and hashlib, release the GIL) and written in order, and data that does not
compress is framed as stored deflate blocks at copy speed instead of being compressed for nothing.

The member boundaries are a function of the walk's sizes only, never of timing: small members are
batched until a batch reaches `BATCH_BYTES`; a file larger than `BIG_FILE` ends the current batch
and is cut into `SEGMENT_BYTES` segments (its header travels with the first); whether a batch or a
big file is compressed is decided by compressing its first `PROBE_BYTES` at level 1 (a batch
compresses that probe as the start of its own stream, so nothing is compressed twice). The same
content thus always gives the same bytes and the same MD5; a file whose size no longer matches
the walk is an error, never a silent difference.

Threads: the caller's thread cuts the plan into batches (and reads big files, whose reads are few
and large); `workers` threads read the small files of a batch, build its headers and compress it
(so the many small-file syscalls run on every core); one writer thread writes members in order to
a temporary file in the spool directory, feeds the MD5 and reports progress. The file gets its
final name (`ctx-<md5>.tar.gz`) only when complete.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import queue
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from nbd.errors import Cancelled

from . import tarformat as tf
from .errors import ContextChanged, ContextError, UnreadableFile
from .walk import DIR, FILE, ContextPlan, Entry, sort_plan

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
STALE_PARTIAL_SECONDS = 3600

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_DIRS = 16
_IOV_MAX = 1024
_PROGRESS_INTERVAL = 0.1


class CancelFlag(Protocol):
    """Anything with `is_set()` (threading.Event, asyncio.Event): checked between files."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class PackProgress:
    """Packaging progress: files and content bytes written so far, of the totals of the walk."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int

    # The names of nbd.launch.events.Progress, so a progress event can be filled field by field.
    @property
    def done_files(self) -> int:
        return self.files_done

    @property
    def total_files(self) -> int:
        return self.files_total

    @property
    def done_bytes(self) -> int:
        return self.bytes_done

    @property
    def total_bytes(self) -> int:
        return self.bytes_total


@dataclass(frozen=True)
class Packaged:
    """A complete archive in the spool directory."""

    path: str
    md5_hex: str
    md5_b64: str
    size: int
    files: int


Pieces = list[bytes | memoryview]


def _compressible(probe: bytes | memoryview) -> bool:
    if not probe:
        return True
    c = tf.compressor(1)
    return len(c.compress(probe)) + len(c.flush()) < (1.0 - MIN_SAVING) * len(probe)


def _unreadable(path: str, e: OSError) -> UnreadableFile:
    return UnreadableFile(
        f"cannot read {path}: {e.strerror or e}; fix its permissions or add it to .dockerignore", path=path
    )


def _changed(path: str, how: str = "") -> ContextChanged:
    return ContextChanged(
        f"{path} changed while it was being packaged{how}; relaunch when it is stable, or add it to .dockerignore",
        path=path,
    )


def _read_exact(fd: int, size: int, path: str) -> bytes:
    """The whole content of a small file, which must still have the size the walk saw."""
    data = os.read(fd, size + 1)
    if len(data) < size:
        # A short read on a regular file means it shrank (or a signal interrupted the read).
        data += os.read(fd, size + 1 - len(data))
    if len(data) != size:
        raise _changed(path)
    return data


class _Opener:
    """Opens the files of one batch relative to descriptors of their directories.

    Resolving one name instead of the whole path again saves most of an open's cost; sorted
    entries revisit a parent soon, so a few recent directories stay open.
    """

    def __init__(self, root: str, open_file: Callable[[str], int] | None) -> None:
        self._root = root
        self.prefix = root.rstrip("/") + "/"
        self._open_file = open_file
        self._dirs: collections.OrderedDict[str, int] = collections.OrderedDict()

    def open(self, rel: str) -> int:
        if self._open_file is not None:
            return self._open_file(self.prefix + rel)
        parent, _, name = rel.rpartition("/")
        dir_fd = self._dirs.get(parent)
        if dir_fd is None:
            dir_fd = os.open(self.prefix + parent if parent else self._root, _DIR_FLAGS)
            self._dirs[parent] = dir_fd
            if len(self._dirs) > _OPEN_DIRS:
                os.close(self._dirs.popitem(last=False)[1])
        else:
            self._dirs.move_to_end(parent)
        return os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)

    def close(self) -> None:
        for dir_fd in self._dirs.values():
            os.close(dir_fd)
        self._dirs.clear()


# An item of a batch: an entry to turn into a member (header, and data for a small file), or
# bytes already made (the end-of-archive blocks).
_Item = Entry | bytes


def _batch_bytes(
    items: list[_Item], root: str, cancel: CancelFlag | None, open_file: Callable[[str], int] | None
) -> bytes:
    """The tar bytes of a batch: reads its small files (in a worker thread, off the producer)."""
    parts: list[bytes] = []
    append = parts.append
    header_blocks = tf.header_blocks
    fsencode = os.fsencode
    padding = tf.PADDING
    opener = _Opener(root, open_file)
    prefix = opener.prefix
    try:
        for item in items:
            if isinstance(item, bytes):
                append(item)
                continue
            kind = item.kind
            if kind == FILE:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("packaging was cancelled", reason="Cancelled")
                size = item.size
                try:
                    fd = opener.open(item.path)
                except OSError as e:
                    raise _unreadable(prefix + item.path, e) from e
                try:
                    data = _read_exact(fd, size, prefix + item.path)
                except OSError as e:
                    raise _unreadable(prefix + item.path, e) from e
                finally:
                    os.close(fd)
                append(
                    header_blocks(
                        fsencode(item.path), 0o755 if item.mode & 0o111 else 0o644, size, tf.REGULAR
                    )
                )
                append(data)
                append(padding[-size % 512])
            elif kind == DIR:
                append(header_blocks(fsencode(item.path) + b"/", 0o755, 0, tf.DIRECTORY))
            else:
                append(header_blocks(fsencode(item.path), 0o777, 0, tf.SYMLINK, fsencode(item.link)))
    finally:
        opener.close()
    return b"".join(parts)


def _encode_batch(
    items: list[_Item],
    root: str,
    level: int,
    cancel: CancelFlag | None,
    open_file: Callable[[str], int] | None,
) -> Pieces:
    """One member for a batch of small members: read, probed, then compressed or stored."""
    data = _batch_bytes(items, root, cancel, open_file)
    if level == 0:
        return tf.stored_member(data)
    view = memoryview(data)
    probe = view[:PROBE_BYTES]
    compressor = tf.compressor(level)
    # The probe is the start of the member's own stream (a sync flush), so nothing is compressed twice.
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


@dataclass(frozen=True)
class _Job:
    """A member being encoded, and the files and content bytes it completes."""

    future: Future[Pieces]
    files: int
    content_bytes: int


class _Writer(threading.Thread):
    """Writes members in submission order, hashes them and reports progress.

    After a failure it drains (and discards) the remaining jobs, so the producer never blocks.
    """

    def __init__(
        self,
        fd: int,
        jobs: queue.Queue[_Job | None],
        progress: Callable[[PackProgress], None] | None,
        files_total: int,
        bytes_total: int,
    ) -> None:
        super().__init__(name="nbd-context-writer", daemon=True)
        self._fd = fd
        self._jobs = jobs
        self._progress = progress
        self._files_total = files_total
        self._bytes_total = bytes_total
        self.files_done = 0
        self.bytes_done = 0
        self.md5 = hashlib.md5()
        self.size = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        # Hashing and writing overlap: this thread feeds the MD5 while a second one writes the
        # previous member to disk (both release the GIL on large buffers).
        disk: queue.Queue[Pieces | None] = queue.Queue(maxsize=4)
        disk_error: list[BaseException] = []

        def write_out() -> None:
            while (pieces := disk.get()) is not None:
                if disk_error:
                    continue
                try:
                    self.size += _writev_all(self._fd, pieces)
                except BaseException as e:
                    disk_error.append(e)

        disk_thread = threading.Thread(target=write_out, name="nbd-context-disk", daemon=True)
        disk_thread.start()
        next_report = 0.0
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if self.error is None and disk_error:
                    self.error = disk_error[0]
                if self.error is not None:
                    job.future.cancel()
                    continue
                try:
                    pieces = job.future.result()
                    update = self.md5.update
                    for piece in pieces:
                        update(piece)
                    disk.put(pieces)
                    self.files_done += job.files
                    self.bytes_done += job.content_bytes
                    if self._progress is not None:
                        now = time.monotonic()
                        if now >= next_report:
                            next_report = now + _PROGRESS_INTERVAL
                            self._progress(
                                PackProgress(
                                    self.files_done, self._files_total, self.bytes_done, self._bytes_total
                                )
                            )
                except BaseException as e:  # reported to the producer, which stops
                    self.error = e
        finally:
            disk.put(None)
            disk_thread.join()
            if self.error is None and disk_error:
                self.error = disk_error[0]


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
        workers: Compression threads (default: the number of CPUs).
        progress: Called from the writer thread at most every 100 ms, and once at the end.
        cancel: Checked before every file and every segment.
        open_file: The I/O seam for opening a file (absolute path) for reading; tests inject
            failures here.

    Raises:
        UnreadableFile: a file cannot be opened or read.
        ContextChanged: a file's size changed since the walk.
        Cancelled: `cancel` was set.
    """
    sort_plan(plan)
    workers = workers or os.cpu_count() or 2
    jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=workers * 3)
    files_total = plan.files
    bytes_total = plan.total_bytes
    writer = _Writer(fd, jobs, progress, files_total, bytes_total)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbd-context-gzip")
    writer.start()
    root = plan.root
    prefix = root.rstrip("/") + "/"
    # Batch boundaries depend on the plan only (sizes from the walk), never on timing.
    items: list[_Item] = []
    items_bytes = 0
    items_files = 0
    items_content = 0

    def flush_batch() -> None:
        nonlocal items, items_bytes, items_files, items_content
        if items:
            jobs.put(
                _Job(
                    pool.submit(_encode_batch, items, root, level, cancel, open_file),
                    items_files,
                    items_content,
                )
            )
            items, items_bytes, items_files, items_content = [], 0, 0, 0

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("packaging was cancelled", reason="Cancelled")
        if writer.error is not None:
            raise writer.error

    try:
        for entry in plan.entries:
            if entry.kind == FILE and entry.size > BIG_FILE:
                check()
                flush_batch()
                _big_file(entry, prefix, level, check, jobs.put, pool.submit, open_file)
                continue
            items.append(entry)
            items_bytes += tf.BLOCK + entry.size + tf.padding(entry.size)
            if entry.kind == FILE:
                items_files += 1
                items_content += entry.size
            if items_bytes >= BATCH_BYTES:
                check()
                flush_batch()
        items.append(tf.END_OF_ARCHIVE)
        flush_batch()
    except BaseException:
        writer.error = writer.error or Cancelled("packaging stopped")
        raise
    finally:
        jobs.put(None)
        writer.join()
        pool.shutdown(wait=True, cancel_futures=True)
    error = writer.error
    if error is not None:
        if isinstance(error, (ContextError, Cancelled)):
            raise error
        if isinstance(error, OSError):
            raise ContextError(f"writing the build context failed: {error.strerror or error}") from error
        raise error
    if progress is not None:
        progress(PackProgress(writer.files_done, files_total, writer.bytes_done, bytes_total))
    return writer.md5.digest(), writer.size


def _big_file(
    entry: Entry,
    prefix: str,
    level: int,
    check: Callable[[], None],
    put: Callable[[_Job], None],
    submit: Callable[..., Future[Pieces]],
    open_file: Callable[[str], int] | None,
) -> None:
    """Queues a big file as members of SEGMENT_BYTES, in order; the header goes with the first."""
    path = prefix + entry.path
    size = entry.size
    try:
        fd_in = open_file(path) if open_file is not None else os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise _unreadable(path, e) from e
    try:
        header = tf.header_blocks(
            os.fsencode(entry.path), 0o755 if entry.mode & 0o111 else 0o644, size, tf.REGULAR
        )
        remaining = size
        compress: bool | None = None
        while remaining > 0:
            check()
            want = min(SEGMENT_BYTES, remaining)
            try:
                data = os.read(fd_in, want)
                if len(data) < want:
                    data = _read_rest(fd_in, data, want)
            except OSError as e:
                raise _unreadable(path, e) from e
            if len(data) < want:
                raise _changed(path, " (it shrank)")
            if compress is None:
                compress = level != 0 and _compressible(memoryview(data)[:PROBE_BYTES])
            remaining -= len(data)
            parts: list[bytes | memoryview] = [data]
            if header:
                parts.insert(0, header)
                header = b""
            if remaining == 0:
                pad = tf.padding(size)
                if pad:
                    parts.append(tf.PADDING[pad])
            put(_Job(submit(_encode_segment, parts, compress, level), 1 if remaining == 0 else 0, len(data)))
    finally:
        os.close(fd_in)


def _read_rest(fd_in: int, data: bytes, want: int) -> bytes:
    """Completes a short read; stops early only at end of file."""
    buf = bytearray(data)
    while len(buf) < want:
        chunk = os.read(fd_in, want - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _remove_stale_partials(spool: str) -> None:
    """Removes temporary archives left by a packaging that died (a crash, a kill) long ago.

    Recent ones may belong to a packaging running now in another thread, so they stay.
    """
    limit = time.time() - STALE_PARTIAL_SECONDS
    try:
        names = os.listdir(spool)
    except OSError:
        return
    for name in names:
        if name.startswith(".ctx-") and name.endswith(".partial"):
            path = os.path.join(spool, name)
            try:
                if os.stat(path).st_mtime < limit:
                    os.unlink(path)
            except OSError:
                pass


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
    _remove_stale_partials(spool)
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
