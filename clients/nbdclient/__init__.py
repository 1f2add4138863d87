"""nbdclient: the Python client library of the nbd daemon.

    import nbdclient
    with nbdclient.connect() as client:          # starts the daemon when needed
        for session in client.list(): ...
        for event in client.launch(directory="/abs/dir"): ...

It imports only grpc, the generated nbdapi stubs and the local plumbing it shares with the daemon
(`nbdlocal`: socket discovery, the version, the socket probe), never `nbd` or `kubernetes`, so
programs built on it start fast. The asyncio flavour is `nbdclient.aio` (`connect_async`,
`AsyncClient`). Exports are loaded lazily: `import nbdclient` alone costs next to nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbdlocal.version import API_VERSION, __version__

if TYPE_CHECKING:
    from nbdclient.aio import AsyncClient, AsyncStream, connect_async
    from nbdclient.client import Client, Stream, connect
    from nbdclient.errors import DaemonNotRunning, DaemonStartError, NbdClientError, VersionMismatch

__all__ = [
    "API_VERSION",
    "AsyncClient",
    "AsyncStream",
    "Client",
    "DaemonNotRunning",
    "DaemonStartError",
    "NbdClientError",
    "Stream",
    "VersionMismatch",
    "__version__",
    "connect",
    "connect_async",
]

_LAZY = {
    "AsyncClient": "nbdclient.aio",
    "AsyncStream": "nbdclient.aio",
    "connect_async": "nbdclient.aio",
    "Client": "nbdclient.client",
    "Stream": "nbdclient.client",
    "connect": "nbdclient.client",
    "DaemonNotRunning": "nbdclient.errors",
    "DaemonStartError": "nbdclient.errors",
    "NbdClientError": "nbdclient.errors",
    "VersionMismatch": "nbdclient.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbdclient' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
