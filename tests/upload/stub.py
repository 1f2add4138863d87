"""A small aiohttp server answering signed PUTs the way GCS does, following a script of answers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

STOPPING = web.AppKey("stopping", asyncio.Event)


def gcs_error(code: str, message: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message><Details>x</Details></Error>"
    ).encode()


@dataclass
class Seen:
    """One request as the stub saw it."""

    path_qs: str
    headers: dict[str, str]
    body_md5_b64: str | None  # None when the body never arrived in full
    body_len: int


# An answer: (status, body) — or a coroutine function taking the request for special behaviour.
Answer = tuple[int, bytes] | Callable[[web.Request], "asyncio.Future[web.StreamResponse]"]


@dataclass
class StubGCS:
    answers: list[Answer] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    committed: dict[str, bytes] = field(default_factory=dict)
    url: str = ""
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> StubGCS:
        app = web.Application(client_max_size=1 << 31)
        self._stopping = asyncio.Event()
        app[STOPPING] = self._stopping
        app.router.add_route("PUT", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        answer: Answer = self.answers.pop(0) if self.answers else (200, b"")
        if callable(answer):
            self.seen.append(Seen(request.path_qs, dict(request.headers), None, 0))
            return await answer(request)
        data = await request.read()
        digest = base64.b64encode(hashlib.md5(data).digest()).decode()
        self.seen.append(Seen(request.path_qs, dict(request.headers), digest, len(data)))
        status, body = answer
        if status == 200:
            if request.headers.get("Content-MD5") != digest:
                return web.Response(
                    status=400, body=gcs_error("BadDigest", "The MD5 you specified did not match.")
                )
            self.committed[request.path] = data
        return web.Response(status=status, body=body, content_type="application/xml")


def drop_mid_body(after: int) -> Callable[[web.Request], asyncio.Future[web.StreamResponse]]:
    """Reads `after` bytes of the body, then closes the connection without answering."""

    async def handler(request: web.Request) -> web.StreamResponse:
        got = 0
        while got < after:
            chunk = await request.content.read(65536)
            if not chunk:
                break
            got += len(chunk)
        assert request.transport is not None
        request.transport.close()
        raise asyncio.CancelledError

    return handler  # type: ignore[return-value]


def stall() -> Callable[[web.Request], asyncio.Future[web.StreamResponse]]:
    """Reads nothing and never answers (until the client gives up)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        # A server that stopped reading does not notice the client leaving: wait for the stub to stop.
        await request.app[STOPPING].wait()
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError

    return handler  # type: ignore[return-value]


def slow_reader(delay: float) -> Callable[[web.Request], asyncio.Future[web.StreamResponse]]:
    """Reads the body slowly, so the client is mid-upload for a while."""

    async def handler(request: web.Request) -> web.StreamResponse:
        while await request.content.read(65536):
            await asyncio.sleep(delay)
        return web.Response(status=200)

    return handler  # type: ignore[return-value]


def answer_early(status: int, body: bytes) -> Callable[[web.Request], asyncio.Future[web.StreamResponse]]:
    """Answers before reading the body, then closes (as a front end refusing a request does)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=status, body=body, headers={"Connection": "close"})
        await response.prepare(request)
        await response.write_eof()
        assert request.transport is not None
        request.transport.close()
        return response

    return handler  # type: ignore[return-value]


def chunked_error(status: int, body: bytes) -> Callable[[web.Request], asyncio.Future[web.StreamResponse]]:
    """Reads the body, then answers with a chunked body in two pieces."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        await response.write(body[len(body) // 2 :])
        await response.write_eof()
        return response

    return handler  # type: ignore[return-value]
