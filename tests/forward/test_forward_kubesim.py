"""Forwards against kubesim: real pod processes, the real wire protocols, injected faults."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import polling
import pytest
from podspecs import echo_pod, http_pod

from kubesim.testing import KubesimServer  # noqa: E402
from nbd.errors import FailedPrecondition  # noqa: E402
from nbd.forward import Forward  # noqa: E402
from nbd.kube import KubeClient, PodCache, load_target, open_exec  # noqa: E402
from nbd.status import ForwardState  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

NS = "default"
PORT = 8080


async def until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """`polling.until` with this file's longer default deadline (a kubesim pod behind the relay)."""
    return await polling.until(predicate, timeout, what, interval=0.02)


async def roundtrip(port: int, payload: bytes, timeout: float = 30) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def send() -> None:
            for i in range(0, len(payload), 65536):
                writer.write(payload[i : i + 65536])
                await writer.drain()

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
        await sender
        return got
    finally:
        writer.close()


@pytest.fixture
def cluster(kubesim_server: KubesimServer) -> KubesimServer:
    return kubesim_server


@pytest.fixture
async def kube(cluster: KubesimServer) -> AsyncIterator[KubeClient]:
    client = KubeClient(await load_target(str(cluster.kubeconfig), None, NS))
    yield client
    await client.aclose()


async def create(kube: KubeClient, manifest: dict[str, object]) -> None:
    await kube.run(kube.core.create_namespaced_pod, NS, manifest)


async def delete(kube: KubeClient, name: str) -> None:
    await kube.run(kube.core.delete_namespaced_pod, name, NS, grace_period_seconds=0)


async def started(kube: KubeClient, labels: dict[str, str], **options: object) -> Forward:
    opts: dict[str, object] = {"probe_path": None, "connect_timeout": 30.0}
    opts.update(options)
    fwd = Forward(kube, NS, labels, PORT, **opts)  # type: ignore[arg-type]
    await fwd.start()
    return fwd


async def test_http_to_a_pods_http_server(kube: KubeClient) -> None:
    labels = {"app": "web"}
    await create(kube, http_pod("web-0", labels, PORT))
    fwd = await started(kube, labels, probe_path="/", probe_interval=0.5)
    try:
        await fwd.pods.wait_ready_pod(30)
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 200"), answer[:200]
        await until(
            lambda: fwd.status().state == ForwardState.ACTIVE and fwd.status().last_probe is not None,
            what="a good probe",
        )
    finally:
        await fwd.stop()


async def test_200_concurrent_connections_keep_their_bytes(kube: KubeClient) -> None:
    labels = {"app": "echo"}
    await create(kube, echo_pod("echo-0", labels, PORT))
    fwd = await started(kube, labels)
    try:
        await fwd.pods.wait_ready_pod(30)
        payloads = [os.urandom(16 * 1024) + i.to_bytes(4, "big") for i in range(200)]
        answers = await asyncio.gather(*(roundtrip(fwd.local_port, p, 60) for p in payloads))
        assert answers == payloads
    finally:
        await fwd.stop()


async def _ready_time(cache: PodCache, name: str, timeout: float = 60) -> float:
    await until(lambda: cache.ready_pod() == name, timeout, what=f"pod {name} Ready")
    return asyncio.get_running_loop().time()


async def _first_success(port: int, deadline_s: float) -> float:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            if await roundtrip(port, b"ping", 5) == b"ping":
                return loop.time()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            if loop.time() > end:
                raise
        await asyncio.sleep(0.05)


async def test_deleted_and_recreated_pod(kube: KubeClient, cluster: KubesimServer) -> None:
    labels = {"app": "phoenix"}
    await create(kube, echo_pod("phoenix-a", labels, PORT))
    fwd = await started(kube, labels)
    watcher = PodCache(kube, NS, labels)
    await watcher.start()
    try:
        await fwd.pods.wait_ready_pod(30)
        port = fwd.local_port
        assert await roundtrip(port, b"before") == b"before"
        await delete(kube, "phoenix-a")
        await until(lambda: fwd.status().state == ForwardState.WAITING_FOR_POD, what="waiting for pod")
        await create(kube, echo_pod("phoenix-b", labels, PORT))
        ready_at = await _ready_time(watcher, "phoenix-b")
        ok_at = await _first_success(port, 10)
        assert fwd.local_port == port
        assert ok_at - ready_at <= 2.0
        # The same pod name recreated by the cluster (kubesim fault) is picked up too.
        cluster.admin.recreate_pod(NS, "phoenix-b")
        await asyncio.sleep(0.2)
        await _ready_time(watcher, "phoenix-b")
        assert await roundtrip(port, b"again", 10) == b"again"
    finally:
        await watcher.stop()
        await fwd.stop()


