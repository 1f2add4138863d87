"""Container log capture and reading, in the CRI log format the real kubelet reads.

Each container instance (each restart) writes its own file; an entry is one line
`<RFC3339Nano time> <stream> <F|P> <content>`, F for a complete line, P for a partial one (output
without its newline yet, written as soon as it arrives so followers see it at once). The reader
joins P entries with the next entry.

`LogFile` is the live object the kubelet appends to and `follow` readers wait on; it is closed
when the container instance ends, which ends every follow.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LogFile", "LogOptions", "LogLine", "parse_entries", "render", "rfc3339nano"]


def rfc3339nano(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(secs, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def _parse_ts(ts: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds."""
    main, _, frac = ts.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


@dataclass(frozen=True)
class LogLine:
    """One logical line (partials joined): its first chunk's timestamp and its bytes (with newline if complete)."""

    ts: str
    data: bytes


def parse_entries(raw: bytes, carry: LogLine | None = None) -> tuple[list[LogLine], LogLine | None, int]:
    """Parse complete entry lines of `raw`; returns (lines, pending partial, bytes consumed).

    `carry` is a partial line left by a previous call (for incremental reading).
    """
    out: list[LogLine] = []
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            break
        entry = raw[pos:nl]
        pos = nl + 1
        parts = entry.split(b" ", 3)
        if len(parts) < 4:
            parts += [b""] * (4 - len(parts))
        ts, _stream, tag, content = parts
        if carry is None:
            carry = LogLine(ts.decode(), b"")
        if tag == b"P":
            carry = LogLine(carry.ts, carry.data + content)
        else:
            out.append(LogLine(carry.ts, carry.data + content + b"\n"))
            carry = None
    return out, carry, pos


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since_seconds: float | None = None
    since_time: str | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def render(line: LogLine, timestamps: bool) -> bytes:
    return (line.ts.encode() + b" " + line.data) if timestamps else line.data


class LogFile:
    """One container instance's log: appended by the kubelet, read by `kubectl logs`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab", buffering=0)
        self._pending = b""
        self.closed = False
        self._changed = asyncio.Event()

    def append(self, data: bytes, stream: str = "stdout") -> None:
        """Record output; complete lines as F entries and a trailing partial as a P entry."""
        if not data or self.closed:
            return
        ts = rfc3339nano().encode()
        s = stream.encode()
        lines = data.split(b"\n")
        entries = []
        for i, chunk in enumerate(lines):
            last = i == len(lines) - 1
            if last:
                if chunk:
                    entries.append(ts + b" " + s + b" P " + chunk + b"\n")
            else:
                entries.append(ts + b" " + s + b" F " + chunk + b"\n")
        self._fh.write(b"".join(entries))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._fh.close()
            self._wake()

    async def wait_change(self, timeout: float = 1.0) -> None:
        ev = self._changed
        if self.closed:
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass


async def read(path: Path, live: LogFile | None, opts: LogOptions) -> AsyncIterator[bytes]:
    """Yield the log's lines as `kubectl logs` shows them, then (follow) new ones until it closes."""
    raw = await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else b"")
    lines, carry, used = parse_entries(raw)
    cutoff = None
    if opts.since_seconds is not None:
        cutoff = time.time() - opts.since_seconds
    elif opts.since_time:
        cutoff = _parse_ts(opts.since_time)
    if cutoff is not None:
        lines = [ln for ln in lines if _parse_ts(ln.ts) >= cutoff]
    if opts.tail_lines is not None:
        lines = lines[-opts.tail_lines :] if opts.tail_lines > 0 else []
        if opts.tail_lines == 0:
            carry = None
    budget = opts.limit_bytes
    out = b"".join(render(ln, opts.timestamps) for ln in lines)
    if carry is not None and not opts.follow:
        out += render(carry, opts.timestamps)
        carry = None
    if budget is not None:
        out = out[:budget]
        budget -= len(out)
    if out:
        yield out
    if not opts.follow or live is None:
        return
    offset = used
    if carry is not None:
        # A partial line already on disk: show it now; its rest follows without a timestamp.
        yield render(carry, opts.timestamps)
        carry = LogLine(carry.ts, b"")
        shown_partial = True
    else:
        shown_partial = False
    while True:
        closed = live.closed
        size = os.path.getsize(path) if path.exists() else 0
        if size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(size - offset)
            new, _carry_unused, n = _parse_stream(chunk)
            offset += n
            data = b""
            for piece, ts, complete in new:
                if not shown_partial and opts.timestamps:
                    data += ts.encode() + b" "
                data += piece
                shown_partial = not complete
            if budget is not None:
                data = data[:budget]
                budget -= len(data)
            if data:
                yield data
            if budget is not None and budget <= 0:
                return
            continue
        if closed:
            return
        await live.wait_change()


def _parse_stream(raw: bytes) -> tuple[list[tuple[bytes, str, bool]], None, int]:
    """Entries of `raw` as (content, ts, complete) pieces, written to a follower as they come."""
    out: list[tuple[bytes, str, bool]] = []
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            break
        parts = raw[pos:nl].split(b" ", 3)
        pos = nl + 1
        if len(parts) < 4:
            parts += [b""] * (4 - len(parts))
        ts, _s, tag, content = parts
        complete = tag != b"P"
        out.append((content + (b"\n" if complete else b""), ts.decode(), complete))
    return out, None, pos
