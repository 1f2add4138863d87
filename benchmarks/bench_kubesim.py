"""Port-forward throughput through kubesim, beside raw loopback TCP and one plain WebSocket hop.

One forwarded connection carries SIZE bytes from a server in a pod (1 GiB; 128 MiB in quick
mode) to a minimal client of the `v4.channel.k8s.io` port-forward protocol written here with
aiohttp. Measured in the same run with the same source server:

* raw loopback TCP (the ceiling: no relay at all);
* one plain aiohttp WebSocket hop (an aiohttp server in its own process, as kubesim is, reading the
  source over TCP and sending 128 KiB binary messages to an aiohttp client): kubesim's path minus
  the pod namespace, the API routing and the port-forward protocol;
* kubectl port-forward (SPDY/3.1 over WebSocket) with a raw socket reader, for reference.

Targets: kubesim >= 0.5x the plain WebSocket hop (the relay should cost little beyond the hop).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, median

NAME = "kubesim"

MiB = 2**20
POD_PORT = 9000

# The source: for each connection read an 8-byte size, send that many bytes, close.
SOURCE = textwrap.dedent("""
    import socket, struct, sys
    port = int(sys.argv[1])
    buf = memoryview(b"x" * (1 << 20))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        want = b""
        while len(want) < 8:
            more = c.recv(8 - len(want))
            if not more:  # a probe: connected and went away
                break
            want += more
        left = struct.unpack(">Q", want)[0] if len(want) == 8 else 0
        while left > 0:
            n = c.send(buf[: min(left, len(buf))])
            left -= n
        c.close()
""")


def _mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds


async def _read_tcp(port: int, size: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MiB)
    t0 = time.perf_counter()
    writer.write(size.to_bytes(8, "big"))
    got = 0
    while True:
        data = await reader.read(4 * MiB)
        if not data:
            break
        got += len(data)
    elapsed = time.perf_counter() - t0
    writer.close()
    assert got == size, f"raw TCP got {got} of {size}"
    return elapsed


# One plain WebSocket hop, in its own process like kubesim: for each WebSocket, read the size from
# the client, fetch that many bytes from the source over TCP and send them as 128 KiB messages.
HOP = textwrap.dedent("""
    import asyncio, sys
    from aiohttp import web, WSMsgType
    source_port = int(sys.argv[1])

    async def handler(request):
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        msg = await ws.receive()
        reader, writer = await asyncio.open_connection("127.0.0.1", source_port, limit=1 << 20)
        writer.write(msg.data[1:])
        while True:
            data = await reader.read(128 * 1024)
            if not data:
                break
            await ws.send_bytes(b"\\x00" + data)
        writer.close()
        await ws.close()
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


async def _ws_hop(hop_port: int, size: int) -> float:
    """Read `size` bytes through the hop process with an aiohttp WebSocket client."""
    from aiohttp import ClientSession, WSMsgType

    async with ClientSession() as session:
        t0 = time.perf_counter()
        got = 0
        async with session.ws_connect(f"http://127.0.0.1:{hop_port}/", max_msg_size=0) as ws:
            await ws.send_bytes(b"\x00" + size.to_bytes(8, "big"))
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    got += len(msg.data) - 1
        elapsed = time.perf_counter() - t0
    assert got == size, f"WebSocket hop got {got} of {size}"
    return elapsed


async def _v4_portforward(url: str, token: str | None, pod: str, size: int) -> float:
    """A minimal v4.channel.k8s.io port-forward client: port frames, then data on channel 0."""
    from aiohttp import ClientSession, WSMsgType

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with ClientSession() as session:
        t0 = time.perf_counter()
        got = 0
        ws_url = f"{url}/api/v1/namespaces/default/pods/{pod}/portforward?ports={POD_PORT}"
        async with session.ws_connect(
            ws_url, protocols=["v4.channel.k8s.io"], headers=headers, max_msg_size=0
        ) as ws:
            opened: set[int] = set()
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                ch = msg.data[0]
                if ch not in opened:
                    opened.add(ch)  # the 3-byte port frame opening the channel
                    if len(opened) == 2:
                        await ws.send_bytes(b"\x00" + size.to_bytes(8, "big"))
                    continue
                if ch == 0:
                    got += len(msg.data) - 1
                    if got >= size:
                        break
                else:
                    raise RuntimeError(f"port-forward error: {msg.data[1:].decode(errors='replace')}")
        elapsed = time.perf_counter() - t0
    assert got == size, f"port-forward got {got} of {size}"
    return elapsed