async def test_killed_pod_process_restarted_by_kubelet(kube: KubeClient, cluster: KubesimServer) -> None:
    labels = {"app": "lazarus"}
    await create(kube, echo_pod("lazarus-0", labels, PORT))
    fwd = await started(kube, labels)
    watcher = PodCache(kube, NS, labels)
    await watcher.start()
    try:
        await fwd.pods.wait_ready_pod(30)
        assert await roundtrip(fwd.local_port, b"one") == b"one"
        cluster.admin.kill_pod(NS, "lazarus-0")
        await until(lambda: watcher.ready_pod() is None, what="the pod to be not Ready")
        ready_at = await _ready_time(watcher, "lazarus-0")
        ok_at = await _first_success(fwd.local_port, 10)
        assert ok_at - ready_at <= 2.0
    finally:
        await watcher.stop()
        await fwd.stop()


async def test_dropped_streams_close_connections_cleanly(kube: KubeClient, cluster: KubesimServer) -> None:
    labels = {"app": "drop"}
    await create(kube, echo_pod("drop-0", labels, PORT))
    fwd = await started(kube, labels)
    try:
        await fwd.pods.wait_ready_pod(30)
        conns = [await asyncio.open_connection("127.0.0.1", fwd.local_port) for _ in range(5)]
        for reader, writer in conns:
            writer.write(b"hi")
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"hi"
        assert cluster.admin.drop_streams() >= 5
        for reader, writer in conns:
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        await until(lambda: fwd.status().open_connections == 0, what="connections forgotten")
        assert await roundtrip(fwd.local_port, b"fresh") == b"fresh"
    finally:
        await fwd.stop()


async def test_api_server_unavailable_for_10s(kube: KubeClient, cluster: KubesimServer) -> None:
    labels = {"app": "patient"}
    await create(kube, echo_pod("patient-0", labels, PORT))
    fwd = await started(kube, labels)
    try:
        await fwd.pods.wait_ready_pod(30)
        cluster.admin.unavailable(10)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await roundtrip(fwd.local_port, b"waited", 30) == b"waited"
        assert loop.time() - t0 >= 8.0
    finally:
        await fwd.stop()


async def test_port_taken_by_another_program(kube: KubeClient) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.raises(
            FailedPrecondition, match=f"port {taken} on 127.0.0.1 is in use by another program"
        ):
            await started(kube, {"app": "x"}, explicit_port=taken)


async def test_exec_stdin_to_stdout_and_exit_code(kube: KubeClient) -> None:
    labels = {"app": "exec"}
    await create(kube, echo_pod("exec-0", labels, PORT))
    cache = PodCache(kube, NS, labels)
    await cache.start()
    try:
        pod = await cache.wait_ready_pod(30)
    finally:
        await cache.stop()
    script = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d.upper()); sys.exit(7)"
    ex = await open_exec(kube.target, NS, pod, "main", ["python3", "-c", script])
    await ex.write_stdin(b"through the pod")
    assert await ex.close_stdin() is True
    assert await ex.wait(30) == 7
    assert await ex.read_stdout() == b"THROUGH THE POD"


@pytest.mark.parametrize("context", ["kubesim", "kubesim-cert"])
async def test_https_auth_paths(kubesim_factory: Callable[..., KubesimServer], context: str) -> None:
    sim = kubesim_factory(tls=True, token="s3cret")
    try:
        kube = KubeClient(await load_target(str(sim.kubeconfig), context, NS))
        try:
            cfg = kube.target.configuration
            assert (cfg.cert_file is not None) == (context == "kubesim-cert")
            labels = {"app": "tls"}
            await create(kube, echo_pod("tls-0", labels, PORT))
            fwd = await started(kube, labels)
            try:
                await fwd.pods.wait_ready_pod(30)
                payload = os.urandom(300_000)
                assert await roundtrip(fwd.local_port, payload) == payload
            finally:
                await fwd.stop()
            ex = await open_exec(kube.target, NS, "tls-0", None, ["python3", "-c", "print('tls ok')"])
            assert await ex.wait(30) == 0
            assert await ex.read_stdout() == b"tls ok\n"
        finally:
            await kube.aclose()
    finally:
        sim.stop()
