"""A live, watch-fed view of the pods matching one label selector.

Forwards resolve their pod at connect time from this cache instead of asking the API server per
connection, so a new connection costs no extra round trip and a recreated pod is picked up as soon
as the watch reports it Ready. The loop is the usual informer: list, then watch from the list's
resourceVersion, re-watch from the last seen version when a watch ends, re-list on 410 Expired,
back off (bounded) on errors. The last error is kept so the owner can show it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from nbd.aio import cancel_and_wait, wait_event
from nbd.errors import DeadlineExceeded, NbdError

__all__ = ["PodCache", "PodChange", "is_ready", "newest_ready", "selector_string"]

log = logging.getLogger(__name__)

Pod = dict[str, Any]

WATCH_SECONDS = 60  # server-side timeout of one watch; it is then resumed from the last version
READ_SLACK = 15  # extra client-side silence tolerated beyond WATCH_SECONDS before giving up
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0


def selector_string(selector: str | Mapping[str, str]) -> str:
    """`{"a": "1", "b": "2"}` → `"a=1,b=2"` (sorted); a string passes through."""
    if isinstance(selector, str):
        return selector
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def is_ready(pod: Pod) -> bool:
    """Ready condition True and not being deleted."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Running"):
        return False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    return False


def newest_ready(pods: Mapping[str, Pod]) -> str | None:
    """The name of the newest Ready pod (by creationTimestamp, then name), or None."""
    ready = [p for p in pods.values() if is_ready(p)]
    if not ready:
        return None
    best = max(
        ready,
        key=lambda p: (
            str((p.get("metadata") or {}).get("creationTimestamp") or ""),
            str((p.get("metadata") or {}).get("name") or ""),
        ),
    )
    return str(best["metadata"]["name"])


@dataclass(frozen=True)
class PodChange:
    """One change seen by the cache.

    Attributes:
        kind: "ADDED", "MODIFIED", "DELETED", "RELISTED" or "ERROR".
        pod: The pod name ("" for RELISTED/ERROR).
        ready_pod: The newest Ready pod after the change, or None.
        error: The error for kind "ERROR".
    """

    kind: str
    pod: str
    ready_pod: str | None
    error: NbdError | None = None


class PodCache:
    """Pods of one namespace matching a label selector, kept current by a watch.

    Args:
        kube: A `nbd.kube.KubeClient` (its transport is used for list and watch).
        namespace: The namespace to watch.
        label_selector: "k=v,..." or a mapping.
    """

    def __init__(self, kube: Any, namespace: str, label_selector: str | Mapping[str, str]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selector = selector_string(label_selector)
        self.pods: dict[str, Pod] = {}
        self.synced = False
        self.last_error: NbdError | None = None
        self._listeners: list[Callable[[PodChange], None]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"

    # -- queries -----------------------------------------------------------------------------

    def ready_pod(self) -> str | None:
        """The newest Ready pod now, or None."""
        return newest_ready(self.pods)

    async def wait_ready_pod(self, timeout: float) -> str:
        """Wait (bounded) until a pod is Ready and return its name.

        Raises:
            DeadlineExceeded: no Ready pod within `timeout` (the message names the last watch error).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            name = self.ready_pod()
            if name is not None:
                return name
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = f" (last error: {self.last_error.message})" if self.last_error else ""
                raise DeadlineExceeded(
                    f"no Ready pod matching {self.selector} in namespace {self.namespace} "
                    f"after {timeout:g} s{detail}",
                    reason="PodNotReady",
                )
            self._changed.clear()
            await wait_event(self._changed, remaining)

    def on_change(self, callback: Callable[[PodChange], None]) -> Callable[[], None]:
        """Call `callback` on every change; returns a function that unsubscribes."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the watch loop (returns at once; `synced` turns True after the first list)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"podcache-{self.selector}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait until the first list arrived; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.synced:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            if not await wait_event(self._changed, remaining):
                return self.synced
        return True

    # -- internals ---------------------------------------------------------------------------

    def _emit(self, change: PodChange) -> None:
        self._changed.set()
        for callback in list(self._listeners):
            try:
                callback(change)
            except Exception:  # a listener's bug must not stop the watch
                log.exception("pod cache listener failed")

    async def _list(self) -> str:
        transport = self.kube.transport
        data = await transport.get_json(self._path, {"labelSelector": self.selector})
        items = data.get("items") or []
        self.pods = {
            str(p["metadata"]["name"]): p
            for p in items
            if isinstance(p, dict) and (p.get("metadata") or {}).get("name")
        }
        self.synced = True
        if self.last_error is not None:
            self.last_error = None
        self._emit(PodChange("RELISTED", "", self.ready_pod()))
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> str | None:
        """Apply watch events from `version`; the newest version seen, or None to re-list."""
        params = {
            "labelSelector": self.selector,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        if version:
            params["resourceVersion"] = version
        transport = self.kube.transport
        async for event in transport.stream_json_lines(
            self._path, params, read_timeout=WATCH_SECONDS + READ_SLACK
        ):
            kind = event.get("type")
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            if kind == "ERROR":
                if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                    return None
                raise NbdError(f"pod watch error: {obj.get('message') or obj}", reason="WatchError")
            version = str(meta.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            name = meta.get("name")
            if not name:
                continue
            if kind == "DELETED":
                self.pods.pop(str(name), None)
            elif kind in ("ADDED", "MODIFIED"):
                self.pods[str(name)] = obj
            else:
                continue
            self._emit(PodChange(str(kind), str(name), self.ready_pod()))
        return version

    async def _run(self) -> None:
        backoff = BACKOFF_START
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list()
                started = asyncio.get_running_loop().time()
                version = await self._watch(version)
                if asyncio.get_running_loop().time() - started < 1.0:
                    # A watch that ends at once (a proxy cutting streams) must not spin.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    backoff = BACKOFF_START
            except asyncio.CancelledError:
                raise
            except Exception as e:
                err = e if isinstance(e, NbdError) else NbdError(f"pod watch failed: {e}")
                if self.last_error is None or self.last_error.message != err.message:
                    log.warning("watching pods %s in %s: %s", self.selector, self.namespace, err)
                self.last_error = err
                self._emit(PodChange("ERROR", "", self.ready_pod(), err))
                # After an error the cached view may be stale (missed events): re-list.
                version = None
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX)
