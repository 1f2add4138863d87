"""KubeClient, the aiohttp transport (auth, TLS), PodCache and exec against the fake API server."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from certs import make_pki
from fakeapi import FakeApi, FakePod
from polling import until

from nbd.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NbdError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from nbd.kube import (
    NOTEBOOK,
    KubeClient,
    PodCache,
    exit_code_from_status,
    load_target,
    open_channel,
    open_exec,
)
from nbd.kube import transport as transport_module
from nbd.kube.transport import transport_for

pytestmark = pytest.mark.anyio

LABELS = {"app": "nb"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def kube(fake: FakeApi, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = KubeClient(await load_target(str(fake.kubeconfig(tmp_path)), None, None))
    yield client
    await client.aclose()


async def test_run_calls_the_blocking_client_in_threads(fake: FakeApi, kube: KubeClient) -> None:
    fake.add_pod(FakePod("p1", LABELS, {}))
    pods = await kube.run(kube.core.list_namespaced_pod, "default", label_selector="app=nb")
    assert [p.metadata.name for p in pods.items] == ["p1"]


async def test_run_maps_unauthorized(fake: FakeApi, kube: KubeClient) -> None:
    fake.token = "other"
    with pytest.raises(PermissionDenied) as info:
        await kube.run(kube.core.list_namespaced_pod, "default")
    assert info.value.reason == "Unauthorized"


async def test_run_maps_a_missing_crd(fake: FakeApi, kube: KubeClient) -> None:
    with pytest.raises(FailedPrecondition) as info:
        await kube.run(
            kube.custom.list_namespaced_custom_object,
            "nbd.dev",
            "v1alpha1",
            "default",
            "notebooks",
            nbd_resource=NOTEBOOK,
        )
    assert info.value.reason == "CRDNotInstalled"


async def test_run_maps_an_unreachable_cluster(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    api = FakeApi()
    api.url = f"http://127.0.0.1:{port}"
    kube = KubeClient(await load_target(str(api.kubeconfig(tmp_path)), None, None))
    kube.target.configuration.retries = 0
    try:
        with pytest.raises(Unavailable) as info:
            await kube.run(kube.core.list_namespaced_pod, "default", _request_timeout=5)
        assert info.value.message.startswith(f"cannot reach the cluster at http://127.0.0.1:{port}: ")
        assert info.value.message.endswith("; check the context/VPN")
        with pytest.raises(Unavailable, match="cannot reach the cluster"):
            await kube.transport.get_json("/api/v1/namespaces/default/pods")
        with pytest.raises(Unavailable, match="cannot reach the cluster"):
            await open_channel(
                kube.target, "default", "p", "portforward", [("ports", "1")], ["v4.channel.k8s.io"]
            )
    finally:
        await kube.aclose()


async def test_channel_errors_carry_the_servers_message(fake: FakeApi, kube: KubeClient) -> None:
    with pytest.raises(NotFound, match='pods "ghost" not found'):
        await open_channel(
            kube.target, "default", "ghost", "portforward", [("ports", "1")], ["v4.channel.k8s.io"]
        )
    fake.fail(503, 5)
    with pytest.raises(Unavailable) as info:
        await open_channel(
            kube.target, "default", "ghost", "portforward", [("ports", "1")], ["v4.channel.k8s.io"]
        )
    assert info.value.reason == "ServerUnavailable"


async def test_exec_plugin_token_is_refreshed(
    fake: FakeApi, kube: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "AUTH_REFRESH_SECONDS", 0.0)
    calls: list[int] = []
    cfg = kube.target.configuration

    def hook(configuration: object) -> None:
        calls.append(1)
        cfg.api_key["BearerToken"] = f"Bearer {fake.token}"

    cfg.refresh_api_key_hook = hook
    fake.add_pod(FakePod("p1", LABELS, {}))
    assert (await kube.transport.get_json("/api/v1/namespaces/default/pods"))["items"]
    fake.token = "rotated-by-the-plugin"
    assert (await kube.transport.get_json("/api/v1/namespaces/default/pods"))["items"]
    assert len(calls) >= 2


async def test_static_token_is_not_reloaded(fake: FakeApi, kube: KubeClient) -> None:
    for _ in range(3):
        await kube.transport.get_json("/api/v1/namespaces/default/pods")
    assert kube.transport.auth_header.__self__ is kube.transport  # one transport reused
    assert transport_for(kube.target) is kube.transport


async def test_pod_cache_follows_the_watch(fake: FakeApi, kube: KubeClient) -> None:
    cache = PodCache(kube, "default", LABELS)
    changes: list[str] = []
    cache.on_change(lambda c: changes.append(f"{c.kind}:{c.pod}:{c.ready_pod}"))
    fake.add_pod(FakePod("a", LABELS, {}, ready=False))
    await cache.start()
    try:
        assert await cache.wait_synced(5)
        with pytest.raises(DeadlineExceeded) as info:
            await cache.wait_ready_pod(0.2)
        assert info.value.reason == "PodNotReady"
        assert "no Ready pod matching app=nb in namespace default after 0.2 s" in info.value.message
        waiter = asyncio.create_task(cache.wait_ready_pod(5))
        fake.set_ready("a", True)
        assert await waiter == "a"
        fake.add_pod(FakePod("other", {"app": "x"}, {}))
        fake.add_pod(FakePod("b", LABELS, {}, created="2026-01-02T00:00:00Z"))
        await until(lambda: cache.ready_pod() == "b", what="newest pod")
        assert "other" not in cache.pods
        fake.expire_watches()  # 410: the cache re-lists and stays correct
        fake.delete_pod("b")
        await until(lambda: cache.ready_pod() == "a", what="after re-list")
        assert any(c.startswith("RELISTED") for c in changes[1:])
    finally:
        await cache.stop()


async def test_pod_cache_survives_api_outages(fake: FakeApi, kube: KubeClient) -> None:
    cache = PodCache(kube, "default", "app=nb")
    await cache.start()
    try:
        assert await cache.wait_synced(5)
        fake.fail(503, 0.6)
        await fake.drop_streams()
        await until(lambda: cache.last_error is not None, what="the error to be seen")
        assert cache.last_error is not None and cache.last_error.reason == "ServerUnavailable"
        fake.add_pod(FakePod("late", LABELS, {}))
        assert await cache.wait_ready_pod(10) == "late"
        await until(lambda: cache.last_error is None, what="the error to clear")
    finally:
        await cache.stop()


@pytest.mark.parametrize("protocols", [("v5.channel.k8s.io",), ("v4.channel.k8s.io",)])
async def test_exec_stdin_stdout_and_exit_code(
    fake: FakeApi, kube: KubeClient, protocols: tuple[str, ...]
) -> None:
    fake.exec_protocols = protocols
    fake.add_pod(FakePod("p1", LABELS, {}))
    script = "import sys; data = sys.stdin.buffer.read(5); sys.stdout.buffer.write(data[::-1]); sys.stderr.write('err'); sys.exit(3)"
    ex = await open_exec(kube.target, "default", "p1", None, [sys.executable, "-c", script])
    assert ex.protocol == protocols[0]
    await ex.write_stdin(b"hello")
    assert await ex.readexactly_stdout(5) == b"olleh"
    assert await ex.wait(10) == 3
    assert await ex.read_stderr() == b"err"
    assert await ex.read_stdout() == b""


async def test_exec_close_stdin_v5(fake: FakeApi, kube: KubeClient) -> None:
    fake.add_pod(FakePod("p1", LABELS, {}))
    ex = await open_exec(kube.target, "default", "p1", None, ["cat"])
    payload = bytes(range(256)) * 4096
    writer = asyncio.create_task(ex.write_stdin(payload))
    got = bytearray()
    while len(got) < len(payload):
        got += await ex.read_stdout(1 << 20)
    await writer
    assert await ex.close_stdin() is True
    assert await ex.wait(10) == 0
    assert bytes(got) == payload


async def test_exec_without_a_command_is_refused(kube: KubeClient) -> None:
    with pytest.raises(InvalidArgument):
        await open_exec(kube.target, "default", "p1", None, [])


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"status": "Success"}, 0),
        (
            {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
            },
            42,
        ),
    ],
)
def test_exit_code_from_status(status: dict[str, object], code: int) -> None:
    assert exit_code_from_status(status) == code


def test_exit_status_without_code_is_an_error() -> None:
    with pytest.raises(NbdError, match="exec failed: executable not found"):
        exit_code_from_status(
            {"status": "Failure", "reason": "InternalError", "message": "executable not found"}
        )


# -- TLS: bearer token and client certificates ------------------------------------------------


def server_context(pki_dir: Path, require_client_cert: bool) -> ssl.SSLContext:
    pki = make_pki(pki_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


@pytest.mark.parametrize("mode", ["token", "client-cert", "insecure"])
async def test_tls_auth_paths(tmp_path: Path, mode: str) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    api = FakeApi(
        ssl_context=server_context(pki_dir, mode == "client-cert"), client_cert_required=mode == "client-cert"
    )
    await api.start()
    try:
        if mode == "token":
            path = api.kubeconfig(tmp_path, cluster_extra={"certificate-authority": str(pki_dir / "ca.crt")})
        elif mode == "client-cert":
            path = api.kubeconfig(
                tmp_path,
                cluster_extra={"certificate-authority": str(pki_dir / "ca.crt")},
                user={
                    "client-certificate": str(pki_dir / "client.crt"),
                    "client-key": str(pki_dir / "client.key"),
                },
            )
        else:
            path = api.kubeconfig(tmp_path, cluster_extra={"insecure-skip-tls-verify": True})
        kube = KubeClient(await load_target(str(path), None, None))
        try:
            api.add_pod(FakePod("p1", LABELS, {}))
            listed = await kube.run(kube.core.list_namespaced_pod, "default")
            assert [p.metadata.name for p in listed.items] == ["p1"]
            assert (await kube.transport.get_json("/api/v1/namespaces/default/pods"))["items"]
            ex = await open_exec(kube.target, "default", "p1", None, ["echo", "over tls"])
            assert await ex.wait(10) == 0
            assert await ex.read_stdout() == b"over tls\n"
        finally:
            await kube.aclose()
    finally:
        await api.stop()


async def test_tls_with_an_unknown_ca_is_named(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    api = FakeApi(ssl_context=server_context(pki_dir, False))
    await api.start()
    try:
        kube = KubeClient(
            await load_target(str(api.kubeconfig(tmp_path)), None, None)
        )  # no CA: system bundle
        try:
            with pytest.raises(Unavailable) as info:
                await kube.transport.get_json("/api/v1/namespaces/default/pods")
            assert info.value.reason == "TLSError"
        finally:
            await kube.aclose()
    finally:
        await api.stop()


async def test_exec_credential_plugin_with_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real exec plugin: its short-lived token is re-fetched before expiry, for both clients."""
    import datetime

    monkeypatch.setattr(transport_module, "AUTH_REFRESH_SECONDS", 0.0)
    current = tmp_path / "current-token"
    current.write_text("tok-1")
    calls = tmp_path / "calls"
    plugin = tmp_path / "plugin.py"
    expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=2)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    plugin.write_text(
        "import json, pathlib\n"
        f"pathlib.Path({str(calls)!r}).open('a').write('x')\n"
        f"token = pathlib.Path({str(current)!r}).read_text()\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential',\n"
        f"                  'status': {{'token': token, 'expirationTimestamp': {expiry!r}}}}}))\n"
    )
    api = FakeApi(token="tok-1")
    await api.start()
    try:
        exec_user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": sys.executable,
                "args": [str(plugin)],
                "interactiveMode": "Never",
            }
        }
        kube = KubeClient(await load_target(str(api.kubeconfig(tmp_path, user=exec_user)), None, None))
        try:
            api.add_pod(FakePod("p1", LABELS, {}))
            assert (await kube.transport.get_json("/api/v1/namespaces/default/pods"))["items"]
            # The credential rotates; the plugin hands out the new one, the server accepts only it.
            current.write_text("tok-2")
            api.token = "tok-2"
            assert (await kube.transport.get_json("/api/v1/namespaces/default/pods"))["items"]
            listed = await kube.run(kube.core.list_namespaced_pod, "default")
            assert [p.metadata.name for p in listed.items] == ["p1"]
            assert len(calls.read_text()) >= 3
        finally:
            await kube.aclose()
    finally:
        await api.stop()
