"""The start of one launch's notebook: from the applied Notebook to its Ready pod.

The controller creates the pod; the launch only watches. Every Notebook status is read once it
describes this launch's spec (`progress.is_current`), the pod's changes go out as `PodStatus`
events, and a start that cannot succeed (unschedulable with no pool that fits, a crash loop, an
image that cannot be pulled) ends with the controller's reason as soon as it says so
(`progress.start_failure`), not at the timeout.

A pod with no node yet is a wait, not a failure: while the controller says the notebook waits for a
node (a pool scaling up, its GPUs not yet allocatable), a notice says what for and for how long,
when that changes and every NODE_WAIT_NOTICE seconds. The wait is bounded by the launch's timeout
(`nbctl launch --timeout`); when it passes, the Notebook stays in the cluster and the error says
what it waited for and how to follow or stop it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbd.errors import FailedPrecondition
from nbd.events import Failure, LaunchPayload, Notice, PodStatus
from nbd.launch import progress as prog
from nbd.launch.notebooks import NotebookClient

__all__ = ["START_TIMEOUT", "StartError", "Started", "wait_until_ready"]

START_TIMEOUT = 900.0
# While the notebook waits for a node, the waiting line is repeated this often (with the time so far).
NODE_WAIT_NOTICE = 15.0

Emit = Callable[[LaunchPayload], None]


class StartError(FailedPrecondition):
    """A start the controller says cannot succeed, with the Failure the launch reports."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message, reason=failure.reason)
        self.failure = failure


@dataclass(frozen=True)
class Started:
    """The Ready notebook: the Secret holding its Jupyter token, and its pod."""

    token_secret: str
    pod: str


async def wait_until_ready(
    notebooks: NotebookClient, name: str, emit: Emit, *, timeout: float = START_TIMEOUT
) -> Started:
    """Waits until the Notebook is Ready for this launch's spec and its pod is ready, `timeout`
    seconds at most."""
    last: list[PodStatus | None] = [None]
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    # What the notebook waits for (a node) and when that was last said.
    waiting: list[Any] = [None, 0.0]

    async def pod_of(nb: dict[str, Any]) -> PodStatus | None:
        # A pod being deleted belongs to the previous spec: the controller replaces it.
        pods = [p for p in await notebooks.notebook_pods(name) if not p["metadata"].get("deletionTimestamp")]
        return prog.pod_status(pods[-1]) if pods else None

    def say_wait(what: str | None, *, again: bool = False) -> None:
        """The waiting line when what is waited for changed (or, `again`, when it is time to repeat it)."""
        now = loop.time()
        if what is not None and (what != waiting[0] or (again and now - waiting[1] >= NODE_WAIT_NOTICE)):
            waiting[1] = now
            emit(Notice(f"{what}, {prog.duration(now - started_at)}"))
        waiting[0] = what

    async def repeat() -> None:
        # The Notebook may not change for minutes while a node is added: say the wait again.
        while True:
            await asyncio.sleep(1.0)
            say_wait(waiting[0], again=True)

    ticker = asyncio.ensure_future(repeat())

    ready_nb: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(timeout):
            async for nb in notebooks.watch(name):
                if not prog.is_current(nb):
                    continue  # the controller has not seen this launch's spec yet
                pod = await pod_of(nb)
                if pod is not None and pod != last[0]:
                    last[0] = pod
                    emit(pod)
                failure = prog.start_failure(nb, pod)
                if failure is not None:
                    raise StartError(failure)
                say_wait(prog.node_wait(nb))
                cond = prog.condition(nb, "Ready")
                if cond is not None and cond.get("status") == "True" and pod is not None and pod.ready:
                    ready_nb = nb
                    break
                # Pod changes do not always change the Notebook: look again shortly.
                if pod is None or not pod.ready:
                    await asyncio.sleep(0.05)
    except TimeoutError as e:
        waited = prog.duration(loop.time() - started_at)
        what = waiting[0] or (
            f"its pod ({last[0].reason or last[0].phase})" if last[0] is not None else "its pod to be created"
        )
        raise FailedPrecondition(
            f"the notebook did not start within the launch timeout of {prog.duration(timeout)} "
            f"(waited {waited} for {what.removeprefix('waiting for ')}); the Notebook {name} stays in the "
            f"cluster and starts when it can: `nbctl launch` again to follow it (--timeout to wait longer), "
            f"`nbctl stop {name}` to stop it",
            reason="StartTimeout",
        ) from e
    finally:
        ticker.cancel()
    assert ready_nb is not None
    status = ready_nb.get("status") or {}
    return Started(
        token_secret=str(status.get("tokenSecret") or f"{name}-token"),
        pod=str(status.get("pod") or (last[0].pod if last[0] else "")),
    )
