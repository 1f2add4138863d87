"""nbd.aio: waits and stops that never lose a cancellation."""

from __future__ import annotations

import asyncio
import sys

import pytest

from nbd.aio import cancel_and_wait, wait_event


async def _cancel_as_the_event_fires(waiting: asyncio.Task[object], event: asyncio.Event) -> None:
    """Set the event, let the inner wait finish, then cancel the waiter before it resumes: the
    sequence in which `wait_for` before 3.12 returns normally instead of raising."""
    await asyncio.sleep(0)
    event.set()
    await asyncio.sleep(0)
    waiting.cancel()


async def _loop_forever(wait: object, event: asyncio.Event) -> str:
    while True:
        event.clear()
        await wait(event)  # type: ignore[operator]


def test_wait_event_answers_set_and_timeout() -> None:
    async def go() -> tuple[bool, bool, bool]:
        ev = asyncio.Event()
        timed_out = await wait_event(ev, 0.01)
        asyncio.get_running_loop().call_soon(ev.set)
        woke = await wait_event(ev, 5)
        already = await wait_event(ev, 0)
        return timed_out, woke, already

    assert asyncio.run(go()) == (False, True, True)


def test_a_cancel_that_arrives_with_the_event_stops_the_loop() -> None:
    async def go() -> bool:
        ev = asyncio.Event()
        task = asyncio.ensure_future(_loop_forever(lambda e: wait_event(e, 30), ev))
        await _cancel_as_the_event_fires(task, ev)
        done, _ = await asyncio.wait({task}, timeout=5)
        return task in done and task.cancelled()

    assert asyncio.run(go())


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for no longer swallows a cancel")
def test_the_same_sequence_loses_the_cancel_with_wait_for() -> None:
    """Why wait_event exists: the same loop written with wait_for keeps running."""

    async def go() -> bool:
        ev = asyncio.Event()
        task = asyncio.ensure_future(_loop_forever(lambda e: asyncio.wait_for(e.wait(), 30), ev))
        await _cancel_as_the_event_fires(task, ev)
        done, _ = await asyncio.wait({task}, timeout=0.5)
        lost = task not in done
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return lost

    assert asyncio.run(go())


def test_cancel_and_wait_stops_a_task_that_swallowed_one_cancel() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # lost, as library code sometimes does
        await asyncio.sleep(30)

    async def go() -> bool:
        task = asyncio.ensure_future(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task, grace=0.05), 5)
        return task.cancelled()

    assert asyncio.run(go())


def test_cancel_and_wait_on_a_finished_or_failed_task_returns() -> None:
    async def boom() -> None:
        raise RuntimeError("x")

    async def go() -> None:
        task = asyncio.ensure_future(boom())
        await asyncio.sleep(0)
        await cancel_and_wait(task)

    asyncio.run(go())
