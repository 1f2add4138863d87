"""Serves an `App` over gRPC on the daemon's Unix socket, until asked to stop.

Registers the nbdapi.v1 services, the standard health service (overall "" and each nbdapi service
SERVING while the daemon runs) and server reflection (so `grpcurl -plaintext -unix SOCK list`
works). The socket is created under a 0177 umask, so it is never reachable by others even for an
instant, then chmod'ed 0600. Nothing listens on TCP.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nbd.app import App, import_capabilities, install_imported
from nbd.instance import remove_socket
from nbd.interceptors import ErrorInterceptor
from nbd.servicers import DaemonServicer, NotebooksServicer, RunsServicer
from nbdapi.v1 import daemon_pb2, daemon_pb2_grpc, notebooks_pb2, notebooks_pb2_grpc, runs_pb2, runs_pb2_grpc

__all__ = ["DEFAULT_GRACE", "SERVICE_NAMES", "serve"]

log = logging.getLogger(__name__)

DEFAULT_GRACE = 5.0
NOTEBOOKS_SERVICE = notebooks_pb2.DESCRIPTOR.services_by_name["Notebooks"].full_name
DAEMON_SERVICE = daemon_pb2.DESCRIPTOR.services_by_name["Daemon"].full_name
RUNS_SERVICE = runs_pb2.DESCRIPTOR.services_by_name["Runs"].full_name
SERVICE_NAMES = (NOTEBOOKS_SERVICE, DAEMON_SERVICE, RUNS_SERVICE)


async def serve(app: App, *, grace: float = DEFAULT_GRACE, capabilities: Iterable[str] | None = None) -> None:
    """Starts the server, installs the capabilities (None: the built-in ones), runs the start hooks,
    waits for a shutdown request, then stops cleanly.

    The capabilities are imported in a worker thread once the server answers: Version, List, Get,
    Events and health work at once, and Launch/Stop/Logs/Sync wait until the capabilities are in.
    """
    socket_path = app.paths.socket
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(app.paths.log_file)],
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    notebooks_pb2_grpc.add_NotebooksServicer_to_server(NotebooksServicer(app), server)  # type: ignore[no-untyped-call]
    daemon_pb2_grpc.add_DaemonServicer_to_server(DaemonServicer(app), server)  # type: ignore[no-untyped-call]
    runs_pb2_grpc.add_RunsServicer_to_server(RunsServicer(app), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    old_umask = os.umask(0o177)
    try:
        server.add_insecure_port(f"unix:{socket_path}")
        await server.start()
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    inode = os.lstat(socket_path).st_ino
    log.info("nbd %s serving on %s (pid %d)", app.version, socket_path, os.getpid())

    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def install() -> None:
        try:
            imported = await app.run_blocking(import_capabilities, capabilities)
            installed = install_imported(app, imported)
            log.info("capabilities: %s", ", ".join(installed) or "none")
        finally:
            app.capabilities_ready.set()
        try:
            await app.run_start_hooks()
        finally:
            app.sessions_ready.set()

    app.spawn(install(), name="install capabilities")

    try:
        await app.shutdown_requested.wait()
    finally:
        stop_grace = grace if app.shutdown_grace is None else app.shutdown_grace
        log.info("stopping (grace %.1fs)", stop_grace)
        await health_servicer.enter_graceful_shutdown()
        # Ends every Events stream normally before the server stops waiting for in-flight calls.
        app.bus.close()
        await server.stop(stop_grace)
        await app.run_stop_hooks()
        await app.cancel_background()
        await app.registry.flush()
        remove_socket(socket_path, inode)
        log.info("stopped")


def run(app: App, *, grace: float = DEFAULT_GRACE, capabilities: Iterable[str] | None = None) -> None:
    """Runs `serve` on a fresh event loop, with SIGTERM/SIGINT asking for a graceful stop."""
    import signal

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(app.executor)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.request_shutdown)
        await app.registry.load()
        await serve(app, grace=grace, capabilities=capabilities)

    asyncio.run(main())
