"""Port-forward throughput, latency and connection setup: nbd's forward against its baselines.

Paths measured, each to the same target server (a threaded blocking server standing in for the
pod's port: echo, sink and source modes):

- raw loopback TCP;
- one plain aiohttp WebSocket hop (a TCP listener relaying to an aiohttp WebSocket server that
  relays to the target; the ceiling for any WebSocket port-forward);
- the official `kubernetes.stream.portforward` the way a user gets a local port from it: a
  127.0.0.1 listener whose connections are copied (two threads each) to the socket `portforward()`
  returns, whose own proxy thread does the WebSocket framing -- what `kubectl port-forward`-like
  wrappers of the Python client do. This is the baseline of the ">= 2x" target;
- the same client's socket used directly by the measuring code in the relay's process (an
  in-process socketpair: no local TCP hop and no separate client process), an extra row that shows
  the client's best case;
- `kubectl port-forward` (SPDY) — only against kubesim;
- nbd's `Forward`.

The API server is kubesim when `kubesim.testing` is available (real pods as processes), else the
in-process fake v4 server of tests/forward (one hop, like the plain WebSocket baseline).
Every relay runs in its own process so the measuring client never shares a GIL with it (but for
the socketpair row, where they share one by construction). CPU seconds per GiB are reported for
each relay process and for the API server process (kubesim or the fake, pods excluded) while it
carried that path's transfers.

Roles for the subprocesses: `python -m benchmarks.bench_forward ROLE ...` (see `_main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure

NAME = "forward"

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1024 * 1024
LABELS = {"app": "bench-forward"}
REMOTE_PORT = 9000
OFFICIAL = "kubernetes.stream.portforward + local listener"
OFFICIAL_SOCKETPAIR = "kubernetes.stream.portforward socket in-process (socketpair, no listener)"
RELAY_BUFFER = (
    256 * 1024
)  # the official-client wrapper's copy buffer (as large as its proxy's reads are useful)

# -- the target server (the "pod's port") -------------------------------------------------------

# Standalone source (stdlib only): run locally by role "target" and as the command of kubesim's pod.
# Protocol: b"E" echo until EOF; b"S"+u64 sink N bytes then ack b"k"; b"G"+u64 send N bytes, then
# wait for one byte so the close does not race the data.
TARGET_SOURCE = r"""
import os, socket, struct, sys, threading
CHUNK = 1024 * 1024

def recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("closed")
        got += k
    return bytes(buf)

