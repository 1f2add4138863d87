"""Whether something accepts connections on a Unix socket: a cheap probe, no gRPC.

The client asks it before it waits for health (is a daemon starting there?); the daemon asks it
before it removes a socket file left behind (is another daemon serving there?).
"""

from __future__ import annotations

import socket as socketlib
from pathlib import Path

__all__ = ["accepts"]


def accepts(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts a connection on the Unix socket `path` within `timeout` seconds."""
    s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
