"""Choosing and binding the local port of a forward.

A notebook keeps its URL across relaunches and daemon restarts: the caller passes the port it
remembers (`preferred`) and gets it back if it is free, else the next free one in a bounded scan.
A port the user asked for explicitly is never silently replaced: if it is taken, that is an error
naming the port. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import errno
import socket

from nbd.errors import FailedPrecondition, InvalidArgument, Unavailable

__all__ = ["LOOPBACK", "SCAN", "bind_port", "choose_port", "port_in_use"]

LOOPBACK = "127.0.0.1"
SCAN = 100  # ports tried after the preferred one


def port_in_use(port: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"port {port} on {LOOPBACK} is in use by another program; "
        "choose another with --port or stop that program",
        reason="PortInUse",
    )


def _try_bind(port: int) -> socket.socket | None:
    """A listening-ready socket bound to 127.0.0.1:port, or None if the port is taken.

    SO_REUSEADDR matches what asyncio servers set: a port in TIME_WAIT is free, a listening one is not.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(512)
    except OSError as e:
        sock.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise
    return sock


def _check(port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise InvalidArgument(f"{what} {port} is not a TCP port (1-65535)", reason="InvalidPort")


def bind_port(preferred: int | None, explicit: int | None, *, scan: int = SCAN) -> socket.socket:
    """Bind the forward's listening socket on 127.0.0.1 (already listening, non-blocking).

    Args:
        preferred: The port remembered for this notebook: used if free, else the next free one
            within `scan` ports.
        explicit: A port the user asked for: used, or an error (never another port).

    Raises:
        FailedPrecondition: `explicit` is taken (reason PortInUse).
        Unavailable: no free port in the scanned range (reason PortInUse).
    """
    if explicit is not None:
        _check(explicit, "port")
        sock = _try_bind(explicit)
        if sock is None:
            raise port_in_use(explicit)
    elif preferred is not None and preferred != 0:
        _check(preferred, "preferred port")
        for port in range(preferred, min(preferred + scan, 65535) + 1):
            sock = _try_bind(port)
            if sock is not None:
                break
        else:
            raise Unavailable(
                f"ports {preferred}-{min(preferred + scan, 65535)} on {LOOPBACK} are all in use; "
                "choose another with --port",
                reason="PortInUse",
            )
    else:
        sock = _try_bind(0)
        if sock is None:  # pragma: no cover - the kernel always has an ephemeral port
            raise Unavailable(f"no free port on {LOOPBACK}", reason="PortInUse")
    sock.setblocking(False)
    return sock


def choose_port(preferred: int | None, explicit: int | None, *, scan: int = SCAN) -> int:
    """The port `bind_port` would bind now (the socket is released again)."""
    sock = bind_port(preferred, explicit, scan=scan)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()
