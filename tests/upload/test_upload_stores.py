"""The uploader against the other stores: S3's real error answers (from a stub, since the emulator
does not give them), and the in-cluster store through a real API server's service proxy (kubesim
over TLS, with the kubeconfig's credentials and CA, RBAC on the proxy)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from nbd.kube import KubeClient
from nbd.kube.target import load_target
from nbd.launch.building import through_api_server
from nbd.upload import (
    BadDigest,
    RetryPolicy,
    SignedURL,
    UploadFailed,
    UploadProgress,
    UploadRejected,
    upload,
)
from nbd.upload.policy import url_expiry
from nbd_controller.incluster import InClusterStore
from nbd_controller.storage import CONTENT_TYPE

from .stub import StubGCS

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, stall_timeout=2, connect_timeout=5, response_timeout=10)
REPO = Path(__file__).resolve().parents[2]


def s3_error(code: str, message: str, **extra: str) -> bytes:
    """An error body exactly as S3 writes it (RequestId and HostId, and the code's own fields)."""
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{fields}"
        "<RequestId>4442587FB7D0A2F9</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>"
    ).encode()


def spooled(tmp_path: Path, size: int) -> tuple[str, str, str]:
    data = (hashlib.sha256(b"ctx").digest() * (size // 32 + 1))[:size]
    path = tmp_path / "ctx.tar.gz"
    path.write_bytes(data)
    digest = hashlib.md5(data)
    return str(path), base64.b64encode(digest.digest()).decode(), digest.hexdigest()


def _run(answers: list[Any], body: Any) -> StubGCS:
    async def main() -> StubGCS:
        stub = await StubGCS(answers=list(answers)).start()
        try:
            await body(stub)
        finally:
            await stub.stop()
        return stub

    return asyncio.run(main())


def _presigned(base: str, n: int, expires_in: int = 900, signed_at: float | None = None) -> str:
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at if signed_at is not None else time.time()))
    return (
        f"{base}/bucket/contexts/x.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k%2F20261203%2Fus-east-1"
        f"%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires_in}"
        f"&X-Amz-SignedHeaders=content-md5%3Bcontent-type%3Bhost&X-Amz-Signature={n:064x}"
    )


