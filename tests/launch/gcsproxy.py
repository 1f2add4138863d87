"""A fault-injecting HTTP proxy in front of a store, for the launch's upload tests.

In front of the GCS or S3 emulator, or of the in-cluster store (between the API server's service
proxy and the store). The emulators accept every signed PUT; a real store answers 403
(signature, expiry), 400 BadDigest, 5xx, or drops the connection. The proxy passes everything
through except the signed object PUTs it is told to spoil, one queued fault per PUT:

- "403": 403 SignatureDoesNotMatch (the body is read first, as GCS does);
- "expired": 400 ExpiredToken (a URL used after its expiry);
- "503": 503 with a GCS-like XML error;
- "drop": read part of the body, then close the connection without an answer;
- "baddigest": 400 BadDigest;
- "corrupt": pass the PUT through with its last byte flipped (the controller's check must catch it);
- "slow": pass the PUT through, reading its body at `slow_rate` bytes per second.

It runs an aiohttp server on its own thread and event loop; `puts` counts object PUTs seen.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web

_ERROR = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
)


class FaultProxy:
    def __init__(self) -> None:
        self.upstream = ""
        self.faults: deque[str] = deque()
        self.puts = 0
        self.put_started = threading.Event()
        self.slow_rate = 256 * 1024
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None

    # --- life ----------------------------------------------------------------------------------

    def start(self) -> int:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="gcs-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- proxying ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        is_object_put = request.method == "PUT" and any(
            key in request.query for key in ("X-Goog-Signature", "X-Amz-Signature", "X-Nbd-Signature")
        )
        fault = ""
        if is_object_put:
            self.puts += 1
            self.put_started.set()
            fault = self.faults.popleft() if self.faults else ""
        if fault == "drop":
            await request.content.read(512)
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError()
        if fault == "slow":
            body = await self._read_slowly(request)
        else:
            body = await request.read()
        if fault == "403":
            return web.Response(
                status=403,
                text=_ERROR.format(code="SignatureDoesNotMatch", message="bad signature"),
                content_type="application/xml",
            )
        if fault == "expired":
            return web.Response(
                status=400,
                text=_ERROR.format(code="ExpiredToken", message="The provided token has expired."),
                content_type="application/xml",
            )
        if fault == "503":
            return web.Response(
                status=503,
                text=_ERROR.format(code="ServiceUnavailable", message="try again"),
                content_type="application/xml",
            )
        if fault == "baddigest":
            return web.Response(
                status=400,
                text=_ERROR.format(
                    code="BadDigest", message="The MD5 you specified did not match what we received."
                ),
                content_type="application/xml",
            )
        if fault == "corrupt" and body:
            body = body[:-1] + bytes(
                [body[-1] ^ 0xFF]
            )  # the emulators store it as is; the in-cluster store refuses it
        return await self._forward(request, body)

    async def _read_slowly(self, request: web.Request) -> bytes:
        chunks: list[bytes] = []
        step = max(1024, self.slow_rate // 10)
        while True:
            chunk = await request.content.read(step)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            await asyncio.sleep(0.1)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        url = self.upstream.rstrip("/") + request.rel_url.raw_path_qs
        async with self._session.request(
            request.method, url, data=body if body else None, headers=headers
        ) as resp:
            data = await resp.read()
            out_headers: dict[str, Any] = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
            }
            return web.Response(status=resp.status, body=data, headers=out_headers)
