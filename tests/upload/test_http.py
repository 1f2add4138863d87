"""The minimal HTTP/1.1 PUT: over TLS (sendfile falls back to reads and writes) and its parsing."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nbd.upload.http import HTTPProtocolError, put_file


def self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def test_put_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    data = bytes(range(256)) * 40_000  # ≈ 10 MB
    (tmp_path / "body").write_bytes(data)
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200, text="ok")

    async def main() -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_put("/b/o", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client_ctx = ssl.create_default_context(cafile=cert)
        sent: list[int] = []
        try:
            status, body = await put_file(
                f"https://127.0.0.1:{port}/b/o?X-Goog-Signature=x",
                {"Content-Type": "application/octet-stream"},
                str(tmp_path / "body"),
                len(data),
                sent.append,
                connect_timeout=5,
                response_timeout=10,
                chunk_bytes=1 << 20,
                ssl_context=client_ctx,
            )
        finally:
            await runner.cleanup()
        assert (status, body) == (200, b"ok")
        assert sum(sent) == len(data) and len(sent) == 10

    asyncio.run(main())
    assert hashlib.md5(received[0]).digest() == hashlib.md5(data).digest()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, b"ok")),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", (201, b"")),
        (
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
            (400, b"abcde"),
        ),
        (b"HTTP/1.0 503 Busy\r\n\r\nuntil close", (503, b"until close")),
    ],
)
def test_response_parsing(tmp_path: Path, answer: bytes, expected: tuple[int, bytes]) -> None:
    (tmp_path / "body").write_bytes(b"12345")

    async def main() -> tuple[int, bytes]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(5)
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await put_file(
                f"http://127.0.0.1:{port}/o",
                {},
                str(tmp_path / "body"),
                5,
                lambda n: None,
                connect_timeout=5,
                response_timeout=5,
            )
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == expected


def test_garbage_answer_is_a_protocol_error(tmp_path: Path) -> None:
    (tmp_path / "body").write_bytes(b"x")

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(HTTPProtocolError):
                await put_file(
                    f"http://127.0.0.1:{port}/o",
                    {},
                    str(tmp_path / "body"),
                    1,
                    lambda n: None,
                    connect_timeout=5,
                    response_timeout=5,
                )
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def run_raw_server(tmp_path: Path, size: int, serve: Any, **kwargs: Any) -> tuple[tuple[int, bytes], float]:
    """PUTs `size` bytes to a raw asyncio server running `serve`; returns (answer, seconds)."""
    (tmp_path / "body").write_bytes(b"b" * size)

    async def main() -> tuple[tuple[int, bytes], float]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        start = time.monotonic()
        try:
            answer = await put_file(
                f"http://127.0.0.1:{port}/o",
                {},
                str(tmp_path / "body"),
                size,
                lambda n: None,
                connect_timeout=5,
                response_timeout=5,
                **kwargs,
            )
        finally:
            server.close()
            await server.wait_closed()
        return answer, time.monotonic() - start

    return asyncio.run(main())


def test_expect_continue_lets_a_refusal_skip_the_body(tmp_path: Path) -> None:
    received: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Expect: 100-continue" in head
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndenied")
        await writer.drain()
        # Everything the client sends until it closes the connection is counted.
        received.append(len(await reader.read()))
        writer.close()

    answer, _ = run_raw_server(tmp_path, 8 << 20, serve)
    assert answer == (403, b"denied")
    assert received == [0]


def test_expect_continue_then_the_body(tmp_path: Path) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await reader.readexactly(2 << 20)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    answer, seconds = run_raw_server(tmp_path, 2 << 20, serve, expect_timeout=5)
    assert answer == (200, b"") and seconds < 4


def test_a_server_ignoring_expect_gets_the_body_after_a_short_wait(tmp_path: Path) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2 << 20)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    answer, seconds = run_raw_server(tmp_path, 2 << 20, serve, expect_timeout=0.3)
    assert answer == (201, b"") and seconds >= 0.3


def test_small_bodies_are_sent_without_expect(tmp_path: Path) -> None:
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.readexactly(1000)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    answer, _ = run_raw_server(tmp_path, 1000, serve)
    assert answer == (200, b"") and b"Expect" not in heads[0]
