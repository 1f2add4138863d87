"""A small forward HTTP proxy on loopback, as a corporate network has: CONNECT tunnels for HTTPS
and absolute-form requests for plain HTTP, optionally asking for Basic credentials (407) or
refusing tunnels (403). It records what it saw, which is what the tests assert on."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class ForwardProxy:
    credentials: str | None = None  # the expected Proxy-Authorization value, e.g. "Basic dTpw"
    refuse_connect: bool = False
    seen: list[str] = field(default_factory=list)  # request lines, as received
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.seen.append(lines[0])
            method, target, version = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if self.credentials is not None and headers.get("proxy-authorization") != self.credentials:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
                )
                await writer.drain()
                return
            if method == "CONNECT":
                if self.refuse_connect:
                    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                # Absolute form: http://host:port/path?query → origin form to the server.
                rest = target.split("://", 1)[1]
                authority, _, path = rest.partition("/")
                host, _, port = authority.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port or 80))
                kept = [
                    line for line in lines[1:] if line and not line.lower().startswith("proxy-authorization:")
                ]
                up_writer.write(
                    ("\r\n".join([f"{method} /{path} {version}", *kept]) + "\r\n\r\n").encode("latin-1")
                )
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.write_eof() if writer.can_write_eof() else writer.close()