@pytest.mark.parametrize(
    ("first", "outcome"),
    [
        (
            (
                400,
                s3_error(
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                    ExpectedDigest="x",
                    CalculatedDigest="y",
                ),
            ),
            BadDigest,
        ),
        (
            (
                403,
                s3_error(
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided. "
                    "Check your key and signing method.",
                    StringToSign="AWS4-HMAC-SHA256",
                ),
            ),
            "refresh",
        ),
        ((403, s3_error("AccessDenied", "Request has expired", Expires="2026-12-03T10:00:00Z")), "refresh"),
        ((503, s3_error("SlowDown", "Please reduce your request rate.")), "retry"),
        (
            (400, s3_error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")),
            UploadRejected,
        ),
    ],
)
def test_s3_error_answers(tmp_path: Path, first: tuple[int, bytes], outcome: Any) -> None:
    path, md5_b64, _ = spooled(tmp_path, 50_000)

    async def body(stub: StubGCS) -> None:
        given: list[str] = []

        async def get_url() -> SignedURL:
            given.append(_presigned(stub.url, len(given)))
            return SignedURL(given[-1])

        if isinstance(outcome, type):
            with pytest.raises(outcome) as caught:
                await upload(path, md5_b64, get_url, policy=FAST)
            assert caught.value.store_code == parse_code(first[1])  # type: ignore[attr-defined]
            assert len(given) == 1
        else:
            result = await upload(path, md5_b64, get_url, policy=FAST)
            assert (result.url_refreshes, result.attempts) == ((1, 2) if outcome == "refresh" else (0, 2))

    _run([first, (200, b"")], body)


def parse_code(body: bytes) -> str:
    return body.split(b"<Code>")[1].split(b"</Code>")[0].decode()


def test_an_s3_url_about_to_expire_is_replaced_before_use(tmp_path: Path) -> None:
    path, md5_b64, _ = spooled(tmp_path, 1000)

    async def body(stub: StubGCS) -> None:
        given: list[str] = []

        async def get_url() -> SignedURL:
            # The first URL was signed 15 minutes ago: its X-Amz-Date + X-Amz-Expires is now.
            url = _presigned(stub.url, len(given), signed_at=time.time() - 900 if not given else None)
            given.append(url)
            return SignedURL(url)

        result = await upload(path, md5_b64, get_url, policy=FAST)
        assert result.url_refreshes == 1 and len(given) == 2

    stub = _run([(200, b"")], body)
    assert len(stub.seen) == 1  # the expired URL was never sent
    assert url_expiry(_presigned("http://h", 0, 900, signed_at=1_000_000)) == 1_000_900


# --- the in-cluster store through the API server -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def proxied_store(kubesim_factory: Any, tmp_path: Path) -> Iterator[tuple[InClusterStore, Path, Path, int]]:
    """An in-cluster store behind kubesim's (TLS) service proxy; kubeconfigs of alice (who may use
    it through the manifests' Role) and of mallory (under RBAC with no binding but her group's)."""
    port = _free_port()
    store = InClusterStore(
        str(tmp_path / "store"), "contexts", "nbd-system/nbd-store:http", f"http://127.0.0.1:{port}", 1 << 30
    )
    store.serve("127.0.0.1", port)
    server = kubesim_factory(
        tls=True,
        kubelet=False,
        extra_tokens={"alice-token": "alice"},
        extra_args=["--rbac-user", "alice", "--host-service", f"nbd-system/nbd-store={port}"],
    )
    api = server.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "nbd-system"}})
    core.create_namespaced_service(
        "nbd-system",
        {
            "metadata": {"name": "nbd-store"},
            "spec": {
                "selector": {"app.kubernetes.io/name": "nbd-controller"},
                "ports": [{"name": "http", "port": 8080}],
            },
        },
    )
    rbac = client.RbacAuthorizationV1Api(api)
    docs = [
        d for d in yaml.safe_load_all((REPO / "cluster" / "manifests" / "rbac-user.yaml").read_text()) if d
    ]
    role = next(d for d in docs if d["kind"] == "Role")
    rbac.create_namespaced_role("nbd-system", role)
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    rbac.create_namespaced_role_binding("nbd-system", binding)
    config = yaml.safe_load(Path(server.kubeconfig).read_text())
    config["users"][0]["user"] = {"token": "alice-token"}
    alice = tmp_path / "alice.kubeconfig"
    alice.write_text(yaml.safe_dump(config))
    try:
        yield store, alice, Path(server.kubeconfig), port
    finally:
        store.close()


async def _upload_as(
    kubeconfig: Path,
    store: InClusterStore,
    path: str,
    md5_b64: str,
    md5: str,
    context: str | None = None,
    **kw: Any,
) -> Any:
    kube = KubeClient(await load_target(str(kubeconfig), context, None))
    try:

        async def get_url() -> SignedURL:
            return SignedURL(store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)))

        return await upload(
            path, md5_b64, get_url, policy=FAST, resolve=through_api_server(kube.transport), **kw
        )
    finally:
        await kube.aclose()


def test_upload_through_the_api_server_with_the_kubeconfig_credentials(
    proxied_store: Any, tmp_path: Path
) -> None:
    store, alice, _, _ = proxied_store
    path, md5_b64, md5 = spooled(tmp_path, 6 << 20)
    seen: list[UploadProgress] = []
    result = asyncio.run(_upload_as(alice, store, path, md5_b64, md5, progress=seen.append))
    assert result.attempts == 1
    assert store.stat(md5) == md5
    assert Path(store.root, "contexts", md5 + ".tar.gz").read_bytes() == Path(path).read_bytes()
    assert seen[-1].done_bytes == seen[-1].total_bytes == 6 << 20 and len(seen) >= 2


