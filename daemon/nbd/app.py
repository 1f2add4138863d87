"""The daemon's wiring: one `App` holds the registry, the event bus, the capabilities and the pool.

It is what a capability receives in `install(app)`: everything a capability needs from the daemon
is here, and nothing here knows about gRPC. `nbd.server` serves an App; tests can build one without
a server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from types import ModuleType
from typing import ParamSpec, TypeVar

from nbd.bus import EventBus
from nbd.capabilities import Capabilities
from nbd.errors import Unavailable
from nbd.events import SessionEvent
from nbd.registry import SessionRegistry
from nbd.session import utcnow
from nbd.store import SessionStore
from nbdlocal.paths import DaemonPaths

__all__ = [
    "App",
    "BUILTIN",
    "Hook",
    "import_capabilities",
    "install_capabilities",
    "install_imported",
]

log = logging.getLogger(__name__)

# How long a session RPC waits for the resume of the persisted sessions at daemon start.
SESSIONS_WAIT = 30.0
# The reason of the UNAVAILABLE answer when that wait runs out; clients retry on it.
SESSIONS_RESUMING = "SessionsResuming"

P = ParamSpec("P")
R = TypeVar("R")

Hook = Callable[["App"], Awaitable[None]]

# Bounded: blocking work (kubernetes calls, file I/O) queues here instead of spawning threads
# without limit.
DEFAULT_WORKERS = 16

# The capabilities this daemon has, each a module `nbd.<name>.capability` with `install(app)`.
# Listed, not discovered: what the daemon serves is decided here, and a stray package cannot add
# itself (tests/daemon/test_capabilities.py keeps this list and the modules in step).
BUILTIN: tuple[str, ...] = ("launch", "runs")


class App:
    """The running daemon, as capabilities see it.

    Attributes:
        paths: The daemon's socket, state dir, log and lock files.
        version: The version the daemon reports.
        started: When the daemon started (UTC).
        registry: The sessions (see `nbd.registry.SessionRegistry`).
        bus: Session events; publish through the registry, subscribe through `registry.subscribe`.
        capabilities: The optional launch / logs / sync implementations.
        executor: The bounded pool that `run_blocking` uses (also the loop's default executor,
            so `asyncio.to_thread` is bounded too once the daemon runs).
    """

    def __init__(self, paths: DaemonPaths, version: str, *, workers: int = DEFAULT_WORKERS) -> None:
        self.paths = paths
        self.version = version
        self.started: datetime = utcnow()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="nbd-worker"
        )
        self.bus: EventBus[SessionEvent] = EventBus()
        self.registry = SessionRegistry(SessionStore(paths.sessions_dir), self.bus, self._run_blocking_thunk)
        self.capabilities = Capabilities()
        self._start_hooks: list[tuple[str, Hook]] = []
        self._stop_hooks: list[tuple[str, Hook]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.shutdown_requested = asyncio.Event()
        self.shutdown_grace: float | None = None
        # Set once the capabilities are installed; the RPCs they serve wait for it, so a client
        # that connects while they load gets an answer, never a spurious UNIMPLEMENTED.
        self.capabilities_ready = asyncio.Event()
        # Set once the start hooks (the resume of the persisted sessions) are done; the RPCs that
        # touch sessions wait for it, at most `sessions_wait` seconds, then answer UNAVAILABLE.
        self.sessions_ready = asyncio.Event()
        self.sessions_wait = SESSIONS_WAIT

    # --- blocking work ---------------------------------------------------------------------------

    async def run_blocking(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Runs a blocking call in the bounded pool without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def _run_blocking_thunk(self, fn: Callable[[], R]) -> R:
        return await self.run_blocking(fn)

    # --- hooks -----------------------------------------------------------------------------------

    def on_start(self, hook: Hook, *, name: str | None = None) -> None:
        """Runs `hook(app)` once the sessions are loaded and the server listens (e.g. to resume
        persisted sessions). Hooks run concurrently as background tasks; a failing hook is logged
        and never stops the daemon."""
        self._start_hooks.append((name or str(getattr(hook, "__qualname__", "hook")), hook))

    def on_stop(self, hook: Hook, *, name: str | None = None) -> None:
        """Runs `hook(app)` at shutdown after the server stopped accepting calls (close forwards,
        flush syncs); stop hooks run in reverse order of registration, each one awaited."""
        self._stop_hooks.append((name or str(getattr(hook, "__qualname__", "hook")), hook))

    async def run_start_hooks(self) -> None:
        """Runs the start hooks concurrently and returns once all of them are done."""
        tasks = [
            self.spawn(self._guarded(name, hook), name=f"start:{name}") for name, hook in self._start_hooks
        ]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_sessions_ready(self) -> None:
        """Returns once the persisted sessions are resumed; raises `Unavailable` (which clients
        retry on) if that takes longer than `sessions_wait`."""
        await self.capabilities_ready.wait()
        if self.sessions_ready.is_set():
            return
        try:
            await asyncio.wait_for(self.sessions_ready.wait(), self.sessions_wait)
        except TimeoutError:
            raise Unavailable(
                "the daemon is still resuming its sessions; try again in a moment", reason=SESSIONS_RESUMING
            ) from None

    async def run_stop_hooks(self) -> None:
        for name, hook in reversed(self._stop_hooks):
            await self._guarded(name, hook)

    async def _guarded(self, name: str, hook: Hook) -> None:
        try:
            await hook(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hook %s failed", name)

    def spawn(self, coro: Awaitable[None], *, name: str) -> asyncio.Task[None]:
        """Runs a background task the daemon keeps a reference to and cancels at shutdown."""

        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def cancel_background(self) -> None:
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- life ------------------------------------------------------------------------------------

    def request_shutdown(self, grace: float | None = None) -> None:
        """Asks the daemon to stop gracefully (Shutdown RPC, SIGTERM, SIGINT)."""
        self.shutdown_grace = grace
        self.shutdown_requested.set()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _module_name(name: str) -> str:
    # A dotted name is a module path (capabilities living outside the nbd package, e.g. tests').
    return name if "." in name else f"nbd.{name}.capability"


def import_capabilities(names: Iterable[str] | None = None) -> list[tuple[str, ModuleType | BaseException]]:
    """Imports the capability modules (default: `BUILTIN`); each is a module or its error.

    Blocking and slow (capabilities pull in kubernetes): the server runs it in a worker thread
    while it already answers.
    """
    imported: list[tuple[str, ModuleType | BaseException]] = []
    for name in BUILTIN if names is None else names:
        try:
            imported.append((name, importlib.import_module(_module_name(name))))
        except Exception as e:
            imported.append((name, e))
    return imported


def install_imported(app: App, imported: Iterable[tuple[str, ModuleType | BaseException]]) -> list[str]:
    """Calls `install(app)` of each imported capability module; returns the installed names.

    A capability that fails (to import or to install) is logged and recorded in
    `app.capabilities.problems`, so its RPCs say why they are unavailable; the daemon still runs.
    """
    installed = []
    for name, module in imported:
        try:
            if isinstance(module, BaseException):
                raise module
            install = module.install
            install(app)
        except Exception as e:
            log.error("capability %s failed to install", name, exc_info=e)
            app.capabilities.problems[name] = f"{type(e).__name__}: {e}"
            continue
        installed.append(name)
        log.info("installed capability %s", name)
    return installed


def install_capabilities(app: App, names: Iterable[str] | None = None) -> list[str]:
    """Imports and installs capabilities in one blocking step (for tests and tools)."""
    return install_imported(app, import_capabilities(names))
