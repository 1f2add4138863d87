"""The live side of the daemon's sessions: the cluster clients, the runtimes, resume and close.

The launcher, the log reader and the sync commands are separate capabilities that share one
`LiveSessions`: the launcher creates a session's runtime (its forward and sync) when the notebook
is ready and releases it at a stop, the others read it. At daemon start it brings back the ready
sessions (`decisions.at_daemon_start` says which, and what of them); at shutdown it stops every
runtime without flushing and closes the clients.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from nbd.app import App
from nbd.errors import NbdError
from nbd.kube import KubeClient, KubeTarget, load_target
from nbd.launch.decisions import MarkFailed, Resume, at_daemon_start
from nbd.launch.runtime import SessionRuntime
from nbd.session import Phase, Session, SessionKey

__all__ = ["KubeClients", "LiveSessions"]

log = logging.getLogger(__name__)


class KubeClients:
    """One client per (kubeconfig, context), shared by that cluster's sessions."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], KubeClient] = {}

    def for_target(self, target: KubeTarget) -> KubeClient:
        key = (target.kubeconfig, target.context)
        client = self._clients.get(key)
        if client is None:
            client = KubeClient(target)
            self._clients[key] = client
        return client

    async def for_session(self, session: Session) -> KubeClient:
        """The client of a session's cluster, loading its kubeconfig when no client exists yet."""
        key = (session.kubeconfig, session.context)
        client = self._clients.get(key)
        if client is None:
            target = await load_target(
                session.kubeconfig or None, session.context or None, session.namespace or None
            )
            client = KubeClient(target)
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class LiveSessions:
    """The runtimes of the sessions this daemon keeps forwarded and in sync, by key."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.clients = KubeClients()
        self.runtimes: dict[SessionKey, SessionRuntime] = {}
        self.sync_dir = os.path.join(app.paths.state_dir, "sync")

    def runtime(self, key: SessionKey) -> SessionRuntime | None:
        return self.runtimes.get(key)

    def runtime_for(self, key: SessionKey, kube: KubeClient) -> SessionRuntime:
        """The session's runtime, created on first use (a relaunch re-uses the running one)."""
        runtime = self.runtimes.get(key)
        if runtime is None:
            runtime = SessionRuntime(self.app.registry, key, kube, self.sync_dir)
            self.runtimes[key] = runtime
        return runtime

    async def release(self, key: SessionKey) -> None:
        """Stops the session's forward and sync (letting the sync settle) and forgets them."""
        runtime = self.runtimes.pop(key, None)
        if runtime is not None:
            await runtime.stop(flush=True)

    async def update_if_present(self, key: SessionKey, **changes: Any) -> None:
        """Changes the session unless it left the registry meanwhile (a stop with --delete)."""
        if self.app.registry.find(key) is not None:
            await self.app.registry.update(key, **changes)

    # --- daemon start and stop -------------------------------------------------------------------

    async def resume_all(self, app: App) -> None:
        """At daemon start: bring back the forwards and syncs of ready sessions (no rebuild)."""
        for session in list(app.registry.list()):
            action = at_daemon_start(session)
            if isinstance(action, MarkFailed):
                await self.update_if_present(session.key, phase=Phase.FAILED, message=action.message)
            if not isinstance(action, Resume):
                continue
            try:
                await self.resume(session, action)
            except NbdError as e:
                log.warning("could not resume session %s: %s", session.key, e)
                await self.update_if_present(session.key, message=f"could not resume: {e.message}")
            except Exception:
                log.exception("could not resume session %s", session.key)

    async def resume(self, session: Session, action: Resume) -> None:
        kube = await self.clients.for_session(session)
        runtime = SessionRuntime(self.app.registry, session.key, kube, self.sync_dir)
        self.runtimes[session.key] = runtime
        if action.forward is not None:
            await runtime.restore_forward(action.forward)
        if action.sync is not None:
            await runtime.start_sync(action.sync.directory, action.sync.remote_root)
        log.info("resumed session %s", session.key)

    async def close(self, app: App) -> None:
        for key, runtime in list(self.runtimes.items()):
            try:
                await runtime.stop(flush=False)
            except Exception:
                log.exception("stopping session %s failed", key)
        self.runtimes.clear()
        await self.clients.aclose()