def _kubectl_forward(kubeconfig: Path, cache: Path, pod: str, size: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(cache),
            "port-forward",
            f"pod/{pod}",
            f"{local}:{POD_PORT}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return _timed(_read_tcp(local, size), size)
    finally:
        proc.terminate()
        proc.wait(10)


def _timed(coro: Any, size: int) -> float:
    """Run one measurement with a deadline (never slower than 5 MiB/s, plus start-up)."""
    return float(asyncio.run(asyncio.wait_for(coro, 60 + size / (5 * MiB))))


def run(quick: bool = False) -> list[Figure]:
    from kubesim.running import start_kubesim

    size = (128 if quick else 1024) * MiB
    runs = 3 if quick else 1
    root = Path(tempfile.mkdtemp(prefix="bench-kubesim-"))
    (root / "source.py").write_text(SOURCE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_port = s.getsockname()[1]
    source = subprocess.Popen(
        [sys.executable, str(root / "source.py"), str(host_port)], stdout=subprocess.PIPE
    )
    (root / "hop.py").write_text(HOP)
    hop_proc = subprocess.Popen(
        [sys.executable, str(root / "hop.py"), str(host_port)], stdout=subprocess.PIPE
    )
    server = start_kubesim(root / "kubesim")
    try:
        assert source.stdout is not None and hop_proc.stdout is not None
        source.stdout.readline()
        hop_port = int(hop_proc.stdout.readline())
        from kubernetes import client

        api = server.api_client()
        core = client.CoreV1Api(api)
        script = (root / "source.py").read_text()
        core.create_namespaced_pod(  # the client serializes a plain manifest as it is
            "default",
            {  # type: ignore[arg-type]
                "metadata": {"name": "source"},
                "spec": {
                    "containers": [
                        {
                            "name": "source",
                            "image": "python:3.11",
                            "command": ["python3", "-c", script, str(POD_PORT)],
                            "readinessProbe": {"tcpSocket": {"port": POD_PORT}, "periodSeconds": 1},
                        }
                    ]
                },
            },
        )
        deadline = time.monotonic() + 60
        while True:
            status = core.read_namespaced_pod("source", "default").status
            cs = status.container_statuses if status else None
            if cs and cs[0].ready:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("source pod not ready")
            time.sleep(0.1)
        api.close()
        raw = median(_mbps(size, _timed(_read_tcp(host_port, size), size)) for _ in range(runs))
        hop = median(_mbps(size, _timed(_ws_hop(hop_port, size), size)) for _ in range(runs))
        ks = median(
            _mbps(size, _timed(_v4_portforward(server.url, server.token, "source", size), size))
            for _ in range(runs)
        )
        kubectl = median(
            _mbps(size, _kubectl_forward(server.kubeconfig, server.cache_dir, "source", size))
            for _ in range(runs)
        )
    finally:
        server.stop()
        for p in (source, hop_proc):
            p.kill()
            p.wait()
    label = f"{size // MiB} MiB, one connection"
    return [
        Figure(
            f"kubesim port-forward v4 ({label})",
            ks,
            "MiB/s",
            baseline="raw loopback TCP",
            baseline_value=raw,
            higher_is_better=True,
        ),
        Figure(
            f"kubesim port-forward v4 ({label})",
            ks,
            "MiB/s",
            baseline="one aiohttp WebSocket hop",
            baseline_value=hop,
            target=">= 0.5x the WebSocket hop",
            met=ks >= 0.5 * hop,
            higher_is_better=True,
        ),
        Figure(
            f"kubectl port-forward via kubesim, SPDY ({label})",
            kubectl,
            "MiB/s",
            baseline="kubesim port-forward v4",
            baseline_value=ks,
            higher_is_better=True,
        ),
    ]
