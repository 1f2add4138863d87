"""Uploads through an HTTP proxy: which proxy applies (by table, from the environment), and real
uploads through a forward proxy on loopback to a plain-HTTP store and, by CONNECT, to a TLS one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nbd.upload import RetryPolicy, SignedURL, UploadRejected, upload
from nbd.upload.proxy import Proxy, ProxySettingError, proxy_for

from .proxyserver import ForwardProxy
from .stub import StubGCS
from .test_http import self_signed

BASIC_UP = "Basic " + base64.b64encode(b"u:p w").decode()
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, stall_timeout=2, connect_timeout=2, response_timeout=5)
URL = "https://storage.googleapis.com/bucket/o?X-Goog-Signature=s"


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        (URL, {}, None),
        (URL, {"HTTPS_PROXY": "http://proxy:3128"}, Proxy("proxy", 3128, None, "HTTPS_PROXY")),
        (
            URL,
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"},
            Proxy("low", 1, None, "https_proxy"),
        ),
        (URL, {"HTTPS_PROXY": "proxy:8080"}, Proxy("proxy", 8080, None, "HTTPS_PROXY")),  # no scheme: http
        (URL, {"HTTPS_PROXY": "http://proxy"}, Proxy("proxy", 80, None, "HTTPS_PROXY")),
        (URL, {"HTTP_PROXY": "http://proxy:3128"}, None),  # HTTP_PROXY is for http:// URLs only
        ("http://127.0.0.1:4443/b/o", {"HTTP_PROXY": "http://p:1"}, Proxy("p", 1, None, "HTTP_PROXY")),
        (URL, {"ALL_PROXY": "http://all:9"}, Proxy("all", 9, None, "ALL_PROXY")),
        (URL, {"HTTPS_PROXY": "http://u:p%20w@proxy:3128"}, Proxy("proxy", 3128, BASIC_UP, "HTTPS_PROXY")),
        (URL, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "storage.googleapis.com"}, None),
        (URL, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "googleapis.com"}, None),  # subdomains too
        (URL, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".googleapis.com"}, None),
        (URL, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*.googleapis.com"}, None),
        (URL, {"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}, None),
        (
            URL,
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "apis.com"},
            Proxy("p", 1, None, "HTTPS_PROXY"),
        ),  # not a suffix on a dot
        (
            URL,
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "storage.googleapis.com:8443"},
            Proxy("p", 1, None, "HTTPS_PROXY"),
        ),
        (URL, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "x, storage.googleapis.com:443"}, None),
        ("https://10.1.2.3/b", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        (
            "https://11.1.2.3/b",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"},
            Proxy("p", 1, None, "HTTPS_PROXY"),
        ),
        ("https://[::1]:9/b", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "::1"}, None),
        ("https://[::1]:9/b", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "[::1]:9"}, None),
    ],
)
def test_which_proxy_applies(url: str, env: dict[str, str], expected: Proxy | None) -> None:
    assert proxy_for(url, env) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://proxy:443", "HTTPS_PROXY=https://… is not supported"),
        ("socks5://proxy:1080", "HTTPS_PROXY=socks5://… is not supported"),
        ("http://proxy:port", "has a bad port"),
        ("http://", "names no proxy host"),
    ],
)
def test_unusable_proxy_settings_name_the_variable(value: str, message: str) -> None:
    with pytest.raises(ProxySettingError, match=message):
        proxy_for(URL, {"HTTPS_PROXY": value})


def _spooled(tmp_path: Path, size: int) -> tuple[str, str, bytes]:
    data = (hashlib.sha256(b"proxy").digest() * (size // 32 + 1))[:size]
    path = tmp_path / "ctx.tar.gz"
    path.write_bytes(data)
    return str(path), base64.b64encode(hashlib.md5(data).digest()).decode(), data


def _fixed(url: str) -> Any:
    async def get_url() -> SignedURL:
        return SignedURL(url, expires_at=time.time() + 900)

    return get_url


def test_a_plain_http_store_through_http_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, md5, data = _spooled(tmp_path, 3 << 20)

    async def main() -> tuple[ForwardProxy, StubGCS]:
        proxy, stub = (
            await ForwardProxy(credentials="Basic " + base64.b64encode(b"me:secret").decode()).start(),
            await StubGCS().start(),
        )
        monkeypatch.setenv("HTTP_PROXY", f"http://me:secret@127.0.0.1:{proxy.port}")
        try:
            await upload(path, md5, _fixed(f"{stub.url}/b/o?X-Goog-Signature=s"), policy=FAST)
        finally:
            await stub.stop()
            await proxy.stop()
        return proxy, stub

    proxy, stub = asyncio.run(main())
    assert proxy.seen == [f"PUT {stub.url}/b/o?X-Goog-Signature=s HTTP/1.1"]
    assert stub.committed["/b/o"] == data
    assert "Proxy-Authorization" not in stub.seen[0].headers  # the proxy's credentials stay with the proxy


def _tls_store(
    tmp_path: Path, received: list[bytes]
) -> tuple[web.Application, ssl.SSLContext, ssl.SSLContext]:
    cert, key = self_signed(tmp_path)

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_put("/b/o", handler)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    return app, server_ctx, ssl.create_default_context(cafile=cert)


@pytest.mark.parametrize(
    "case",
    ["tunnel", "tunnel_with_credentials", "no_proxy", "needs_credentials", "forbidden", "https_proxy_url"],
)
def test_a_tls_store_through_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    path, md5, data = _spooled(tmp_path, 2 << 20)
    received: list[bytes] = []
    app, server_ctx, client_ctx = _tls_store(tmp_path, received)
    # The uploader verifies the store's certificate with the default context: trust the test's CA.
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: client_ctx)

    async def main() -> tuple[ForwardProxy, int, BaseException | None]:
        proxy = await ForwardProxy(
            credentials=BASIC_UP if case in ("needs_credentials", "tunnel_with_credentials") else None,
            refuse_connect=case == "forbidden",
        ).start()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        userinfo = "u:p%20w@" if case == "tunnel_with_credentials" else ""
        monkeypatch.setenv(
            "HTTPS_PROXY",
            f"https://127.0.0.1:{proxy.port}"
            if case == "https_proxy_url"
            else f"http://{userinfo}127.0.0.1:{proxy.port}",
        )
        if case == "no_proxy":
            monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        error: BaseException | None = None
        try:
            await upload(
                path, md5, _fixed(f"https://127.0.0.1:{port}/b/o?X-Goog-Signature=secret"), policy=FAST
            )
        except UploadRejected as e:
            error = e
        finally:
            await runner.cleanup()
            await proxy.stop()
        return proxy, port, error

    proxy, port, error = asyncio.run(main())
    if case in ("tunnel", "tunnel_with_credentials"):
        assert error is None and received == [data]
        # The proxy saw where to, never the signed URL: that travels inside the TLS tunnel.
        assert proxy.seen == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
    elif case == "no_proxy":
        assert error is None and received == [data] and proxy.seen == []
    else:
        assert error is not None and received == [] and "\n" not in str(error)
        message = str(error)
        if case == "needs_credentials":
            assert error.reason == "ProxyAuthenticationRequired"
            assert message.endswith(
                f"the proxy asks for credentials; put them in HTTPS_PROXY as "
                f"http://USER:PASSWORD@127.0.0.1:{proxy.port}"
            )
            assert "secret" not in message
        elif case == "forbidden":
            assert error.reason == "ProxyForbidden" and "add 127.0.0.1 to NO_PROXY" in message
        else:
            assert error.reason == "ProxySetting" and proxy.seen == []
            assert message.startswith("HTTPS_PROXY=https://… is not supported")