def test_upload_through_the_api_server_with_a_client_certificate(proxied_store: Any, tmp_path: Path) -> None:
    store, _, admin_kubeconfig, _ = proxied_store
    path, md5_b64, md5 = spooled(tmp_path, 1 << 20)
    # kubesim's kubeconfig has a context whose user is a TLS client certificate, no token.
    asyncio.run(_upload_as(admin_kubeconfig, store, path, md5_b64, md5, context="kubesim-cert"))
    assert store.stat(md5) == md5


def test_bad_digest_through_the_api_server_stores_nothing(proxied_store: Any, tmp_path: Path) -> None:
    store, alice, _, _ = proxied_store
    path, _, md5 = spooled(tmp_path, 100_000)
    Path(path).write_bytes(b"changed after packaging" + Path(path).read_bytes()[23:])
    with pytest.raises(BadDigest):
        asyncio.run(_upload_as(alice, store, path, base64.b64encode(bytes.fromhex(md5)).decode(), md5))
    assert store.stat(md5) is None and store.contexts() == []


def test_a_user_the_api_server_forbids_gets_a_message_naming_the_role(
    proxied_store: Any, tmp_path: Path
) -> None:
    store, alice, _, _ = proxied_store
    # Alice's group binding is what allows her: without the Role's RoleBinding she is refused.
    path, md5_b64, md5 = spooled(tmp_path, 1000)
    _, _, admin_kubeconfig, _ = proxied_store
    from kubernetes import config as kconfig

    rbac = client.RbacAuthorizationV1Api(kconfig.new_client_from_config(config_file=str(admin_kubeconfig)))
    rbac.delete_namespaced_role_binding("nbd-store-upload", "nbd-system")
    with pytest.raises(UploadRejected) as caught:
        asyncio.run(_upload_as(alice, store, path, md5_b64, md5))
    assert caught.value.reason == "StoreProxyForbidden"
    assert "nbd-store-upload" in str(caught.value) and "services/proxy" in str(caught.value)


def test_a_stopped_store_is_retried_then_fails(proxied_store: Any, tmp_path: Path) -> None:
    store, alice, _, _ = proxied_store
    store.close()  # the Service's backend is gone: the API server answers 503
    path, md5_b64, md5 = spooled(tmp_path, 1000)
    with pytest.raises(UploadFailed) as caught:
        asyncio.run(_upload_as(alice, store, path, md5_b64, md5))
    assert caught.value.status == 503 and caught.value.store_code == "ServiceUnavailable"


def test_an_expired_signature_through_the_proxy_asks_for_a_fresh_url(
    proxied_store: Any, tmp_path: Path
) -> None:
    store, alice, _, _ = proxied_store
    path, md5_b64, md5 = spooled(tmp_path, 1000)

    async def main() -> Any:
        kube = KubeClient(await load_target(str(alice), None, None))
        given: list[str] = []

        async def get_url() -> SignedURL:
            ttl = timedelta(seconds=-60) if not given else timedelta(minutes=15)
            given.append(store.signed_put_url(md5, CONTENT_TYPE, ttl))
            return SignedURL(
                given[-1], expires_at=time.time() + 900
            )  # the clock of the cluster says otherwise

        try:
            result = await upload(
                path, md5_b64, get_url, policy=FAST, resolve=through_api_server(kube.transport)
            )
        finally:
            await kube.aclose()
        return result, given

    result, given = asyncio.run(main())
    assert result.url_refreshes == 1 and len(given) == 2 and store.stat(md5) == md5


def test_without_a_cluster_a_path_url_is_rejected(tmp_path: Path) -> None:
    path, md5_b64, _ = spooled(tmp_path, 10)

    async def get_url() -> SignedURL:
        return SignedURL(
            "/api/v1/namespaces/nbd-system/services/nbd-store:http/proxy/contexts/x?X-Nbd-Expires=9999999999"
        )

    with pytest.raises(UploadRejected, match="no cluster"):
        asyncio.run(upload(path, md5_b64, get_url, policy=FAST))
