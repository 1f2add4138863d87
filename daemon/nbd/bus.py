"""An in-process fan-out of events to any number of asyncio subscribers.

Publishing never blocks and never waits for a subscriber: each subscriber has its own bounded
queue, and a subscriber whose queue is full is dropped (with a log line) rather than slowing the
daemon or growing memory without bound. A dropped subscriber's iteration ends with `SubscriberDropped`
so its client can reconnect and ask for a fresh snapshot. Loop-only: publish and subscribe from the
event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from nbd.errors import Unavailable

__all__ = ["EventBus", "Subscription", "SubscriberDropped"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 1024


class SubscriberDropped(Unavailable):
    """The subscriber fell too far behind and was dropped."""

    default_reason = "SubscriberDropped"


class _Closed:
    """Sentinel put in a queue to end its subscription."""


class Subscription(Generic[T]):
    """One subscriber's view of the bus: an async iterator of events, ended by `close()`."""

    def __init__(self, bus: EventBus[T], maxsize: int, name: str, accept: Callable[[T], bool] | None) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[T | _Closed] = asyncio.Queue(maxsize=maxsize + 1)
        self._maxsize = maxsize
        self.name = name
        self.accept = accept
        self.dropped = False
        self.closed = False

    def _offer(self, event: T) -> bool:
        """Queues the event; False when the subscriber is full (the caller drops it)."""
        if self.closed:
            return True
        if self.accept is not None and not self.accept(event):
            return True
        if self._queue.qsize() >= self._maxsize:
            return False
        self._queue.put_nowait(event)
        return True

    def _end(self, dropped: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped = dropped
        # One slot is reserved for the sentinel, so this never raises QueueFull.
        self._queue.put_nowait(_Closed())

    def close(self) -> None:
        """Unsubscribes; a pending iteration ends normally."""
        self._bus._remove(self)
        self._end(dropped=False)

    async def get(self) -> T:
        """The next event; raises StopAsyncIteration at close and SubscriberDropped when dropped."""
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)  # Keep ending any later get().
            if self.dropped:
                raise SubscriberDropped(
                    f"the event stream fell more than {self._maxsize} events behind and was dropped; "
                    "reconnect (with initial snapshots) to catch up"
                )
            raise StopAsyncIteration
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus(Generic[T]):
    def __init__(self, default_queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._subscribers: list[Subscription[T]] = []
        self._default_queue_size = default_queue_size
        self._closed = False

    def subscribe(
        self,
        *,
        name: str = "subscriber",
        maxsize: int | None = None,
        accept: Callable[[T], bool] | None = None,
    ) -> Subscription[T]:
        """A new subscription receiving every event published from now on that `accept` lets through."""
        sub = Subscription(self, maxsize or self._default_queue_size, name, accept)
        if self._closed:
            sub._end(dropped=False)
        else:
            self._subscribers.append(sub)
        return sub

    def publish(self, event: T) -> None:
        for sub in list(self._subscribers):
            if not sub._offer(event):
                log.warning("dropping slow event subscriber %s: %d events queued", sub.name, sub._maxsize)
                self._remove(sub)
                sub._end(dropped=True)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """Ends every subscription normally (daemon shutdown)."""
        self._closed = True
        for sub in list(self._subscribers):
            self._remove(sub)
            sub._end(dropped=False)

    def _remove(self, sub: Subscription[T]) -> None:
        try:
            self._subscribers.remove(sub)
        except ValueError:
            pass
