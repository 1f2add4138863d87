# mypy: disable-error-code="no-untyped-call"
"""Watches that turn cluster changes into Notebook keys for the work queue.

Each watch runs in its own thread (the `kubernetes` watch blocks): list, then watch from the list's
resourceVersion; when the stream ends or expires (410), list again. A list enqueues every object it
sees, so a restart or a lost event is repaired by the next list: the controller is level-based and
never depends on seeing a particular event.

A watch on a connection that died without a FIN or RST (a control-plane upgrade, a NAT that forgot
the flow) would otherwise block forever, and no new Notebook would ever be reconciled. So every read
has a client-side timeout: the watch asks for bookmarks, which the API server sends about once a
minute, and a stream that stays silent for longer than `read_timeout` is abandoned and listed again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError, ReadTimeoutError

__all__ = ["Watcher"]

log = logging.getLogger(__name__)

# The server ends each watch after this long; the following list doubles as a periodic resync.
WATCH_SECONDS = 240
# Connecting to the API server takes at most this long.
CONNECT_TIMEOUT = 10.0


class Watcher:
    """Lists and watches one kind in a thread, calling `on_object(event_type, obj)` on the loop."""

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        list_args: tuple[Any, ...],
        list_kwargs: dict[str, Any],
        on_object: Callable[[str, dict[str, Any]], None],
        loop: asyncio.AbstractEventLoop,
        to_dict: Callable[[Any], dict[str, Any]],
        *,
        read_timeout: float = 90.0,
    ) -> None:
        self.name = name
        self._list_fn = list_fn
        self._args = list_args
        self._kwargs = list_kwargs
        self._on_object = on_object
        self._loop = loop
        self._to_dict = to_dict
        self._timeout = (CONNECT_TIMEOUT, read_timeout)
        self.stalls = 0  # streams abandoned for silence (a dead connection)
        self._stopped = threading.Event()
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._on_object, kind, obj)

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                listed = self._list_fn(*self._args, _request_timeout=self._timeout, **self._kwargs)
                listed = listed if isinstance(listed, dict) else self._to_dict(listed)
                for item in listed.get("items") or []:
                    self._emit("LISTED", item)
                self.synced.set()
                version = (listed.get("metadata") or {}).get("resourceVersion")
                stream = watch.Watch().stream(
                    self._list_fn,
                    *self._args,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=self._timeout,
                    **self._kwargs,
                )
                for event in stream:
                    if self._stopped.is_set():
                        return
                    kind = event.get("type")
                    raw = event.get("raw_object")
                    if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(raw, dict):
                        self._emit(str(kind), raw)
                failures = 0
            except (ReadTimeoutError, ProtocolError, TimeoutError) as e:
                # Silence past the read timeout: the connection is taken for dead, and the list
                # starts again at once (the timeout itself paced this retry). A connection broken
                # mid-stream (ProtocolError) backs off like any other failure.
                if self._stopped.is_set():
                    return
                self.stalls += 1
                if isinstance(e, ProtocolError):
                    failures += 1
                log.warning(
                    "watch %s: nothing for %gs (a dead connection?); listing again",
                    self.name,
                    self._timeout[1],
                )
            except ApiException as e:
                failures += 1
                if e.status != 410:
                    log.warning("watch %s: %s %s; listing again", self.name, e.status, e.reason)
            except Exception as e:  # noqa: BLE001 - a watch must outlive any transport error.
                failures += 1
                log.warning("watch %s failed: %s; listing again", self.name, e)
            if failures:
                self._stopped.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
