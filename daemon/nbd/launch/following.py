"""Following a session's Notebook in the cluster: one Kubernetes watch per session.

The loop is an informer's for one object: list the Notebook by name (a list, so that an absent
object still yields a resourceVersion to watch from), then watch from that version with bookmarks,
re-watch from the last version seen when a watch ends or fails (its timeout, a dropped connection,
a refused request), list again when the server says the version is too old (an ERROR event with a
410 Status), backing off (bounded) after failures. Every state seen (each list, each ADDED or MODIFIED, the
last state a DELETED carries) is handed to the owner, which judges it (`nbd.launch.changes`) and
says whether to go on following. A failure that persists (a second one in a row) is reported too,
so the session can say it cannot read its Notebook; the loop keeps trying until it is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from nbd.errors import NbdError
from nbd.kube import NOTEBOOK, KubeClient
from nbd.launch.changes import Seen
from nbdcontract import GROUP, PLURAL, VERSION

__all__ = ["NotebookFollower"]

log = logging.getLogger(__name__)

WATCH_SECONDS = 60  # server-side timeout of one watch; it is then resumed from the last version
READ_SLACK = 15  # silence tolerated beyond WATCH_SECONDS (bookmarks come far more often)
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0

# The owner's answer to a state: True to go on following, False to stop.
OnSeen = Callable[[Seen | None], Awaitable[bool]]
OnError = Callable[[NbdError], Awaitable[None]]


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class NotebookFollower:
    """Follows one Notebook (by namespace and name) and reports what it sees, in order.

    Args:
        kube: The cluster's client (its aiohttp transport lists and watches).
        namespace, name: The Notebook.
        on_seen: Called with each state (None: the list found no such Notebook); never concurrently.
        on_error: Called when reading it keeps failing.
    """

    def __init__(
        self, kube: KubeClient, namespace: str, name: str, on_seen: OnSeen, on_error: OnError
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._on_seen = on_seen
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None
        # Set once the first list was judged or failed: a resume waits for it before it starts a
        # forward and a sync that what changed meanwhile may have made pointless.
        self.first = asyncio.Event()
        self.relists = 0
        self._path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/{PLURAL}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"follow {self.namespace}/{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _list(self) -> tuple[str, dict[str, Any] | None]:
        data = await self.kube.transport.get_json(
            self._path, {"fieldSelector": f"metadata.name={self.name}"}, resource=NOTEBOOK
        )
        items = [i for i in data.get("items") or [] if isinstance(i, dict)]
        version = str((data.get("metadata") or {}).get("resourceVersion") or "")
        return version, items[0] if items else None

    async def _watch(self, version: str) -> tuple[str, bool]:
        """Hands on the watch's events from `version`: (the last version seen, go on)."""
        params = {
            "fieldSelector": f"metadata.name={self.name}",
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async for event in self.kube.transport.stream_json_lines(
            self._path, params, read_timeout=WATCH_SECONDS + READ_SLACK, resource=NOTEBOOK
        ):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410 or obj.get("reason") in ("Expired", "Gone"):
                    raise WatchExpired(str(obj.get("message") or "too old resource version"))
                raise NbdError(f"the Notebook watch failed: {obj.get('message') or obj}", reason="WatchError")
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                if not await self._on_seen(Seen.of(obj, deleted=kind == "DELETED")):
                    return version, False
        return version, True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        failures = 0
        version = ""
        while True:
            try:
                if not version:
                    version, obj = await self._list()
                    failures = 0
                    go_on = await self._on_seen(Seen.of(obj) if obj is not None else None)
                    self.first.set()
                    if not go_on:
                        return
                started = loop.time()
                version, go_on = await self._watch(version)
                if not go_on:
                    return
                failures = 0
                if loop.time() - started < 1.0:
                    # A watch that ends at once (a proxy cutting streams) must not spin.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    backoff = BACKOFF_START
            except asyncio.CancelledError:
                raise
            except WatchExpired as e:
                log.info("Notebook watch of %s/%s expired (%s); listing again", self.namespace, self.name, e)
                self.relists += 1
                version = ""
            except Exception as e:
                err = e if isinstance(e, NbdError) else NbdError(f"following the Notebook failed: {e}")
                failures += 1
                log.info(
                    "following Notebook %s/%s: %s (failure %d)", self.namespace, self.name, err, failures
                )
                # A failed watch is resumed from the last version seen (no event is lost: a version
                # the server no longer has answers 410, which lists again); a failed list is retried.
                if failures >= 2:
                    # Reported: the next success is a list, whose state replaces the error.
                    version = ""
                    self.first.set()
                    await self._on_error(err)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX)
