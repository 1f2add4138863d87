"""`pods/{name}/portforward` over WebSocket: the v4 channel protocol and SPDY/3.1 for kubectl.

Both connect to 127.0.0.1:PORT inside the pod's network namespace. Back-pressure: every write
to the pod is drained before the next client message is read, and every read from the pod is
sent (and drained while the connection's writer is paused) before the next read, so nothing is
buffered without bound.

v4 (`v4.channel.k8s.io`, the Python client): ports from the query; port i uses data channel 2i
and error channel 2i+1, each opened with a `[ch, port_lo, port_hi]` frame; a failed connection
is reported as text on the error channel. The WebSocket ends when every port's connection ends.

SPDY (`SPDY/3.1+portforward.k8s.io`, kubectl 1.32): SPDY/3.1 frames inside binary messages; per
forwarded connection an error stream and a data stream (headers streamtype, port, requestID);
SYN_REPLY to each, PING echoed, data stream FIN'd when the pod side ends, then the error stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from kubesim.kubelet.namespaces import open_in_netns
from kubesim.streams import channels, spdy
from kubesim.streams.common import bad_request, get_pod, tracked

if TYPE_CHECKING:
    from kubesim.kubelet import Kubelet
    from kubesim.kubelet.pod import PodWorker

__all__ = ["make_portforward_handler", "SPDY_PROTOCOL"]

SPDY_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
# Bytes of pod data per message. aiohttp's receivers (the client's, and ours for the other direction)
# cost about 3x more per byte with 256 KiB messages than with 64 KiB ones (they join partial reads).
CHUNK = 64 * 1024


def _ports(request: web.Request) -> list[int]:
    out: list[int] = []
    for raw in request.query.getall("ports", []):
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                port = int(part)
            except ValueError as e:
                raise bad_request(f"invalid port {part!r}") from e
            if not 0 < port < 65536:
                raise bad_request(f"port {port} must be in the range 1-65535")
            out.append(port)
    return out


def _connect_error(w: PodWorker, port: int, e: BaseException) -> str:
    why = (
        "connect: connection refused" if isinstance(e, OSError) and e.errno == errno.ECONNREFUSED else str(e)
    )
    return (
        f"error forwarding port {port} to pod {w.name}, uid {w.uid}: failed to connect to localhost:{port} "
        f"inside the pod's network namespace: dial tcp4 127.0.0.1:{port}: {why}"
    )


def make_portforward_handler(kubelet: Kubelet):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pod = get_pod(kubelet, namespace, name)
        w = kubelet.worker(namespace, name)
        if w is None or not w.sandbox_ready:
            raise bad_request(f"unable to upgrade connection: pod {name} is not running")
        offered = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        ports = _ports(request)
        ws = web.WebSocketResponse(
            protocols=(SPDY_PROTOCOL,) + channels.PORTFORWARD_WS_PROTOCOLS, max_msg_size=0, autoping=True
        )
        if SPDY_PROTOCOL not in offered and not ports:
            raise bad_request("at least 1 port must be specified")
        await ws.prepare(request)
        with tracked(kubelet.faults, request):
            try:
                if ws.ws_protocol == SPDY_PROTOCOL:
                    await _SpdySession(ws, w).run()
                else:
                    await _v4(ws, request, w, ports)
            except (ConnectionError, asyncio.CancelledError):
                raise
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
        _ = pod
        return ws

    return handler


# ---------------------------------------------------------------------------- v4


async def _pod_socket(w: PodWorker, port: int) -> socket.socket:
    """A connected non-blocking socket to 127.0.0.1:`port` inside the pod (what `w.connect` wraps in streams).

    The v4 relay works on the raw socket: the pod's bytes are received straight into the frame
    that carries them, and the client's bytes are sent from the message that carried them.
    """
    sandbox = w.sandbox
    if sandbox.isolated and sandbox.pid is None:
        raise ConnectionRefusedError("pod sandbox is gone")
    sock = await open_in_netns(sandbox.netns_pid, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


async def _pump_to_client(
    ws: web.WebSocketResponse, request: web.Request, channel: int, sock: socket.socket
) -> None:
    """Relay the pod's bytes to the client as `[channel]+data` messages until the pod's EOF.

    Each message is received into one buffer already holding its WebSocket header room and channel
    byte, and written with a single transport write: no copy of the payload in Python.
    Invariants: a buffer is reused only when the transport holds nothing of it (its write buffer
    is empty); reading stops while the connection's writer is paused (above its high-water mark).
    """
    loop = asyncio.get_running_loop()
    transport = request.transport
    protocol = request.protocol
    if transport is None:
        return
    buf = channels.frame_buffer(channel, CHUNK)
    view = memoryview(buf)
    while True:
        n = await loop.sock_recv_into(sock, view[channels.FRAME_DATA :])
        if n == 0 or transport.is_closing():
            return
        start = channels.put_frame_header(buf, 1 + n)
        transport.write(view[start : channels.FRAME_DATA + n])
        if transport.get_write_buffer_size():
            # The transport keeps (a copy or a view of) this frame: the next read gets a new buffer.
            buf = channels.frame_buffer(channel, CHUNK)
            view = memoryview(buf)
            if protocol.writing_paused:
                await protocol._drain_helper()


async def _v4(ws: web.WebSocketResponse, request: web.Request, w: PodWorker, ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for i, port in enumerate(ports):
        await ws.send_bytes(channels.port_frame(2 * i, port))
        await ws.send_bytes(channels.port_frame(2 * i + 1, port))
    socks: dict[int, socket.socket] = {}
    pumps: list[asyncio.Task[None]] = []
    try:
        for i, port in enumerate(ports):
            try:
                socks[i] = await _pod_socket(w, port)
            except OSError as e:
                await ws.send_bytes(channels.encode(2 * i + 1, _connect_error(w, port, e).encode()))
                continue

            async def pump(i: int = i) -> None:
                with contextlib.suppress(ConnectionError, OSError):
                    await _pump_to_client(ws, request, 2 * i, socks[i])

            pumps.append(asyncio.ensure_future(pump()))
        if not pumps:
            return
        all_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*pumps, return_exceptions=True))

        async def read_client() -> None:
            # One message at a time: the next is read only once this one is in the pod's socket.
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    raw = msg.data
                elif msg.type is WSMsgType.TEXT:
                    raw = msg.data.encode()
                else:
                    continue
                if len(raw) < 2:
                    continue
                ch = raw[0]
                sock = socks.get(ch // 2) if ch % 2 == 0 else None
                if sock is not None:
                    with contextlib.suppress(ConnectionError, OSError):
                        await loop.sock_sendall(sock, memoryview(raw)[1:])

        reader: asyncio.Future[Any] = asyncio.ensure_future(read_client())
        try:
            await asyncio.wait([reader, all_done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            all_done.cancel()
            await asyncio.gather(reader, all_done, return_exceptions=True)
    finally:
        for t in pumps:
            t.cancel()
        for sock in socks.values():
            sock.close()


# ---------------------------------------------------------------------------- SPDY


@dataclass
class _Forward:
    request_id: str
    port: int = 0
    error_sid: int | None = None
    data_sid: int | None = None
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    connected: asyncio.Future[bool] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closed: bool = False


class _SpdySession:
    def __init__(self, ws: web.WebSocketResponse, w: PodWorker) -> None:
        self.ws = ws
        self.w = w
        self.parser = spdy.Parser()
        self.comp = spdy.HeaderCompressor()
        self.lock = asyncio.Lock()
        self.forwards: dict[str, _Forward] = {}
        self.by_sid: dict[int, _Forward] = {}

    async def send(self, data: bytes) -> None:
        async with self.lock:
            await self.ws.send_bytes(data)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                for frame in self.parser.feed(msg.data):
                    if not await self.handle(frame):
                        return
        except spdy.SpdyError:
            with contextlib.suppress(Exception):
                await self.send(spdy.encode_goaway(0, 1))
        finally:
            for fwd in self.forwards.values():
                self._close(fwd)

    async def handle(self, frame: spdy.Frame) -> bool:
        if isinstance(frame, spdy.DataFrame):
            fwd = self.by_sid.get(frame.stream_id)
            if fwd is None or frame.stream_id != fwd.data_sid:
                return True
            if fwd.connected is not None and not fwd.connected.done():
                await fwd.connected
            if fwd.conn is None:
                return True
            writer = fwd.conn[1]
            try:
                if frame.data:
                    writer.write(frame.data)
                    await writer.drain()
                if frame.fin and writer.can_write_eof():
                    writer.write_eof()
            except (ConnectionError, OSError):
                pass
            return True
        t = frame.type
        if t == spdy.SYN_STREAM:
            await self._syn(frame)
        elif t == spdy.PING:
            await self.send(spdy.encode_ping(frame.value))
        elif t == spdy.RST_STREAM:
            fwd = self.by_sid.get(frame.stream_id)
            if fwd is not None:
                self._close(fwd)
        elif t == spdy.GOAWAY:
            return False
        return True

    async def _syn(self, frame: spdy.ControlFrame) -> None:
        sid = frame.stream_id
        stype = frame.header("streamtype") or ""
        rid = frame.header("requestid") or str(sid)
        fwd = self.forwards.setdefault(rid, _Forward(rid))
        self.by_sid[sid] = fwd
        try:
            fwd.port = int(frame.header("port") or 0)
        except ValueError:
            fwd.port = 0
        await self.send(spdy.encode_syn_reply(self.comp, sid, {}))
        if stype == "error":
            fwd.error_sid = sid
        elif stype == "data":
            fwd.data_sid = sid
            fwd.connected = asyncio.get_running_loop().create_future()
            fwd.tasks.append(asyncio.ensure_future(self._connect_and_pump(fwd)))
        else:
            await self.send(spdy.encode_rst(sid, spdy.RST_PROTOCOL_ERROR))

    async def _connect_and_pump(self, fwd: _Forward) -> None:
        assert fwd.connected is not None and fwd.data_sid is not None
        try:
            fwd.conn = await self.w.connect(fwd.port)
        except OSError as e:
            fwd.connected.set_result(False)
            with contextlib.suppress(Exception):
                if fwd.error_sid is not None:
                    await self.send(
                        spdy.encode_data(fwd.error_sid, _connect_error(self.w, fwd.port, e).encode())
                    )
                await self._finish(fwd)
            return
        fwd.connected.set_result(True)
        reader = fwd.conn[0]
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self.send(spdy.encode_data(fwd.data_sid, data))
        except (ConnectionError, OSError):
            pass
        with contextlib.suppress(Exception):
            await self._finish(fwd)

    async def _finish(self, fwd: _Forward) -> None:
        """Half-close the data stream, then the error stream (kubectl waits for both)."""
        if fwd.closed:
            return
        fwd.closed = True
        if fwd.data_sid is not None:
            await self.send(spdy.encode_data(fwd.data_sid, b"", fin=True))
        if fwd.error_sid is not None:
            await self.send(spdy.encode_data(fwd.error_sid, b"", fin=True))

    def _close(self, fwd: _Forward) -> None:
        fwd.closed = True
        for t in fwd.tasks:
            t.cancel()
        if fwd.conn is not None:
            fwd.conn[1].close()
