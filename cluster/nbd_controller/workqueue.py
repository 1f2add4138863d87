"""A per-key work queue: concurrency across keys, never two workers on one key, coalescing.

The client-go workqueue's rules, in asyncio: a key added while queued is not queued twice; a key
added while being processed is processed once more afterwards (so no change is missed); a failing
key is retried with exponential backoff without delaying other keys; a worker may ask to see its key
again after a delay (polling an upload, waiting for a pod).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["WorkQueue"]

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """Runs `handler(key)` for added keys with at most `concurrency` keys at once.

    `handler` returns None or a delay in seconds after which the key is processed again; an
    exception retries the key after `base_backoff * 2**failures` seconds (at most `max_backoff`).
    """

    def __init__(
        self,
        handler: Callable[[K], Awaitable[float | None]],
        *,
        concurrency: int = 4,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
    ) -> None:
        self._handler = handler
        self._concurrency = concurrency
        self._base = base_backoff
        self._max = max_backoff
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def add(self, key: K) -> None:
        """Queues `key` now (coalesced with a pending or running one)."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Queues `key` after `delay` seconds; an earlier pending timer for the key wins."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        for index in range(self._concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"worker-{index}"))

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            key = self._queue.popleft()
            self._dirty.discard(key)
            self._processing.add(key)
            try:
                delay = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                backoff = min(self._max, self._base * (2**failures))
                log.exception("reconciling %s failed; retrying in %.1fs", key, backoff)
                self.add_after(key, backoff)
            else:
                self._failures.pop(key, None)
                if delay is not None:
                    self.add_after(key, delay)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._queue.append(key)
                    self._wakeup.set()
