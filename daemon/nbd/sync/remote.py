"""The remote side of a sync: the agent, reached through a byte transport.

`RemoteEndpoint` starts the agent through an `AgentTransport` (an exec stream into the pod, or a
local process in tests and benchmarks), bootstraps it (`nbd.sync.shipping`: the agent's zipapp is
sent only when the pod has no cached copy of that exact build), then multiplexes requests over the
one stream, in the agent's own frames (`nbd.sync.agent.frames`):
requests are pipelined, replies are matched by id, `read` replies stream chunks, and the agent's
unsolicited `changed` frames go to the session's callback. Every path the agent reports is
validated here again (`nbd.sync.agent.paths`, the rule the agent enforces) before it reaches the
session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from nbd.errors import Unavailable
from nbd.status import Problem, utcnow
from nbd.sync.agent.frames import (
    ChunkPacker,
    FrameDecoder,
    frame_parts,
    pack_parts,
    split_parts,
    unpack_chunk,
    unpack_json,
    unpack_parts,
)
from nbd.sync.agent.paths import path_problem
from nbd.sync.endpoint import (
    ChangeCallback,
    PutItem,
    ScanResult,
    SyncRefused,
    entry_from_wire,
    expected_wire,
    scan_from_wire,
)
from nbd.sync.shipping import AgentApp, agent_app, agent_command, ship
from nbd.sync.snapshot import Entry

__all__ = [
    "AgentTransport",
    "TransportFactory",
    "LocalProcessTransport",
    "local_process_factory",
    "RemoteEndpoint",
    "AgentLost",
]


class AgentTransport(Protocol):
    """A bidirectional byte stream to the agent process (its stdin and stdout)."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """The next bytes from the agent's stdout; b"" at end of stream."""

    async def close(self) -> None: ...


# Given the agent's argv, start it and return its transport.
TransportFactory = Callable[[list[str]], Awaitable[AgentTransport]]


class AgentLost(Unavailable):
    """The stream to the agent ended (pod replaced, exec stream dropped, agent crashed)."""

    default_reason = "SyncAgentLost"


