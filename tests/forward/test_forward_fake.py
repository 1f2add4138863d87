"""Forward behaviour against the in-process fake API server (v4 portforward, pod watch, faults)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from fakeapi import FakeApi, FakePod, echo_server, http_server
from polling import until

from nbd.errors import FailedPrecondition
from nbd.forward import Forward, ForwardRecord, choose_port
from nbd.kube import KubeClient
from nbd.status import ForwardState, ForwardStatus

pytestmark = pytest.mark.anyio

LABELS = {"app": "nb", "nbd.dev/notebook": "hello"}
REMOTE = 8888


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()


async def http_get(port: int, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    server, port = await echo_server()
    yield port
    server.close()


@pytest.fixture
async def forward_factory(kube: KubeClient) -> AsyncIterator[Callable[..., Awaitable[Forward]]]:
    made: list[Forward] = []

    async def make(**kwargs: object) -> Forward:
        options: dict[str, object] = {"probe_path": None, "connect_timeout": 5.0}
        options.update(kwargs)
        fwd = Forward(kube, "default", LABELS, REMOTE, **options)  # type: ignore[arg-type]
        await fwd.start()
        made.append(fwd)
        return fwd

    yield make
    for fwd in made:
        await fwd.stop()


async def test_bytes_round_trip_through_forward(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    assert await roundtrip(fwd.local_port, payload) == payload


async def test_concurrent_connections_keep_their_own_bytes(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory()
    payloads = [os.urandom(20_000 + i) for i in range(60)]
    answers = await asyncio.gather(*(roundtrip(fwd.local_port, p) for p in payloads))
    assert answers == payloads
    assert fake.portforward_requests == 60


async def test_http_through_forward(
    fake: FakeApi, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    server, port = await http_server(b"jupyter says hi")
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: port}))
    fwd = await forward_factory()
    answer = await http_get(fwd.local_port, "/api")
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"jupyter says hi")
    server.close()


async def test_error_channel_closes_only_that_connection(
    fake: FakeApi,
    echo: int,
    forward_factory: Callable[..., Awaitable[Forward]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pod = FakePod("nb-1", LABELS, {})  # nothing listens on the remote port
    fake.add_pod(pod)
    fwd = await forward_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no bytes
    writer.close()
    await until(lambda: "error forwarding port 8888" in caplog.text, what="the error to be logged")
    pod.ports[REMOTE] = echo  # the pod's server came up: the same listener works
    assert await roundtrip(fwd.local_port, b"again") == b"again"


async def test_pod_side_close_closes_local_connection(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    await fake.drop_streams()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await until(lambda: fwd.status().open_connections == 0, what="the connection to be forgotten")
    assert await roundtrip(fwd.local_port, b"new") == b"new"


async def test_connection_waits_for_a_ready_pod(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fwd = await forward_factory()
    await until(lambda: fwd.pods.synced, what="the pod list")
    assert fwd.status().state == ForwardState.WAITING_FOR_POD
    pending = asyncio.create_task(roundtrip(fwd.local_port, b"early"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}, ready=False))
    await asyncio.sleep(0.2)
    assert not pending.done()
    fake.set_ready("nb-1", True)
    assert await asyncio.wait_for(pending, 5) == b"early"
    assert fwd.status().state == ForwardState.ACTIVE and fwd.status().pod == "nb-1"


async def test_connection_gives_up_after_connect_timeout(
    fake: FakeApi, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fwd = await forward_factory(connect_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_api_server_503_is_waited_out(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory()
    await until(lambda: fwd.status().state == ForwardState.ACTIVE, what="active")
    fake.fail(503, 1.0)
    started = asyncio.get_running_loop().time()
    assert await roundtrip(fwd.local_port, b"patience") == b"patience"
    assert asyncio.get_running_loop().time() - started >= 0.8
    assert fake.portforward_requests == 1  # the 503s never reached the handler


async def test_recreated_pod_is_used_by_new_connections(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    server2, echo2 = await http_server(b"second pod")
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory()
    port = fwd.local_port
    assert await roundtrip(port, b"one") == b"one"
    fake.delete_pod("nb-1")
    await until(lambda: fwd.status().state == ForwardState.WAITING_FOR_POD, what="waiting")
    fake.add_pod(FakePod("nb-2", LABELS, {REMOTE: echo2}, created="2026-01-01T00:00:05Z"))
    await until(lambda: fwd.status().pod == "nb-2", what="the new pod")
    assert fwd.local_port == port
    assert (await http_get(port)).endswith(b"second pod")
    server2.close()


async def test_newest_ready_pod_wins(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    server2, port2 = await http_server(b"newer")
    fake.add_pod(FakePod("nb-old", LABELS, {REMOTE: echo}, created="2026-01-01T00:00:00Z"))
    fake.add_pod(FakePod("nb-new", LABELS, {REMOTE: port2}, created="2026-01-01T00:01:00Z"))
    fake.add_pod(FakePod("other", {"app": "x"}, {REMOTE: echo}, created="2026-01-01T00:02:00Z"))
    fwd = await forward_factory()
    await until(lambda: fwd.status().pod == "nb-new", what="newest pod")
    assert (await http_get(fwd.local_port)).endswith(b"newer")
    server2.close()


async def test_local_half_close_still_delivers_the_answer(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory(eof_linger=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    writer.write(b"last words")
    writer.write_eof()
    got = await asyncio.wait_for(reader.read(), 5)  # the answer, then EOF after the linger
    assert got == b"last words"
    writer.close()


async def test_rejected_credentials_show_in_status(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory()
    await until(lambda: fwd.status().state == ForwardState.ACTIVE, what="active")
    fake.token = "rotated"
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await until(lambda: fwd.status().state == ForwardState.ERROR, what="error state")
    assert "rejected your credentials" in fwd.status().message


async def test_status_changes_are_pushed(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    seen: list[ForwardStatus] = []
    fwd = await forward_factory()
    fwd.on_change(seen.append)
    await until(lambda: fwd.pods.synced, what="list")
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    await until(lambda: any(s.state == ForwardState.ACTIVE for s in seen), what="active pushed")
    fake.delete_pod("nb-1")
    await until(lambda: seen[-1].state == ForwardState.WAITING_FOR_POD, what="waiting pushed")
    assert seen[-1].local_port == fwd.local_port and seen[-1].remote_port == REMOTE


async def test_probe_through_the_tunnel(
    fake: FakeApi, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    server, port = await http_server(b"{}")
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: port}))
    fwd = await forward_factory(probe_path="/api", probe_interval=0.2)
    await until(lambda: fwd.status().last_probe is not None, what="a probe")
    assert fwd.status().state == ForwardState.ACTIVE
    server.close()
    await server.wait_closed()
    await until(
        lambda: (s := fwd.status()).state == ForwardState.ERROR and s.message.startswith("probe GET /api"),
        what="probe failure",
    )
    server, port2 = await http_server(b"{}")
    fake.pods["nb-1"].ports[REMOTE] = port2
    await until(lambda: fwd.status().state == ForwardState.ACTIVE, what="recovery")
    server.close()


async def test_explicit_port_taken_is_a_clear_error(kube: KubeClient) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        fwd = Forward(kube, "default", LABELS, REMOTE, explicit_port=taken, probe_path=None)
        with pytest.raises(FailedPrecondition) as info:
            await fwd.start()
        assert info.value.reason == "PortInUse"
        assert str(info.value) == (
            f"port {taken} on 127.0.0.1 is in use by another program; "
            "choose another with --port or stop that program"
        )


async def test_restored_forward_binds_the_same_port(fake: FakeApi, echo: int, kube: KubeClient) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    first = Forward(kube, "default", LABELS, REMOTE, local_port=choose_port(None, None), probe_path=None)
    await first.start()
    record = first.record()
    await first.stop()
    restored_record = ForwardRecord.from_json(record.to_json())
    assert restored_record == record
    again = Forward.from_record(kube, restored_record)
    await again.start()
    try:
        assert again.local_port == record.local_port
        assert again.record() == record
        assert await roundtrip(again.local_port, b"back") == b"back"
    finally:
        await again.stop()


async def test_stop_closes_listener_and_connections(fake: FakeApi, echo: int, kube: KubeClient) -> None:
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = Forward(kube, "default", LABELS, REMOTE, probe_path=None)
    await fwd.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    port = fwd.local_port
    await fwd.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert fwd.status().state == ForwardState.STOPPED


async def test_forward_recovers_when_the_cluster_comes_back(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    """The API server vanishes (laptop asleep, VPN down) and returns on the same address."""
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: echo}))
    fwd = await forward_factory(connect_timeout=15.0)
    await until(lambda: fwd.status().state == ForwardState.ACTIVE, what="active")
    port = fwd.local_port
    await fake.stop()
    await until(lambda: fwd.pods.last_error is not None, what="the watch to notice")
    assert fwd.pods.last_error is not None and fwd.pods.last_error.reason == "ClusterUnreachable"
    await until(
        lambda: (
            (s := fwd.status()).state == ForwardState.ERROR
            and s.message.startswith("cannot reach the cluster at ")
        ),
        what="error state",
    )
    pending = asyncio.create_task(roundtrip(port, b"after the nap"))
    await asyncio.sleep(0.5)
    assert not pending.done()
    await fake.start()  # same port, same pods
    assert await asyncio.wait_for(pending, 15) == b"after the nap"
    await until(lambda: fwd.pods.last_error is None, timeout=15, what="the watch to recover")
    assert fwd.local_port == port and fwd.status().state == ForwardState.ACTIVE


@pytest.mark.parametrize(
    ("selector", "remote"),
    [({}, REMOTE), (LABELS, 0), (LABELS, 70000)],
)
async def test_invalid_forward_definitions(kube: KubeClient, selector: dict[str, str], remote: int) -> None:
    from nbd.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        Forward(kube, "default", selector, remote)


async def test_probe_of_a_port_that_does_not_speak_http(
    fake: FakeApi, echo: int, forward_factory: Callable[..., Awaitable[Forward]]
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-not-http\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    fake.add_pod(FakePod("nb-1", LABELS, {REMOTE: server.sockets[0].getsockname()[1]}))
    fwd = await forward_factory(probe_path="/api", probe_interval=0.2)
    await until(lambda: fwd.status().last_probe is not None, what="a probe")
    status = fwd.status()
    assert status.state == ForwardState.ERROR
    assert (
        status.message
        == f"probe GET /api through 127.0.0.1:{fwd.local_port} failed: the pod's port 8888 did not answer HTTP"
    )
    server.close()
