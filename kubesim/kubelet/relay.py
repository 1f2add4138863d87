"""Byte relays between two stream pairs, with back-pressure (at most one chunk in flight per way)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["pipe", "splice"]

CHUNK = 256 * 1024


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the writer (shut down its write side when possible)."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    """Relay both ways until both directions end, then close both."""
    try:
        await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))
    finally:
        for w in (a[1], b[1]):
            with contextlib.suppress(Exception):
                w.close()
