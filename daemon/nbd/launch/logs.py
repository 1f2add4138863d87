"""The logs capability: a session's notebook log or the log of the build of its context.

Kept apart from the launch: reading a log writes nothing and needs only the session's cluster
client, so it works for any session the registry knows, also one stopped or launched by an earlier
daemon. The pods are the controller's, found by label (`NotebookClient`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from nbd.capabilities import LogSource, LogsQuery
from nbd.errors import FailedPrecondition, NotFound
from nbd.events import LogLine
from nbd.launch.live import KubeClients
from nbd.launch.notebooks import NotebookClient, containers_of
from nbd.session import Session

__all__ = ["NotebookLogs"]


class NotebookLogs:
    """Streams the last pod's log lines, container by container (a `nbd.capabilities.LogReader`)."""

    def __init__(self, clients: KubeClients) -> None:
        self.clients = clients

    async def logs(self, session: Session, query: LogsQuery) -> AsyncIterator[LogLine]:
        kube = await self.clients.for_session(session)
        notebooks = NotebookClient(kube, session.namespace)
        if query.source == LogSource.BUILD:
            if not session.context_md5:
                raise FailedPrecondition(
                    f"session {session.name} has no build (it runs a prebuilt image)", reason="NoBuild"
                )
            pods = await notebooks.build_pods(session.context_md5)
            if not pods:
                raise NotFound(
                    f"the build pod of context {session.context_md5} is gone (the image was built earlier or the "
                    "Job was cleaned up); relaunch after a change to see a new build log",
                    reason="NoBuildPod",
                )
        else:
            pods = await notebooks.notebook_pods(session.name)
            if not pods:
                raise NotFound(
                    f"notebook {session.name} has no pod now (stopped?); relaunch it", reason="NoPod"
                )
        pod = pods[-1]
        containers = [query.container] if query.container else containers_of(pod)
        for container in containers:
            async for line in notebooks.log_lines(
                str(pod["metadata"]["name"]), container, follow=query.follow, tail_lines=query.tail_lines
            ):
                yield LogLine(line, container)
