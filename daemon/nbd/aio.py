"""Small asyncio helpers that behave the same on every Python the daemon runs on."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True when it is set.

    `asyncio.wait_for(event.wait(), t)` can swallow a cancellation on Python before 3.12: when
    the cancel arrives in the same loop step as the event (or the timeout), it returns normally
    and the cancelled task carries on. A loop that waits this way then never stops. Here the
    cancellation always propagates.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    return event.is_set()


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Future[object], grace: float = 1.0) -> None:
    """Cancel `task` and wait until it is done, cancelling again if a cancellation was lost.

    Library code (and `wait_for` before Python 3.12) can swallow one cancellation; a stop that
    cancels once and awaits would then wait forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=grace)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()
