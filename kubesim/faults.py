"""Fault injection for reliability tests: the one registry the whole kubesim process consults.

The API server asks `Faults.before_request()` before every API route (including the kubelet's
subresources); long-lived streams (watches, log follows, exec, port-forward) register with
`track()` so that `drop_streams()` can close them all at once. Pod faults are delegated to
callbacks the kubelet registers (`on_kill_pod`, `on_recreate_pod`).

Faults are driven over HTTP (`/_kubesim/faults/...` on the same server, admin token required, see
`kubesim.apiserver`) with the `KubesimAdmin` client below, which uses only the standard library so
tests can call it from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Faults", "Closeable", "KubesimAdmin", "FaultState"]


class Closeable(Protocol):
    """Anything a stream can be stopped through; `close()` may be sync or return an awaitable."""

    def close(self) -> Any: ...


PodCallback = Callable[[str, str], Awaitable[None] | None]


@dataclass
class FaultState:
    unavailable_until: float = 0.0
    unavailable_status: int = 503
    hang_until: float = 0.0
    slow_until: float = 0.0
    slow_seconds: float = 0.0


class Faults:
    """Active faults and the set of open streams.

    Windows are absolute monotonic deadlines, so a window ends by itself with no timer task.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = FaultState()
        self._clock = clock
        self._streams: set[Closeable] = set()
        self.on_kill_pod: PodCallback | None = None
        self.on_recreate_pod: PodCallback | None = None
        self.dropped = 0
        self.bookmarks_sent = 0  # by every watch so far (a quiet watch's proof of life)
        # As a real container runtime: an exec'd command outlives its client. Off, kubesim kills it
        # when the client's stream ends (a tidier world, where orphans never pile up by themselves).
        self.exec_orphans = False

    # -------------------------------------------------------------- windows

    def unavailable(self, seconds: float, status: int = 503) -> None:
        """Answer every API request with `status` (a Status object) for `seconds`."""
        self.state.unavailable_until = self._clock() + seconds
        self.state.unavailable_status = status

    def hang(self, seconds: float) -> None:
        """Hold every API request arriving in the next `seconds` until the window ends."""
        self.state.hang_until = self._clock() + seconds

    def slow(self, seconds_per_response: float, duration: float) -> None:
        """Delay every API response by `seconds_per_response` for `duration` seconds."""
        self.state.slow_seconds = seconds_per_response
        self.state.slow_until = self._clock() + duration

    def clear(self) -> None:
        self.state = FaultState()

    def unavailable_status(self) -> int | None:
        """The status to answer now, or None when the API is available."""
        if self._clock() < self.state.unavailable_until:
            return self.state.unavailable_status
        return None

    async def before_request(self) -> int | None:
        """Apply hang/slow windows; return a status code to fail with, or None to proceed."""
        now = self._clock()
        if now < self.state.hang_until:
            await asyncio.sleep(self.state.hang_until - now)
        if self._clock() < self.state.slow_until:
            await asyncio.sleep(self.state.slow_seconds)
        return self.unavailable_status()

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "unavailableFor": max(0.0, self.state.unavailable_until - now),
            "unavailableStatus": self.state.unavailable_status,
            "hangFor": max(0.0, self.state.hang_until - now),
            "slowFor": max(0.0, self.state.slow_until - now),
            "slowSeconds": self.state.slow_seconds,
            "openStreams": len(self._streams),
            "droppedStreams": self.dropped,
            "bookmarksSent": self.bookmarks_sent,
        }

    # -------------------------------------------------------------- streams

    def track(self, stream: Closeable) -> Closeable:
        """Register an open stream; call `untrack` (or use `tracking`) when it ends."""
        self._streams.add(stream)
        return stream

    def untrack(self, stream: Closeable) -> None:
        self._streams.discard(stream)

    @contextlib.contextmanager
    def tracking(self, stream: Closeable) -> Iterator[Closeable]:
        """`with faults.tracking(ws): ...` registers the stream for the block's duration."""
        self.track(stream)
        try:
            yield stream
        finally:
            self.untrack(stream)

    def open_streams(self) -> int:
        return len(self._streams)

    async def drop_streams(self) -> int:
        """Close every tracked stream; returns how many were closed."""
        streams = list(self._streams)
        self._streams.clear()
        for s in streams:
            try:
                result = s.close()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:  # closing a half-dead stream must not stop the others
                pass
        self.dropped += len(streams)
        return len(streams)

    def stall_streams(self) -> int:
        """Silence every open watch and pod stream (exec, port-forward, logs) without closing it, as a connection that died with no FIN or
        RST looks to its client (a control-plane upgrade, a NAT that forgot the flow): no events,
        no bookmarks, no end. Only a client-side read timeout notices. Returns how many stalled."""
        stalled = 0
        for s in list(self._streams):
            stall = getattr(s, "stall", None)
            if callable(stall):  # exec, port-forward, logs: the connection goes silent both ways
                stall()
                stalled += 1
            elif hasattr(s, "stalled"):
                s.stalled = True
                stalled += 1
        return stalled

    # -------------------------------------------------------------- pods

    async def kill_pod(self, namespace: str, name: str) -> None:
        await self._call(self.on_kill_pod, namespace, name, "kill")

    async def recreate_pod(self, namespace: str, name: str) -> None:
        await self._call(self.on_recreate_pod, namespace, name, "recreate")

    async def _call(self, cb: PodCallback | None, namespace: str, name: str, what: str) -> None:
        if cb is None:
            raise RuntimeError(f"no kubelet registered to {what} pods")
        result = cb(namespace, name)
        if result is not None:
            await result


