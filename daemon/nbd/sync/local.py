"""The local side of a sync: the user's directory, watched with watchdog.

File-system work reuses the agent's `Tree` (`nbd.sync.agent.tree`, so both sides scan, ignore,
validate and write with the same code) and runs in worker threads; the event loop only coordinates. watchdog's observer
is given an explicit `event_filter` without open/close-nowrite events: with the default mask a
tree of a few thousand directories overflows the inotify queue forever and no event is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from nbd.sync.agent.paths import TEMP_PREFIX, Refused, failure_message
from nbd.sync.agent.tree import Tree
from nbd.sync.endpoint import (
    ChangeCallback,
    PutItem,
    ScanResult,
    SyncRefused,
    entry_from_wire,
    expected_wire,
    scan_from_wire,
)
from nbd.sync.snapshot import Entry

__all__ = ["LocalEndpoint"]

READ_AHEAD = 8

# Created, modified, deleted, moved and closed-after-write, plus attribute changes (the executable
# bit); never opened or closed-without-write, whose flood is what overflows inotify.
EVENT_FILTER = [
    FileAttribEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    DirModifiedEvent,
]


def _refusal(e: BaseException, path: str) -> SyncRefused:
    if isinstance(e, (Refused, OSError)):
        return SyncRefused(failure_message(e, path))
    return SyncRefused(f"{path}: {e!r}")


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into relative paths for the session.

    A regular file created or modified but not yet closed after writing is held back until it
    is closed (a save in progress), or until `hold` seconds passed (a file kept open).
    """

    def __init__(self, endpoint: LocalEndpoint, hold: float = 2.0) -> None:
        self.endpoint = endpoint
        self.hold = hold
        self.lock = threading.Lock()
        self.held: dict[str, float] = {}

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(dest)
        rels = []
        for p in paths:
            rel = self.endpoint.relative(p if isinstance(p, str) else os.fsdecode(p))
            if rel is None:
                continue
            if isinstance(event, DirModifiedEvent) and not dest:
                continue  # a directory's mtime changes with its children, which report themselves
            rels.append(rel)
        if not rels:
            return
        if isinstance(event, (FileCreatedEvent, FileModifiedEvent)) and not event.is_directory:
            full = event.src_path if isinstance(event.src_path, str) else os.fsdecode(event.src_path)
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(full).st_mode):
                    with self.lock:
                        fresh = rels[0] not in self.held
                        self.held.setdefault(rels[0], time.monotonic())
                    if fresh:
                        self.endpoint.later(self.hold, self.expire)
                    return
        with self.lock:
            for rel in rels:
                self.held.pop(rel, None)
        self.endpoint.notify(rels)

    def expire(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [rel for rel, t0 in self.held.items() if now - t0 >= self.hold - 0.01]
            for rel in due:
                del self.held[rel]
            again = bool(self.held)
        if due:
            self.endpoint.notify(due)
        if again:
            self.endpoint.later(self.hold / 4, self.expire)


class LocalEndpoint:
    """The local directory as an `Endpoint`."""

    name = "local"

    def __init__(self, root: str, *, max_file_size: int = 0, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.tree = Tree(self.root, max_file_size)
        self.fsync = fsync
        self._observer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_change: ChangeCallback | None = None
        self._handles = 0

    def relative(self, path: str) -> str | None:
        """The relative path of a watched absolute path, or None when it is not synchronised."""
        if path == self.root or not path.startswith(self.root + os.sep):
            return None
        rel = path[len(self.root) + 1 :].replace(os.sep, "/")
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(TEMP_PREFIX):
            return None
        if self.tree.rules.ignored_path(rel, False) and self.tree.rules.ignored_path(rel, True):
            return None
        return rel

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.call_later, delay, fn)

    def notify(self, rels: list[str]) -> None:
        loop, cb = self._loop, self._on_change
        if loop is not None and cb is not None and not loop.is_closed():
            loop.call_soon_threadsafe(cb, rels)

    async def start(self, on_change: ChangeCallback) -> None:
        if not os.path.isdir(self.root):
            raise SyncRefused(
                f"the local directory {self.root} does not exist; create it or launch from another one"
            )
        await asyncio.to_thread(self.tree.clean_temp_files)
        self._loop = asyncio.get_running_loop()
        self._on_change = on_change
        observer = Observer()
        observer.schedule(_Handler(self), self.root, recursive=True, event_filter=EVENT_FILTER)
        await asyncio.to_thread(observer.start)
        self._observer = observer

    async def close(self) -> None:
        observer, self._observer = self._observer, None
        self._on_change = None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, 5)

    async def scan(self, paths: list[str] | None = None) -> ScanResult:
        res = await asyncio.to_thread(self.tree.scan, paths)
        return scan_from_wire(res, time.time())

    async def read(self, path: str, digest: str) -> AsyncIterator[bytes]:
        """Chunks read (and hashed) ahead by a worker thread, so disk and transport overlap."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        room = threading.Semaphore(READ_AHEAD)
        stop = threading.Event()

        def produce() -> None:
            try:
                # The writer verifies the content against the digest: no second hash here.
                for chunk in self.tree.read_chunks(path, ""):
                    room.acquire()
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as e:  # handed to the consumer
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, e)

        worker = threading.Thread(target=produce, name=f"read {path}", daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, (Refused, OSError)):
                        raise _refusal(item, path) from item
                    raise item
                room.release()
                yield item
        finally:
            stop.set()
            room.release()

    def _read_all(self, files: list[tuple[str, str]]) -> list[bytes | str]:
        out: list[bytes | str] = []
        for path, _digest in files:
            try:
                out.append(b"".join(self.tree.read_chunks(path, "")))
            except (Refused, OSError) as e:
                out.append(str(_refusal(e, path)))
        return out

    async def read_many(self, files: list[tuple[str, str]]) -> list[bytes | str]:
        return await asyncio.to_thread(self._read_all, files)

    def _handle(self) -> int:
        self._handles += 1
        return self._handles

    async def write(
        self, path: str, expected: Entry | None, new: Entry, chunks: AsyncIterator[bytes]
    ) -> Entry:
        handle = self._handle()
        try:
            await asyncio.to_thread(
                self.tree.write_begin, handle, path, expected_wire(expected), new.executable, new.digest
            )
        except (Refused, OSError) as e:
            raise _refusal(e, path) from e
        try:
            async for chunk in chunks:
                await asyncio.to_thread(self.tree.write_chunk, handle, chunk)
            w = await asyncio.to_thread(self.tree.write_end, handle, self.fsync)
        except BaseException as e:
            await asyncio.to_thread(self.tree.write_abort, handle)
            if isinstance(e, (Refused, OSError)):
                raise _refusal(e, path) from e
            raise
        return entry_from_wire(w)[1]

    def _put_all(self, items: list[PutItem], base: int) -> list[Entry | str]:
        batch = [
            (
                base + i,
                item.path,
                expected_wire(item.expected),
                item.new.executable,
                item.new.digest,
                item.data,
            )
            for i, item in enumerate(items)
        ]
        out: list[Entry | str] = []
        for item, r in zip(items, self.tree.put_many(batch, self.fsync)):
            out.append(str(_refusal(Refused(r), item.path)) if isinstance(r, str) else entry_from_wire(r)[1])
        return out

    def _stage_all(self, items: list[PutItem], base: int) -> list[int | str]:
        batch = [
            (
                base + i,
                item.path,
                expected_wire(item.expected),
                item.new.executable,
                item.new.digest,
                item.data,
            )
            for i, item in enumerate(items)
        ]
        out: list[int | str] = []
        for item, r in zip(items, self.tree.stage_many(batch)):
            out.append(str(_refusal(Refused(r), item.path)) if isinstance(r, str) else int(r))
        return out

    async def stage_many(self, items: list[PutItem]) -> list[int | str]:
        base = self._handles + 1
        self._handles += len(items)
        return await asyncio.to_thread(self._stage_all, items, base)

    def _commit_all(self, handles: list[int]) -> list[Entry | str]:
        return [
            r if isinstance(r, str) else entry_from_wire(r)[1]
            for r in self.tree.commit_many(handles, self.fsync)
        ]

    async def commit_many(self, handles: list[int]) -> list[Entry | str]:
        return await asyncio.to_thread(self._commit_all, handles)

    async def put_many(self, items: list[PutItem]) -> list[Entry | str]:
        base = self._handles + 1
        self._handles += len(items)
        return await asyncio.to_thread(self._put_all, items, base)

    def _run_ops(self, ops: list[dict[str, Any]]) -> list[Entry | None | str]:
        out: list[Entry | None | str] = []
        for op in ops:
            try:
                w = self.tree.run_op(op)
                out.append(None if w is None else entry_from_wire(w)[1])
            except (Refused, OSError) as e:
                out.append(str(_refusal(e, str(op.get("path", "")))))
        return out

    async def ops(self, ops: list[dict[str, Any]]) -> list[Entry | None | str]:
        return await asyncio.to_thread(self._run_ops, ops)
