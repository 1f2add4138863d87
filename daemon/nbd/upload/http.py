"""A single HTTP/1.1 PUT of a file, with the body sent by `sendfile`.

Why not aiohttp here: the body is a file already on disk, and the kernel can send it from the page
cache straight to the socket (`loop.sendfile` → `os.sendfile`, zero copy, no Python per chunk).
A general client pushes every chunk through Python buffers, which costs as much CPU as the network
stack itself on a fast link. Over TLS asyncio falls back to reading and writing chunks.

Bodies of a MiB or more are announced with `Expect: 100-continue`, so a refused URL costs one
round trip instead of the whole upload. Through an HTTP proxy (`nbd.upload.proxy`), an HTTPS store
is reached with `CONNECT` and TLS inside the tunnel; a plain-HTTP store gets the absolute URL as
request target. Scope, on purpose: one request per connection (`Connection: close`), no redirects,
no compression; the request target is sent exactly as given (a signed URL's query must not be
re-encoded). The caller owns retries and timeouts of the whole exchange.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from .proxy import Proxy

__all__ = ["HTTPProtocolError", "ProxyRefused", "put_file"]

_MAX_HEAD = 64 << 10
# Bodies from this size on are announced with "Expect: 100-continue".
EXPECT_CONTINUE_FROM = 1 << 20
_MAX_BODY = 1 << 20  # error bodies are small; anything beyond is read and dropped


class HTTPProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.x we can read."""


class ProxyRefused(ConnectionError):
    """The proxy answered CONNECT with something other than 200."""

    def __init__(self, proxy: Proxy, status: int, target: str) -> None:
        super().__init__(
            f"the proxy {proxy.address} ({proxy.variable}) answered {status} to CONNECT {target}"
        )
        self.proxy = proxy
        self.status = status
        self.target = target


def _target(url: str) -> tuple[str, str, int, str, bool]:
    """(host, Host header, port, request target, tls) of an http(s) URL, the target verbatim."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the upload URL must be http(s)://HOST/...")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    netloc = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, netloc, port, target, tls


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """One status line and its headers (lower-case names)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as e:
        raise HTTPProtocolError("response headers too large") from e
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
        raise HTTPProtocolError(f"not an HTTP/1 response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return int(status_line[1]), headers


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    while True:
        status, headers = await _read_head(reader)
        if not 100 <= status < 200:
            break  # else an interim answer (e.g. 100 Continue): the real one follows
    return status, await _read_body(reader, headers)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    body = bytearray()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as e:
                raise HTTPProtocolError("bad chunk size") from e
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                break
            chunk = await reader.readexactly(size + 2)
            if len(body) < _MAX_BODY:
                body += chunk[:-2]
    elif "content-length" in headers:
        try:
            remaining = int(headers["content-length"])
        except ValueError as e:
            raise HTTPProtocolError("bad Content-Length") from e
        while remaining > 0:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(body), remaining)
            remaining -= len(chunk)
            if len(body) < _MAX_BODY:
                body += chunk
    else:
        while chunk := await reader.read(65536):
            if len(body) < _MAX_BODY:
                body += chunk
    return bytes(body[:_MAX_BODY])


async def _tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: Proxy, host: str, port: int
) -> None:
    """Asks the proxy for a tunnel to host:port (RFC 9110 §9.3.6); returns once it is open."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", "User-Agent: nbd"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    status, headers = await _read_head(reader)
    if status != 200:
        raise ProxyRefused(proxy, status, authority)
    # A 2xx to CONNECT has no body: the bytes that follow are the tunnel's.


async def put_file(
    url: str,
    headers: Mapping[str, str],
    path: str,
    size: int,
    on_sent: Callable[[int], None],
    *,
    connect_timeout: float,
    response_timeout: float,
    chunk_bytes: int = 4 << 20,
    ssl_context: ssl.SSLContext | None = None,
    expect_timeout: float = 1.0,
    proxy: Proxy | None = None,
    server_hostname: str | None = None,
) -> tuple[int, bytes]:
    """PUTs `size` bytes of the file at `path` to `url`; returns (status, body).

    `on_sent(n)` is called after each `chunk_bytes` slice handed to the kernel. `expect_timeout`
    is how long to wait for "100 Continue" before sending the body anyway. Raises OSError
    (ConnectionError, TimeoutError), asyncio.IncompleteReadError or HTTPProtocolError on transport
    failures; the caller decides whether to retry. Through a `proxy`, ProxyRefused when it refuses
    the tunnel. `server_hostname` is the name to check the TLS certificate against when it is not
    the URL's host (a kubeconfig's tls-server-name).
    """
    host, host_header, port, target, tls = _target(url)
    tls_name = server_hostname or host
    context = (ssl_context or ssl.create_default_context()) if tls else None
    if proxy is None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=tls_name if tls else None, limit=_MAX_HEAD
            ),
            connect_timeout,
        )
    else:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(proxy.host, proxy.port, limit=_MAX_HEAD), connect_timeout
        )
    loop = asyncio.get_running_loop()
    try:
        extra: list[str] = []
        if proxy is not None and tls:
            await asyncio.wait_for(_tunnel(reader, writer, proxy, host, port), connect_timeout)
            assert context is not None
            await asyncio.wait_for(writer.start_tls(context, server_hostname=tls_name), connect_timeout)
        elif proxy is not None:
            # A plain-HTTP store through a proxy: the absolute URL is the request target.
            target = f"http://{host_header}{target}"
            if proxy.authorization:
                extra.append(f"Proxy-Authorization: {proxy.authorization}")
        lines = [f"PUT {target} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {size}", *extra]
        lines += [
            f"{k}: {v}"
            for k, v in headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        ]
        expect = size >= EXPECT_CONTINUE_FROM
        if expect:
            lines.append("Expect: 100-continue")
        lines += ["Connection: close", "User-Agent: nbd", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1"))
        send_error: OSError | None = None
        try:
            await writer.drain()
            if expect:
                # A refusal (an expired or badly signed URL) arrives before any body byte is sent;
                # a server that ignores Expect gets the body after a short wait (RFC 9110 §10.1.1).
                try:
                    status, response_headers = await asyncio.wait_for(_read_head(reader), expect_timeout)
                except TimeoutError:
                    pass
                else:
                    if not 100 <= status < 200:
                        body = await asyncio.wait_for(_read_body(reader, response_headers), response_timeout)
                        return status, body
            with open(path, "rb") as f:
                offset = 0
                while offset < size:
                    count = min(chunk_bytes, size - offset)
                    sent = await loop.sendfile(writer.transport, f, offset, count)
                    if sent <= 0:
                        raise ConnectionError("the file ended before its size was sent")
                    offset += sent
                    on_sent(sent)
        except OSError as e:
            # The server may have answered early (e.g. refused the request) and closed: read the
            # answer if there is one; otherwise the send error is the failure.
            send_error = e
        try:
            timeout = response_timeout if send_error is None else 2.0
            return await asyncio.wait_for(_read_response(reader), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, HTTPProtocolError):
            if send_error is not None:
                raise send_error from None
            raise
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
