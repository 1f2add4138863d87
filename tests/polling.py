"""Polling with a deadline: the one way tests wait for something to become true (never sleep-and-hope).

`wait_for` polls from plain code, `until` from a coroutine (it yields to the event loop between
checks, so the code under test runs meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    check: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Return `check()`'s first truthy result; fail naming `what` once `timeout` seconds passed.

    An exception of a `retry_on` type counts as "not yet" (it is shown as the last result)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except retry_on as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


async def until(
    check: Callable[[], Any], timeout: float = 10.0, what: str = "condition", interval: float = 0.01
) -> Any:
    """`wait_for` for coroutines: return `check()`'s first truthy result, awaiting between checks."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