def serve(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        mode = recv_exact(conn, 1)
        if mode == b"E":
            buf = bytearray(65536)
            while True:
                k = conn.recv_into(buf)
                if k == 0:
                    return
                conn.sendall(memoryview(buf)[:k])
        (n,) = struct.unpack("<Q", recv_exact(conn, 8))
        if mode == b"S":
            buf = bytearray(CHUNK)
            left = n
            while left:
                k = conn.recv_into(buf, min(left, CHUNK))
                if k == 0:
                    return
                left -= k
            conn.sendall(b"k")
        elif mode == b"G":
            block = os.urandom(CHUNK)
            left = n
            while left:
                k = min(left, CHUNK)
                conn.sendall(memoryview(block)[:k])
                left -= k
            recv_exact(conn, 1)
    except OSError:
        pass
    finally:
        conn.close()

def listen(port, host="127.0.0.1"):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(512)
    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    return srv, loop

if __name__ == "__main__":
    srv, loop = listen(int(sys.argv[1]), "0.0.0.0")
    loop()
"""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("closed")
        got += k
    return bytes(buf)


def target_server(port: int = 0) -> tuple[socket.socket, int]:
    namespace: dict[str, Any] = {"__name__": "bench_target"}
    exec(compile(TARGET_SOURCE, "bench_target", "exec"), namespace)
    srv, loop = namespace["listen"](port)
    threading.Thread(target=loop, daemon=True).start()
    return srv, srv.getsockname()[1]


# -- measuring (blocking sockets, any process) ---------------------------------------------------

Connect = Callable[[], socket.socket]


def tcp_connect(port: int) -> Connect:
    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    return connect


def measure_upload(connect: Connect, nbytes: int) -> float:
    """MB/s of nbytes sent through the path (the target acks the last byte)."""
    block = os.urandom(CHUNK)
    s = connect()
    try:
        start = time.perf_counter()
        s.sendall(b"S" + struct.pack("<Q", nbytes))
        left = nbytes
        while left:
            k = min(left, CHUNK)
            s.sendall(memoryview(block)[:k])
            left -= k
        if _recv_exact(s, 1) != b"k":
            raise RuntimeError("bad ack")
        elapsed = time.perf_counter() - start
    finally:
        s.close()
    return nbytes / elapsed / 1e6


def measure_download(connect: Connect, nbytes: int) -> float:
    """MB/s of nbytes received through the path."""
    s = connect()
    buf = bytearray(CHUNK)
    try:
        start = time.perf_counter()
        s.sendall(b"G" + struct.pack("<Q", nbytes))
        left = nbytes
        while left:
            k = s.recv_into(buf, min(left, CHUNK))
            if k == 0:
                raise RuntimeError(f"closed with {left} bytes missing")
            left -= k
        elapsed = time.perf_counter() - start
        s.sendall(b"k")
    finally:
        s.close()
    return nbytes / elapsed / 1e6


def measure_latency(connect: Connect, rounds: int, size: int = 64) -> tuple[float, float]:
    """(p50, p99) in ms of `rounds` request/response pairs of `size` bytes on one connection."""
    s = connect()
    payload = b"x" * size
    samples: list[float] = []
    try:
        s.sendall(b"E")
        for _ in range(50):  # warm up
            s.sendall(payload)
            _recv_exact(s, size)
        for _ in range(rounds):
            t = time.perf_counter()
            s.sendall(payload)
            _recv_exact(s, size)
            samples.append(time.perf_counter() - t)
    finally:
        s.close()
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e3, q[98] * 1e3


def measure_setup(connect: Connect, count: int) -> float:
    """p50 ms from connect() to the first echoed byte, over `count` new connections."""
    samples: list[float] = []
    for _ in range(count):
        t = time.perf_counter()
        s = connect()
        try:
            s.sendall(b"E.")
            _recv_exact(s, 1)
            samples.append(time.perf_counter() - t)
        finally:
            s.close()
    return statistics.median(samples) * 1e3


def measure_op(connect: Connect, op: str, nbytes: int, rounds: int, setups: int) -> list[float]:
    """One measurement: "up"/"down" → [MB/s], "latency" → [p50 ms, p99 ms], "setup" → [p50 ms]."""
    if op == "up":
        return [measure_upload(connect, nbytes)]
    if op == "down":
        return [measure_download(connect, nbytes)]
    if op == "latency":
        return list(measure_latency(connect, rounds))
    if op == "setup":
        return [measure_setup(connect, setups)]
    raise ValueError(op)


def _cpu_one(pid: int) -> float:
    """user+system CPU seconds of one process (its children excluded)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process and its live descendants (kubectl is a dispatcher)."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, fields in stats.items():
            if int(fields[1]) == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


# -- relays run as subprocesses ------------------------------------------------------------------


def _ready(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def _wait_stdin_closed() -> None:
    sys.stdin.read()


def role_target() -> None:
    _srv, port = target_server()
    _ready({"port": port})
    _wait_stdin_closed()


def role_ws_server(target: int) -> None:
    """A plain aiohttp WebSocket server relaying each WebSocket to a new TCP connection to target."""
    import aiohttp
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        reader, writer = await asyncio.open_connection("127.0.0.1", target)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def up() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    writer.write(msg.data)
                    await writer.drain()

        async def down() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(data)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        writer.close()
        await ws.close()
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/relay", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        _ready({"port": site._server.sockets[0].getsockname()[1]})  # type: ignore[union-attr]
        await asyncio.to_thread(_wait_stdin_closed)
        await runner.cleanup()

    asyncio.run(main())


def role_ws_client(server: int) -> None:
    """A TCP listener relaying each connection over its own plain aiohttp WebSocket."""
    import aiohttp

    async def main() -> None:
        session = aiohttp.ClientSession()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ws = await session.ws_connect(f"http://127.0.0.1:{server}/relay", max_msg_size=0)

            async def up() -> None:
                while data := await reader.read(65536):
                    await ws.send_bytes(data)

            async def down() -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        writer.write(msg.data)
                        await writer.drain()

            tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await ws.close()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        _ready({"port": srv.sockets[0].getsockname()[1]})
        await asyncio.to_thread(_wait_stdin_closed)
        srv.close()
        await session.close()

    asyncio.run(main())


def role_fake_api(target: int, directory: str) -> None:
    """The tests' fake v4 API server with one Ready pod whose REMOTE_PORT is `target`."""
    sys.path.insert(0, str(ROOT / "tests" / "forward"))
    from fakeapi import FakeApi, FakePod  # type: ignore[import-not-found]

    async def main() -> None:
        api = FakeApi(token="bench")
        api.frame = 64 * 1024
        await api.start()
        api.add_pod(FakePod("bench-0", dict(LABELS), {REMOTE_PORT: target}))
        path = api.kubeconfig(Path(directory))
        _ready({"kubeconfig": str(path), "pod": "bench-0", "namespace": "default"})
        await asyncio.to_thread(_wait_stdin_closed)
        await api.stop()

    asyncio.run(main())


def role_nbd(kubeconfig: str, namespace: str) -> None:
    """nbd's Forward to the pod labelled LABELS, REMOTE_PORT."""
    from nbd.forward import Forward
    from nbd.kube import KubeClient, load_target

    async def main() -> None:
        kube = KubeClient(await load_target(kubeconfig, None, namespace))
        fwd = Forward(kube, namespace, LABELS, REMOTE_PORT, probe_path=None)
        await fwd.start()
        await fwd.pods.wait_ready_pod(30)
        _ready({"port": fwd.local_port})
        await asyncio.to_thread(_wait_stdin_closed)
        await fwd.stop()
        await kube.aclose()

    asyncio.run(main())


def role_official(kubeconfig: str, namespace: str, pod: str) -> None:
    """Measure through `kubernetes.stream.portforward` sockets in this process, on command.

    Reads one JSON command per line ({"op", "nbytes", "rounds", "setups"}) and answers
    {"values": [...], "cpu": seconds this process spent}.
    """
    from kubernetes import client, config
    from kubernetes.stream import portforward

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    api = client.CoreV1Api(client.ApiClient(cfg))

    def connect() -> socket.socket:
        pf = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(REMOTE_PORT))
        s: socket.socket = pf.socket(REMOTE_PORT)
        s.setblocking(True)
        return s

    _ready({})
    for line in sys.stdin:
        cmd = json.loads(line)
        cpu0 = _cpu_seconds(os.getpid())
        values = measure_op(connect, cmd["op"], cmd["nbytes"], cmd["rounds"], cmd["setups"])
        _ready({"values": values, "cpu": _cpu_seconds(os.getpid()) - cpu0})


def _pump(src: Any, dst: Any, done: Callable[[], None]) -> None:
    """Copy src to dst until EOF or an error (blocking; the GIL is released in recv and send)."""
    buf = bytearray(RELAY_BUFFER)
    view = memoryview(buf)
    try:
        while True:
            k = src.recv_into(buf)
            if k == 0:
                break
            dst.sendall(view[:k])
    except OSError:
        pass
    finally:
        done()


def role_official_listener(kubeconfig: str, namespace: str, pod: str) -> None:
    """A local port from `kubernetes.stream.portforward`, the way a user's wrapper provides one.

    A 127.0.0.1 listener; each accepted connection gets its own `portforward()` stream and two
    threads copying between the accepted socket and the socket `portforward()` returns (whose own
    proxy thread does the WebSocket framing), like `kubectl port-forward`-style wrappers do.
    """
    from kubernetes import client, config
    from kubernetes.stream import portforward

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    api = client.CoreV1Api(client.ApiClient(cfg))

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            pf = portforward(
                api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(REMOTE_PORT)
            )
        except Exception:
            conn.close()
            return
        remote = pf.socket(REMOTE_PORT)
        remote.setblocking(True)
        lock = threading.Lock()
        closed = [False]

        def done() -> None:
            # Either direction ending ends the connection (the v4 protocol has no half-close).
            with lock:
                if closed[0]:
                    return
                closed[0] = True
            for s in (conn, remote):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

        threading.Thread(target=_pump, args=(remote, conn, done), daemon=True).start()
        _pump(conn, remote, done)

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    _ready({"port": srv.getsockname()[1]})
    _wait_stdin_closed()
    srv.close()


# -- orchestration -------------------------------------------------------------------------------


class Role:
    """A role subprocess: its ready JSON, and a request/answer channel over its stdin/stdout."""

    def __init__(self, proc: subprocess.Popen[str], ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready
        self.pid = proc.pid

    def __getitem__(self, key: str) -> Any:
        return self.ready[key]

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark role exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextlib.contextmanager
def spawn(*args: str) -> Iterator[Role]:
    """Run a role subprocess; yields it once it printed its ready line; stops it on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_forward", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"role {args[0]} exited with {proc.wait()}")
        yield Role(proc, json.loads(line))
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Measured:
    """One path under measurement: measured here through a local port, or inside a role process."""

    def __init__(
        self,
        name: str,
        *,
        port: int | None = None,
        relay_pid: int | None = None,
        role: Role | None = None,
        server_pid: int | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.relay_pid = relay_pid
        self.role = role
        self.server_pid = server_pid
        self.cpu_includes_client = role is not None

    def measure(self, op: str, nbytes: int, rounds: int, setups: int) -> tuple[list[float], float, float]:
        """(values, relay CPU seconds, API server CPU seconds spent meanwhile; NaN when unknown)."""
        server0 = _cpu_one(self.server_pid) if self.server_pid else float("nan")
        if self.role is not None:
            answer = self.role.ask({"op": op, "nbytes": nbytes, "rounds": rounds, "setups": setups})
            values, cpu = answer["values"], answer["cpu"]
        else:
            assert self.port is not None
            cpu0 = _cpu_seconds(self.relay_pid) if self.relay_pid else 0.0
            values = measure_op(tcp_connect(self.port), op, nbytes, rounds, setups)
            cpu = _cpu_seconds(self.relay_pid) - cpu0 if self.relay_pid else float("nan")
        server = _cpu_one(self.server_pid) - server0 if self.server_pid else float("nan")
        return values, cpu, server


def measure_interleaved(
    paths: list[Measured], nbytes: int, rounds: int, setups: int, reps: int
) -> dict[str, dict[str, float]]:
    """Round-robin over the paths `reps` times, so load from elsewhere hits all of them alike.

    Throughput is the best run (other load only ever slows a run down); latency the run with the
    best p50; CPU per GiB the relay's CPU over all throughput runs.
    """
    out: dict[str, dict[str, float]] = {
        p.name: {
            "up": 0.0,
            "down": 0.0,
            "p50": float("inf"),
            "p99": float("inf"),
            "setup": float("inf"),
            "cpu": 0.0,
            "server_cpu": 0.0,
            "cpu_includes_client": float(p.cpu_includes_client),
        }
        for p in paths
    }
    for _ in range(reps):
        for path in paths:
            r = out[path.name]
            for op in ("up", "down"):
                values, cpu, server = path.measure(op, nbytes, rounds, setups)
                r[op] = max(r[op], values[0])
                r["cpu"] += cpu
                r["server_cpu"] += server
            (p50, p99), _, _ = path.measure("latency", nbytes, rounds, setups)
            if p50 < r["p50"]:
                r["p50"], r["p99"] = p50, p99
            (setup,), _, _ = path.measure("setup", nbytes, rounds, setups)
            r["setup"] = min(r["setup"], setup)
    for r in out.values():
        r["cpu"] = r["cpu"] / (2 * reps * nbytes / 2**30)
        r["server_cpu"] = r["server_cpu"] / (2 * reps * nbytes / 2**30)
    return out


@contextlib.contextmanager
def kubectl_forward(kubeconfig: str, namespace: str, pod: str) -> Iterator[tuple[int, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    cache = tempfile.mkdtemp(prefix="kubectl-cache-")
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            kubeconfig,
            "--cache-dir",
            cache,
            "-n",
            namespace,
            "port-forward",
            f"pod/{pod}",
            f"{local}:{REMOTE_PORT}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "Forwarding from" not in line:
            raise RuntimeError(
                f"kubectl port-forward failed: {line}{proc.stderr.read() if proc.stderr else ''}"
            )
        yield local, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def kubesim_pod(directory: Path, tls: bool) -> Iterator[tuple[str, str, str, int]]:
    """A kubesim subprocess running the target server in pod `bench-0`: (kubeconfig, namespace, pod, pid)."""
    sys.path.insert(0, str(ROOT / "tests" / "forward"))
    from kubernetes import client, config
    from podspecs import pod_manifest  # type: ignore[import-not-found]

    from kubesim.running import start_kubesim

    state = directory / ("kubesim-tls" if tls else "kubesim")
    sim = start_kubesim(state, tls=tls, token="bench-token" if tls else None)
    try:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(sim.kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(client.ApiClient(cfg))
        manifest = pod_manifest(
            "bench-0", dict(LABELS), ["python3", "-c", TARGET_SOURCE, str(REMOTE_PORT)], REMOTE_PORT
        )
        core.create_namespaced_pod("default", manifest)
        deadline = time.monotonic() + 60
        while True:
            pod = core.read_namespaced_pod("bench-0", "default")
            conditions = (pod.status.conditions if pod.status else None) or []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark pod never became Ready in kubesim")
            time.sleep(0.1)
        assert sim.process is not None
        yield str(sim.kubeconfig), "default", "bench-0", sim.process.pid
    finally:
        sim.stop()


def _kubesim_available() -> bool:
    try:
        from kubesim.kubelet import Kubelet  # noqa: F401
        from kubesim.running import start_kubesim  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def cluster_paths(
    kc: str, ns: str, pod: str, with_kubectl: bool, server_pid: int
) -> Iterator[list[Measured]]:
    """The official client (listener and socketpair), kubectl (optional) and nbd, through one API server."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(spawn("official-listener", kc, ns, pod))
        paths = [Measured(OFFICIAL, port=listener["port"], relay_pid=listener.pid, server_pid=server_pid)]
        in_process = stack.enter_context(spawn("official", kc, ns, pod))
        paths.append(Measured(OFFICIAL_SOCKETPAIR, role=in_process, server_pid=server_pid))
        if with_kubectl:
            local, pid = stack.enter_context(kubectl_forward(kc, ns, pod))
            paths.append(Measured("kubectl port-forward", port=local, relay_pid=pid, server_pid=server_pid))
        fwd = stack.enter_context(spawn("nbd", kc, ns))
        paths.append(Measured("nbd forward", port=fwd["port"], relay_pid=fwd.pid, server_pid=server_pid))
        yield paths


def run(quick: bool = False) -> list[Figure]:
    nbytes = (128 if quick else 1024) * 1024 * 1024
    rounds = 1000
    setups = 30 if quick else 100
    reps = 2 if quick else 3
    out: list[Figure] = []
    with spawn("target") as target, tempfile.TemporaryDirectory() as tmp:
        tport = target["port"]
        with (
            spawn("ws-server", str(tport)) as wss,
            spawn("ws-client", str(wss["port"])) as wsc,
            spawn("fake-api", str(tport), tmp) as api,
            cluster_paths(api["kubeconfig"], api["namespace"], api["pod"], False, api.pid) as fake_paths,
        ):
            base_paths = [
                Measured("raw loopback TCP", port=tport),
                Measured("plain aiohttp WebSocket hop", port=wsc["port"], relay_pid=wsc.pid),
            ]
            results = measure_interleaved(base_paths + fake_paths, nbytes, rounds, setups, reps)
        ws_hop = results["plain aiohttp WebSocket hop"]
        out += figures(results, server="one-hop fake v4 API server")
        if _kubesim_available():
            for tls, label in ((False, "kubesim http"), (True, "kubesim https+token")):
                with (
                    kubesim_pod(Path(tmp), tls) as (kc, ns, pod, pid),
                    cluster_paths(kc, ns, pod, True, pid) as paths,
                ):
                    sim = measure_interleaved(paths, nbytes, rounds, setups, reps)
                out += figures(
                    {**sim, "plain aiohttp WebSocket hop": ws_hop},
                    server=label,
                    skip_paths=("plain aiohttp WebSocket hop",),
                )
    return out


def figures(
    results: dict[str, dict[str, float]],
    server: str,
    skip_paths: tuple[str, ...] = (),
) -> list[Figure]:
    out: list[Figure] = []
    nbd = results["nbd forward"]
    ws = results["plain aiohttp WebSocket hop"]
    for path, r in results.items():
        if path in skip_paths:
            continue
        for key, label, unit, hib in (
            ("up", "throughput local->pod", "MB/s", True),
            ("down", "throughput pod->local", "MB/s", True),
            ("p50", "round trip p50", "ms", False),
            ("p99", "round trip p99", "ms", False),
            ("setup", "new connection p50", "ms", False),
            ("cpu", "relay CPU per GiB", "s", False),
            ("server_cpu", "API server CPU per GiB", "s", False),
        ):
            if r.get(key) != r.get(key):  # NaN: not measured for this path
                continue
            if key in ("cpu", "server_cpu") and path in ("raw loopback TCP", "plain aiohttp WebSocket hop"):
                continue
            if key == "cpu" and r.get("cpu_includes_client"):
                label = "relay CPU per GiB (incl. measuring client)"
            out.append(
                Figure(name=f"{path}: {label} [{server}]", value=r[key], unit=unit, higher_is_better=hib)
            )
    official = results.get(OFFICIAL)
    in_process = results.get(OFFICIAL_SOCKETPAIR)
    for key, label in (("up", "local->pod"), ("down", "pod->local")):
        out.append(
            Figure(
                name=f"nbd vs plain WebSocket hop: {label} [{server}]",
                value=nbd[key],
                unit="MB/s",
                baseline="plain aiohttp WebSocket hop",
                baseline_value=ws[key],
                target=">= 0.5x",
                met=nbd[key] >= 0.5 * ws[key],
                higher_is_better=True,
            )
        )
        if official:
            out.append(
                Figure(
                    name=f"nbd vs official client: {label} [{server}]",
                    value=nbd[key],
                    unit="MB/s",
                    baseline=OFFICIAL,
                    baseline_value=official[key],
                    target=">= 2x",
                    met=nbd[key] >= 2 * official[key],
                    higher_is_better=True,
                )
            )
        if in_process:
            out.append(
                Figure(
                    name=f"nbd vs official client's in-process socket (no target): {label} [{server}]",
                    value=nbd[key],
                    unit="MB/s",
                    baseline=OFFICIAL_SOCKETPAIR,
                    baseline_value=in_process[key],
                    higher_is_better=True,
                )
            )
        kubectl = results.get("kubectl port-forward")
        if kubectl:
            out.append(
                Figure(
                    name=f"nbd vs kubectl: {label} [{server}]",
                    value=nbd[key],
                    unit="MB/s",
                    baseline="kubectl port-forward",
                    baseline_value=kubectl[key],
                    target=">= 1x",
                    met=nbd[key] >= kubectl[key],
                    higher_is_better=True,
                )
            )
    if official:
        for key, label in (("cpu", "relay CPU per GiB"), ("server_cpu", "API server CPU per GiB")):
            out.append(
                Figure(
                    name=f"nbd vs official client: {label} (no target) [{server}]",
                    value=nbd[key],
                    unit="s",
                    baseline=OFFICIAL,
                    baseline_value=official[key],
                )
            )
    out.append(
        Figure(
            name=f"nbd added round trip p50 over plain WebSocket hop [{server}]",
            value=nbd["p50"] - ws["p50"],
            unit="ms",
            target="<= 1 ms",
            met=nbd["p50"] - ws["p50"] <= 1.0,
        )
    )
    out.append(
        Figure(
            name=f"nbd new connection setup p50 [{server}]",
            value=nbd["setup"],
            unit="ms",
            target="<= 20 ms",
            met=nbd["setup"] <= 20.0,
        )
    )
    return out


def _main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "target":
        role_target()
    elif role == "ws-server":
        role_ws_server(int(args[0]))
    elif role == "ws-client":
        role_ws_client(int(args[0]))
    elif role == "fake-api":
        role_fake_api(int(args[0]), args[1])
    elif role == "nbd":
        role_nbd(args[0], args[1])
    elif role == "official":
        role_official(args[0], args[1], args[2])
    elif role == "official-listener":
        role_official_listener(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    _main(sys.argv[1:])