class LocalProcessTransport:
    """The agent as a local child process (tests, benchmarks, a local "remote")."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, argv: list[str]) -> LocalProcessTransport:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            limit=1 << 22,
        )
        return cls(proc)

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise AgentLost("the sync agent process ended") from e

    async def receive(self) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(1 << 20)

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        await self.proc.wait()


async def local_process_factory(argv: list[str]) -> AgentTransport:
    return await LocalProcessTransport.start(argv)


class _Reply:
    __slots__ = ("future", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, streaming: bool) -> None:
        self.future: asyncio.Future[tuple[dict[str, Any], bytes]] = loop.create_future()
        self.queue: asyncio.Queue[tuple[dict[str, Any], bytes]] | None = (
            asyncio.Queue() if streaming else None
        )


class RemoteEndpoint:
    """The pod's directory, served by the agent, as an `Endpoint`."""

    name = "remote"

    def __init__(
        self,
        factory: TransportFactory,
        root: str = "/content",
        *,
        max_file_size: int = 0,
        cache_dir: str = "/tmp",
        python: str = "python3",
        fsync: bool = True,
        connect_timeout: float = 60.0,
        ping_interval: float = 15.0,
        agent_idle_exit: float = 90.0,
    ) -> None:
        self.factory = factory
        self.root = root
        self.max_file_size = max_file_size
        self.cache_dir = cache_dir
        self.python = python
        self.fsync = fsync
        self.connect_timeout = connect_timeout
        # The agent exits after `agent_idle_exit` seconds without a frame from us (so an agent
        # whose daemon vanished never lingers in the pod); a ping every `ping_interval` keeps a
        # quiet session's agent alive. 0 turns both off.
        self.ping_interval = ping_interval
        self.agent_idle_exit = agent_idle_exit
        self._pinger: asyncio.Task[None] | None = None
        self.transport: AgentTransport | None = None
        self.hello: dict[str, Any] = {}
        self.watch_mode = ""
        self._ids = 0
        self._pending: dict[int, _Reply] = {}
        self._reader: asyncio.Task[None] | None = None
        self._on_change: ChangeCallback | None = None
        self._lost: BaseException | None = None
        self._send_lock = asyncio.Lock()

    # -- connection

    async def start(self, on_change: ChangeCallback) -> None:
        self._on_change = on_change
        app = agent_app()
        try:
            transport = await self.factory(agent_command(app, self.root, self.cache_dir, self.python))
        except OSError as e:
            raise AgentLost(f"could not start the sync agent ({self.python}): {e}") from e
        self.transport = transport
        try:
            rest = await asyncio.wait_for(self._bootstrap(transport, app), self.connect_timeout)
        except (TimeoutError, EOFError) as e:
            await transport.close()
            raise AgentLost(
                f"the sync agent did not start in the pod (is python3 in the image, and {self.root} a directory?)"
            ) from e
        decoder = FrameDecoder()
        frames = decoder.feed(rest)
        self._lost = None
        self._reader = asyncio.create_task(self._read_loop(transport, decoder, frames))
        reply = await self._hello
        self.hello = reply
        await self.request(
            {
                "op": "configure",
                "max_file_size": self.max_file_size,
                "clean": True,
                "idle_exit": self.agent_idle_exit if self.ping_interval > 0 else 0,
            }
        )
        res, _ = await self.request({"op": "watch"})
        self.watch_mode = str(res.get("mode", ""))
        if self.ping_interval > 0:
            self._pinger = asyncio.create_task(self._ping_loop())

    async def _ping_loop(self) -> None:
        """Keep the agent's orphan guard from firing while the session is quiet. Liveness of the
        stream itself is the transport's (WebSocket pings); a busy agent may answer late."""
        while self.connected:
            await asyncio.sleep(self.ping_interval)
            rid, reply = self._register()
            try:
                await self._send({"op": "ping", "id": rid})
            except (AgentLost, ConnectionError, OSError):
                self._pending.pop(rid, None)
                return
            reply.future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    async def _bootstrap(self, transport: AgentTransport, app: AgentApp) -> bytes:
        """Ship the agent; return the bytes after its READY line."""
        rest = await ship(app, transport.send, transport.receive)
        self._hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        return rest

    async def _read_loop(
        self, transport: AgentTransport, decoder: FrameDecoder, frames: list[tuple[dict[str, Any], bytes]]
    ) -> None:
        try:
            while True:
                for header, body in frames:
                    self._dispatch(header, body)
                data = await transport.receive()
                if not data:
                    break
                frames = decoder.feed(data)
            err: BaseException = AgentLost("the stream to the sync agent ended")
        except Exception as e:  # any transport failure ends this connection
            err = AgentLost(f"the stream to the sync agent failed: {e}")
            err.__cause__ = e
        self._lost = err
        if not self._hello.done():
            self._hello.set_exception(err)
        for reply in self._pending.values():
            if not reply.future.done():
                reply.future.set_exception(err)
            if reply.queue is not None:
                reply.queue.put_nowait(({"lost": True}, b""))
        self._pending.clear()
        if self._on_change is not None:
            self._on_change(None)

    def _dispatch(self, header: dict[str, Any], body: bytes) -> None:
        op = header.get("op")
        if op == "hello":
            if not self._hello.done():
                self._hello.set_result(header)
            return
        if op == "changed":
            if self._on_change is not None:
                if header.get("all"):
                    self._on_change(None)
                else:
                    paths = [p for p in header.get("paths", []) if path_problem(p) is None]
                    self._on_change(paths)
            return
        rid = header.get("id")
        reply = self._pending.get(rid) if isinstance(rid, int) else None
        if reply is None:
            return
        if header.get("chunk") and reply.queue is not None:
            reply.queue.put_nowait((header, body))
            return
        del self._pending[rid]  # type: ignore[arg-type]
        if reply.queue is not None:
            reply.queue.put_nowait((header, body))
        if not reply.future.done():
            reply.future.set_result((header, body))

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        self._on_change = None
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        if transport is not None:
            await transport.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None

    @property
    def connected(self) -> bool:
        return self.transport is not None and self._lost is None

    # -- requests

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def _send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if self._lost is not None or self.transport is None:
            raise AgentLost("not connected to the sync agent")
        async with self._send_lock:
            for data in frame_parts(header, body):  # a large body is not copied into the frame
                await self.transport.send(data)

    def _register(self, streaming: bool = False) -> tuple[int, _Reply]:
        rid = self._next_id()
        reply = _Reply(asyncio.get_running_loop(), streaming)
        self._pending[rid] = reply
        return rid, reply

    async def request(self, header: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """Send one request and return its reply; SyncRefused when the agent said no."""
        rid, reply = self._register()
        await self._send(dict(header, id=rid), body)
        h, b = await reply.future
        if not h.get("ok"):
            raise SyncRefused(str(h.get("error", "refused by the sync agent")))
        return h, b

    async def scan(self, paths: list[str] | None = None) -> ScanResult:
        h, body = await self.request({"op": "scan", "paths": paths})
        result = scan_from_wire(unpack_json(body, h.get("z")), time.time())
        # The agent is not trusted: drop any path that is not a normalised relative path.
        for path in list(result.entries):
            why = path_problem(path)
            if why is not None:
                del result.entries[path]
                result.problems.append(Problem(path[:200], f"refused a path from the pod: {why}", utcnow()))
        result.absent = [p for p in result.absent if path_problem(p) is None]
        result.rules = {k: v for k, v in result.rules.items() if path_problem(k) is None}
        result.large = {k: v for k, v in result.large.items() if path_problem(k) is None}
        return result

    async def read(self, path: str, digest: str) -> AsyncIterator[bytes]:
        # Content is verified once, by the writer (against the digest it was told to expect),
        # so neither the agent nor this reader hashes it again.
        rid, reply = self._register(streaming=True)
        assert reply.queue is not None
        await self._send({"op": "read", "id": rid, "path": path, "digest": ""})
        while True:
            header, body = await reply.queue.get()
            if header.get("lost"):
                raise AgentLost("the stream to the sync agent ended during a transfer")
            if header.get("chunk"):
                yield unpack_chunk(body, header.get("z"))
                continue
            if not header.get("ok"):
                raise SyncRefused(str(header.get("error", f"{path}: read refused")))
            return

    async def read_many(self, files: list[tuple[str, str]]) -> list[bytes | str]:
        h, body = await self.request({"op": "read_many", "files": [[path, ""] for path, _ in files], "zl": 1})
        sizes, errors = list(h["sizes"]), list(h["errors"])
        if h.get("zl") is not None:
            parts = await asyncio.to_thread(unpack_parts, body, sizes, list(h["zl"]))
        else:
            parts = split_parts(unpack_chunk(body, h.get("z")), sizes)
        out: list[bytes | str] = []
        for (path, _), part, error in zip(files, parts, errors):
            if error:
                out.append(str(error))
            elif isinstance(part, str):
                out.append(f"{path}: {part}")
            else:
                out.append(part)
        return out

    async def write(
        self, path: str, expected: Entry | None, new: Entry, chunks: AsyncIterator[bytes]
    ) -> Entry:
        handle = self._next_id()
        await self._send(
            {
                "op": "write_begin",
                "handle": handle,
                "path": path,
                "expected": expected_wire(expected),
                "executable": new.executable,
                "digest": new.digest,
            }
        )
        packer = ChunkPacker()
        try:
            async for chunk in chunks:
                data, z = packer.pack(chunk)
                await self._send({"op": "write_chunk", "handle": handle, "z": z}, data)
        except BaseException:
            if self.connected:
                try:
                    await self.request({"op": "write_end", "handle": handle, "abort": True, "path": path})
                except Exception:
                    pass
            raise
        h, _ = await self.request({"op": "write_end", "handle": handle, "path": path, "fsync": self.fsync})
        return entry_from_wire(h["entry"])[1]

    async def put_many(self, items: list[PutItem]) -> list[Entry | str]:
        body, zl = await asyncio.to_thread(pack_parts, [i.data for i in items])
        header = {
            "op": "put_many",
            "zl": zl,
            "fsync": self.fsync,
            "files": [
                [i.path, expected_wire(i.expected), i.new.executable, i.new.digest, len(i.data)]
                for i in items
            ],
        }
        h, _ = await self.request(header, body)
        out: list[Entry | str] = []
        for r in h["results"]:
            out.append(str(r) if isinstance(r, str) else entry_from_wire(r)[1])
        return out

    async def stage_many(self, items: list[PutItem]) -> list[int | str]:
        body, zl = await asyncio.to_thread(pack_parts, [i.data for i in items])
        header = {
            "op": "stage_many",
            "zl": zl,
            "handles": [self._next_id() for _ in items],
            "files": [
                [i.path, expected_wire(i.expected), i.new.executable, i.new.digest, len(i.data)]
                for i in items
            ],
        }
        h, _ = await self.request(header, body)
        return [str(r) if isinstance(r, str) else int(r) for r in h["results"]]

    async def commit_many(self, handles: list[int]) -> list[Entry | str]:
        h, _ = await self.request({"op": "commit_many", "handles": handles, "fsync": self.fsync})
        return [str(r) if isinstance(r, str) else entry_from_wire(r)[1] for r in h["results"]]

    async def ops(self, ops: list[dict[str, Any]]) -> list[Entry | None | str]:
        for op in ops:
            if op.get("op") == "symlink":
                op["handle"] = self._next_id()
        h, _ = await self.request({"op": "batch", "ops": ops})
        out: list[Entry | None | str] = []
        for ok, value in h["results"]:
            if not ok:
                out.append(str(value))
            else:
                out.append(None if value is None else entry_from_wire(value)[1])
        return out
