"""A small in-process API server double for unit-level forward tests.

It serves just what `nbd.forward` needs: pod list and watch (one namespace, `k=v` selectors) and
`pods/P/portforward` over WebSocket v4, whose data channel it connects to a real TCP server on
loopback standing in for the pod's port. Faults: answer a status for a while, drop every stream,
refuse a port. Kept deliberately small: the integration tests run against kubesim.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

NS = "default"
TOKEN = "secret-token"


@dataclass
class FakePod:
    name: str
    labels: dict[str, str]
    ports: dict[int, int]  # pod port -> loopback port of the real server behind it
    ready: bool = True
    created: str = "2026-01-01T00:00:00Z"

    def manifest(self, rv: int) -> dict[str, Any]:
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": self.name,
                "namespace": NS,
                "labels": self.labels,
                "resourceVersion": str(rv),
                "creationTimestamp": self.created,
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if self.ready else "False"}],
            },
        }


@dataclass
class FakeApi:
    token: str | None = TOKEN
    pods: dict[str, FakePod] = field(default_factory=dict)
    rv: int = 1
    fail_status: int = 0
    fail_until: float = 0.0
    fail_body: str = ""
    portforward_requests: int = 0
    frame: int = 64 * 1024
    _watchers: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)
    _streams: set[web.WebSocketResponse] = field(default_factory=set)
    runner: web.AppRunner | None = None
    url: str = ""
    exec_protocols: tuple[str, ...] = ("v5.channel.k8s.io", "v4.channel.k8s.io")
    ssl_context: ssl.SSLContext | None = None
    client_cert_required: bool = False
    port: int = 0

    # -- control -----------------------------------------------------------------------------

    def _event(self, kind: str, pod: FakePod) -> None:
        self.rv += 1
        event = {"type": kind, "object": pod.manifest(self.rv)}
        for q in self._watchers:
            q.put_nowait(event)

    def add_pod(self, pod: FakePod) -> None:
        self.pods[pod.name] = pod
        self._event("ADDED", pod)

    def set_ready(self, name: str, ready: bool) -> None:
        pod = self.pods[name]
        pod.ready = ready
        self._event("MODIFIED", pod)

    def delete_pod(self, name: str) -> None:
        pod = self.pods.pop(name)
        self._event("DELETED", pod)

    def fail(self, status: int, seconds: float, body: str = "") -> None:
        self.fail_status = status
        self.fail_until = asyncio.get_running_loop().time() + seconds
        self.fail_body = body

    def expire_watches(self) -> None:
        """Send every watcher a 410 Expired ERROR event (the client must re-list)."""
        for q in self._watchers:
            q.put_nowait(
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "code": 410,
                        "reason": "Expired",
                        "message": "too old resource version",
                    },
                }
            )

    async def drop_streams(self) -> None:
        for ws in list(self._streams):
            await ws.close()
        for q in self._watchers:
            q.put_nowait(None)

    # -- server ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._pods)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/portforward", self._portforward)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/exec", self._exec)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.port = port
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.drop_streams()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def kubeconfig(
        self,
        directory: Path,
        token: str | None = None,
        *,
        cluster_extra: dict[str, Any] | None = None,
        user: dict[str, Any] | None = None,
    ) -> Path:
        path = directory / "kubeconfig"
        if user is None:
            user = {"token": token if token is not None else (self.token or "none")}
        cluster: dict[str, Any] = {"server": self.url, **(cluster_extra or {})}
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": cluster}],
                    "users": [{"name": "me", "user": user}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": NS}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.client_cert_required:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            if not peer:
                return _status(401, "Unauthorized", "Unauthorized")
        elif self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        if self.fail_status and asyncio.get_running_loop().time() < self.fail_until:
            return _status(self.fail_status, "ServiceUnavailable", self.fail_body or "injected failure")
        return await handler(request)

    def _matches(self, pod: FakePod, selector: str) -> bool:
        for term in filter(None, selector.split(",")):
            k, _, v = term.partition("=")
            if pod.labels.get(k) != v:
                return False
        return True

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        selector = request.query.get("labelSelector", "")
        if request.query.get("watch") != "true":
            items = [p.manifest(self.rv) for p in self.pods.values() if self._matches(p, selector)]
            return web.json_response(
                {"kind": "PodList", "metadata": {"resourceVersion": str(self.rv)}, "items": items}
            )
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._watchers.append(q)
        try:
            timeout = float(request.query.get("timeoutSeconds", "60"))
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while True:
                try:
                    event = await asyncio.wait_for(q.get(), max(0.0, end - loop.time()))
                except TimeoutError:
                    break
                if event is None:
                    break
                pod_labels = event["object"]["metadata"]["labels"]
                if all(
                    pod_labels.get(k) == v
                    for k, _, v in (t.partition("=") for t in filter(None, selector.split(",")))
                ):
                    await resp.write(json.dumps(event).encode() + b"\n")
        finally:
            self._watchers.remove(q)
        return resp

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        return await _exec_handler(self, request)

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        self.portforward_requests += 1
        pod = self.pods.get(request.match_info["name"])
        if pod is None:
            return _status(
                404,
                "NotFound",
                f'pods "{request.match_info["name"]}" not found',
                name=request.match_info["name"],
            )
        port = int(request.query["ports"])
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",), max_msg_size=0)
        await ws.prepare(request)
        self._streams.add(ws)
        header = struct.pack("<H", port)
        try:
            await ws.send_bytes(b"\x00" + header)
            await ws.send_bytes(b"\x01" + header)
            target = pod.ports.get(port)
            try:
                if target is None:
                    raise OSError("connection refused")
                reader, writer = await asyncio.open_connection("127.0.0.1", target)
            except OSError as e:
                await ws.send_bytes(b"\x01" + f"error forwarding port {port} to pod {pod.name}: {e}".encode())
                return ws
            await self._relay(ws, reader, writer)
        finally:
            self._streams.discard(ws)
            await ws.close()
        return ws

    async def _relay(
        self, ws: web.WebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def up() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x00":
                    writer.write(msg.data[1:])
                    await writer.drain()
            # The client closed its stream.

        async def down() -> None:
            while True:
                data = await reader.read(self.frame)
                if not data:
                    return
                await ws.send_bytes(b"\x00" + data)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()


async def _exec_handler(api: FakeApi, request: web.Request) -> web.StreamResponse:
    """Run the command as a local process and speak the exec channel protocol (v5 or v4)."""
    if request.match_info["name"] not in api.pods:
        return _status(
            404, "NotFound", f'pods "{request.match_info["name"]}" not found', name=request.match_info["name"]
        )
    command = request.query.getall("command")
    ws = web.WebSocketResponse(protocols=api.exec_protocols, max_msg_size=0)
    await ws.prepare(request)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        await ws.send_bytes(
            b"\x03"
            + json.dumps(
                {
                    "metadata": {},
                    "status": "Failure",
                    "reason": "InternalError",
                    "message": f"cannot run {command[0]}: {e}",
                }
            ).encode()
        )
        await ws.close()
        return ws
    assert proc.stdin and proc.stdout and proc.stderr

    async def pump_in() -> None:
        async for msg in ws:
            data = msg.data if msg.type is aiohttp.WSMsgType.BINARY else msg.data.encode()
            if data[:1] == b"\x00":
                proc.stdin.write(data[1:])  # type: ignore[union-attr]
                await proc.stdin.drain()  # type: ignore[union-attr]
            elif data == b"\xff\x00":
                proc.stdin.close()  # type: ignore[union-attr]

    async def pump_out(stream: asyncio.StreamReader, channel: bytes) -> None:
        while data := await stream.read(65536):
            await ws.send_bytes(channel + data)

    feeder = asyncio.create_task(pump_in())
    await asyncio.gather(pump_out(proc.stdout, b"\x01"), pump_out(proc.stderr, b"\x02"))
    code = await proc.wait()
    if code == 0:
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
    else:
        status = {
            "metadata": {},
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    await ws.send_bytes(b"\x03" + json.dumps(status).encode())
    feeder.cancel()
    await ws.close()
    return ws


def _status(code: int, reason: str, message: str, name: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
        "details": {"name": name} if name else {},
    }
    return web.json_response(body, status=code)


async def echo_server() -> tuple[asyncio.Server, int]:
    """A TCP echo server on loopback (the stand-in for a pod's port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def http_server(body: bytes = b"hello from the pod") -> tuple[asyncio.Server, int]:
    """A minimal HTTP/1.1 server answering every request with 200 and `body`, then closing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
