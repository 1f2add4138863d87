"""The start of one launch's notebook: from the applied Notebook to its Ready pod.

The controller creates the pod; the launch only watches. Every Notebook status is read once it
describes this launch's spec (`progress.is_current`), the pod's changes go out as `PodStatus`
events, and a start that cannot succeed (unschedulable with no pool that fits, a crash loop, an
image that cannot be pulled) ends with the controller's reason as soon as it says so
(`progress.start_failure`), not at the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbd.errors import FailedPrecondition
from nbd.events import Failure, LaunchPayload, PodStatus
from nbd.launch import progress as prog
from nbd.launch.notebooks import NotebookClient

__all__ = ["START_TIMEOUT", "StartError", "Started", "wait_until_ready"]

START_TIMEOUT = 900.0

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


async def wait_until_ready(notebooks: NotebookClient, name: str, emit: Emit) -> Started:
    """Waits until the Notebook is Ready for this launch's spec and its pod is ready."""
    last: list[PodStatus | None] = [None]

    async def pod_of(nb: dict[str, Any]) -> PodStatus | None:
        # A pod being deleted belongs to the previous spec: the controller replaces it.
        pods = [p for p in await notebooks.notebook_pods(name) if not p["metadata"].get("deletionTimestamp")]
        return prog.pod_status(pods[-1]) if pods else None

    ready_nb: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT):
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
                cond = prog.condition(nb, "Ready")
                if cond is not None and cond.get("status") == "True" and pod is not None and pod.ready:
                    ready_nb = nb
                    break
                # Pod changes do not always change the Notebook: look again shortly.
                if pod is None or not pod.ready:
                    await asyncio.sleep(0.05)
    except TimeoutError as e:
        raise FailedPrecondition(
            f"the notebook did not become ready within {START_TIMEOUT:.0f}s; see `nbctl logs {name}`",
            reason="StartTimeout",
        ) from e
    assert ready_nb is not None
    status = ready_nb.get("status") or {}
    return Started(
        token_secret=str(status.get("tokenSecret") or f"{name}-token"),
        pod=str(status.get("pod") or (last[0].pod if last[0] else "")),
    )
