"""The live side of the daemon's sessions: the cluster clients, the runtimes, resume and close.

The launcher, the log reader and the sync commands are separate capabilities that share one
`LiveSessions`: the launcher creates a session's runtime (its forward and sync) when the notebook
is ready and releases it at a stop, the others read it. It also follows each session's Notebook in
the cluster (`nbd.launch.following`) and acts on what `nbd.launch.changes` makes of each state it
sees: a Notebook deleted or suspended elsewhere stops the session's forward and sync (after a last
pull) and the session says so; a spec changed elsewhere is reported, never written back. At daemon
start it reads every followed Notebook first, so what changed while no daemon ran is acted on,
then brings back the ready sessions (`decisions.at_daemon_start` says which, and what of them); at
shutdown it stops every follower and runtime without flushing and closes the clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import logging
import os
import secrets
import socket
from datetime import datetime
from typing import Any

from nbd.app import App
from nbd.errors import NbdError
from nbd.kube import KubeClient, KubeTarget, load_target
from nbd.launch.changes import Gone, Note, Seen, Suspended, gone_changes, judge, suspended_changes
from nbd.launch.decisions import MarkFailed, Resume, at_daemon_start
from nbd.launch.following import NotebookFollower
from nbd.launch.runtime import SessionRuntime
from nbd.session import NotebookState, NotebookStatus, Phase, Session, SessionKey
from nbd.status import utcnow

__all__ = ["KubeClients", "LiveSessions", "daemon_identity"]

log = logging.getLogger(__name__)

# How long a resume waits for the first read of a session's Notebook before it goes on anyway.
FIRST_READ = 15.0
IDENTITY_FILE = "identity"


def daemon_identity(state_dir: str) -> str:
    """This daemon's name on the Notebooks it writes: user@host#id, the id kept in the state dir
    (so two daemons of one user on one machine, with their own state dirs, differ). Blocking.

    A state dir where the id cannot be kept gets an id for this run only (logged): followers of
    its Notebooks then name it differently after a restart, which costs clarity, never data.
    """
    path = os.path.join(state_dir, IDENTITY_FILE)
    try:
        ident = _kept_id(path)
    except OSError as e:
        log.warning("cannot keep the daemon's identity in %s (%s); using one for this run", path, e.strerror)
        ident = secrets.token_hex(4)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}#{ident}"


def _kept_id(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            ident = f.read().strip()
    except FileNotFoundError:
        ident = ""
    if not ident:
        ident = secrets.token_hex(4)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(ident + "\n")
        os.replace(tmp, path)
    return ident


def _idle_fields(seen: Seen | None, now: NotebookStatus) -> dict[str, Any]:
    """The session's view of the controller's idle stop, from the Notebook's status.idle."""
    if seen is None:
        return {
            "idle_stop_after": now.idle_stop_after,
            "idle_stop_at": now.idle_stop_at,
            "idle_message": now.idle_message,
        }
    stop_at = None
    if seen.idle_stop_at:
        try:
            stop_at = datetime.fromisoformat(seen.idle_stop_at.replace("Z", "+00:00"))
        except ValueError:
            stop_at = None
    return {
        "idle_stop_after": seen.idle_stop_after,
        "idle_stop_at": stop_at,
        "idle_message": seen.idle_message,
    }


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
        self.followers: dict[SessionKey, NotebookFollower] = {}
        self.sync_dir = os.path.join(app.paths.state_dir, "sync")
        self.identity = ""

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

    # --- following the Notebook ------------------------------------------------------------------

    def follow(self, key: SessionKey, kube: KubeClient) -> NotebookFollower:
        """Follows the session's Notebook (a no-op when it is followed already)."""
        follower = self.followers.get(key)
        if follower is None or not follower.running:

            async def seen(observed: Seen | None) -> bool:
                return await self._seen(key, observed)

            async def failed(error: NbdError) -> None:
                await self._failed(key, error)

            follower = NotebookFollower(kube, key.namespace, key.name, seen, failed)
            self.followers[key] = follower
            follower.start()
        return follower

    async def unfollow(self, key: SessionKey) -> None:
        follower = self.followers.pop(key, None)
        if follower is not None:
            await follower.stop()

    async def _seen(self, key: SessionKey, observed: Seen | None) -> bool:
        """Acts on one state of the session's Notebook; False once there is nothing more to follow."""
        try:
            return await self._act(key, observed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("acting on the Notebook of %s failed", key)
            return True

    async def _act(self, key: SessionKey, observed: Seen | None) -> bool:
        registry = self.app.registry
        session = registry.find(key)
        if session is None:
            return False
        verdict = judge(session, observed, identity=self.identity)
        if verdict is None:
            return session.phase != Phase.GONE
        if isinstance(verdict, Gone):
            log.info("the Notebook of %s is gone: %s", key, verdict.message)
            await self.release(key)
            current = registry.find(key)
            if current is not None:
                await registry.update(key, **gone_changes(current, verdict))
            self.followers.pop(key, None)
            return False
        if isinstance(verdict, Suspended):
            log.info("the Notebook of %s was suspended elsewhere: %s", key, verdict.message)
            await self.release(key)
            current = registry.find(key)
            if current is not None:
                await registry.update(key, **suspended_changes(current, verdict))
            return True
        await self._note(session, verdict, observed)
        return True

    async def _note(self, session: Session, note: Note, seen: Seen | None = None) -> None:
        now = session.notebook
        wanted = NotebookStatus(
            note.state,
            note.message,
            note.by,
            note.generation or now.generation,
            now.observed,
            **_idle_fields(seen, now),
        )
        record = note.record if note.record is not None else session.runtime.notebook
        if wanted == now and record == session.runtime.notebook:
            return
        if wanted.state != now.state or wanted.message != now.message:
            log.info("the Notebook of %s: %s %s", session.key, note.state.name, note.message)
        changes: dict[str, Any] = {"notebook": dataclasses.replace(wanted, observed=utcnow())}
        if record != session.runtime.notebook:
            changes["runtime"] = dataclasses.replace(session.runtime, notebook=record)
        await self.app.registry.update(session.key, **changes)

    async def _failed(self, key: SessionKey, error: NbdError) -> None:
        session = self.app.registry.find(key)
        if session is None or session.phase == Phase.GONE:
            return
        message = f"cannot read the Notebook in the cluster ({error.message}); retrying"
        if session.notebook.state == NotebookState.ERROR and session.notebook.message == message:
            return
        await self.app.registry.update(
            key,
            notebook=dataclasses.replace(
                session.notebook, state=NotebookState.ERROR, message=message, observed=utcnow()
            ),
        )

    # --- daemon start and stop -------------------------------------------------------------------

    async def resume_all(self, app: App) -> None:
        """At daemon start: read the followed Notebooks and act on what changed while no daemon
        ran, then bring back the forwards and syncs of the sessions still ready (no rebuild)."""
        self.identity = await asyncio.to_thread(daemon_identity, str(app.paths.state_dir))
        for session in list(app.registry.list()):
            action = at_daemon_start(session)
            if isinstance(action, MarkFailed):
                await self.update_if_present(session.key, phase=Phase.FAILED, message=action.message)
        firsts = []
        for session in list(app.registry.list()):
            if session.phase == Phase.GONE or (
                session.runtime.notebook is None and session.phase != Phase.READY
            ):
                continue
            try:
                kube = await self.clients.for_session(session)
            except NbdError as e:
                log.warning("cannot follow the Notebook of %s: %s", session.key, e)
                continue
            firsts.append(self.follow(session.key, kube).first.wait())
        if firsts:
            try:
                async with asyncio.timeout(FIRST_READ):
                    await asyncio.gather(*firsts)
            except TimeoutError:
                log.warning(
                    "some Notebooks were not read within %gs; resuming their sessions anyway", FIRST_READ
                )
        for session in list(app.registry.list()):
            action = at_daemon_start(session)
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
            await runtime.start_sync(
                action.sync.directory, action.sync.remote_root, max_file_size=action.sync.max_file_size
            )
        log.info("resumed session %s", session.key)

    async def close(self, app: App) -> None:
        for key in list(self.followers):
            await self.unfollow(key)
        for key, runtime in list(self.runtimes.items()):
            try:
                await runtime.stop(flush=False)
            except Exception:
                log.exception("stopping session %s failed", key)
        self.runtimes.clear()
        await self.clients.aclose()