class KubesimAdmin:
    """Synchronous client of kubesim's admin endpoint (`/_kubesim/...`), for tests.

    Example: `KubesimAdmin(url, token, ca_file).unavailable(2)`.
    """

    def __init__(self, url: str, token: str, ca_file: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._ctx: ssl.SSLContext | None = None
        if self.url.startswith("https"):
            self._ctx = (
                ssl.create_default_context(cafile=ca_file) if ca_file else ssl._create_unverified_context()
            )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode() if method != "GET" else None
        req = urllib.request.Request(
            self.url + "/_kubesim/" + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def status(self) -> dict[str, Any]:
        return self._call("GET", "faults")  # type: ignore[no-any-return]

    def unavailable(self, seconds: float, status: int = 503) -> None:
        self._call("POST", "faults/unavailable", {"seconds": seconds, "status": status})

    def hang(self, seconds: float) -> None:
        self._call("POST", "faults/hang", {"seconds": seconds})

    def slow(self, seconds_per_response: float, duration: float) -> None:
        self._call("POST", "faults/slow", {"seconds": seconds_per_response, "duration": duration})

    def clear(self) -> None:
        self._call("POST", "faults/clear")

    def drop_streams(self) -> int:
        return int(self._call("POST", "faults/drop-streams")["dropped"])

    def stall_streams(self) -> int:
        return int(self._call("POST", "faults/stall-streams")["stalled"])

    def exec_orphans(self, on: bool = True) -> None:
        """Let exec'd commands outlive their client (stdin held open, output unread), as on a real
        cluster; off, a command is killed when its stream ends."""
        self._call("POST", "faults/exec-orphans", {"on": on})

    def kill_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "faults/kill-pod", {"namespace": namespace, "name": name})

    def recreate_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "faults/recreate-pod", {"namespace": namespace, "name": name})

    def set_history_size(self, size: int) -> None:
        """Shrink or grow the watch history window (to provoke 410 Expired)."""
        self._call("POST", "history", {"size": size})

    def forbid(self, user: str, namespace: str) -> None:
        """Make every request of `user` (token or client-cert user) in `namespace` 403 Forbidden."""
        self._call("POST", "auth/forbid", {"user": user, "namespace": namespace})

    def add_token(self, token: str, user: str) -> None:
        """Accept another bearer token, authenticating as `user`."""
        self._call("POST", "auth/tokens", {"token": token, "user": user})

    def resource_version(self) -> str:
        return str(self._call("GET", "state")["resourceVersion"])
