"""Where the daemon lives on disk: one set of rules shared by the daemon and every client.

The daemon imports this module so that `nbd` and `nbctl` can never disagree about the socket. It
uses only the standard library: a client importing it pays nothing.

Rules (first match wins):
- state dir: `--state-dir`, `$NBD_STATE_DIR`, `$XDG_STATE_HOME/nbd`, `~/.local/state/nbd`;
- socket: `--socket`, `$NBD_SOCKET`, `$XDG_RUNTIME_DIR/nbd/nbd.sock`, `<state dir>/nbd.sock`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = ["DaemonPaths", "resolve", "MAX_SOCKET_PATH"]

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class DaemonPaths(NamedTuple):
    """The daemon's files. Invariant: every path is absolute.

    (A NamedTuple rather than a dataclass: `dataclasses` imports `inspect`, which costs a CLI
    start-up more than this whole module.)
    """

    state_dir: Path
    socket: Path

    @property
    def log_file(self) -> Path:
        return self.state_dir / "nbd.log"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "nbd.lock"

    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    @property
    def target(self) -> str:
        """The gRPC target of the socket."""
        return f"unix:{self.socket}"

    def socket_problem(self) -> str | None:
        """A one-line reason the socket path cannot be used, or None."""
        size = len(os.fsencode(self.socket))
        if size > MAX_SOCKET_PATH:
            return (
                f"the socket path {self.socket} is too long for a Unix socket ({size} bytes, at most "
                f"{MAX_SOCKET_PATH}); set NBD_SOCKET to a shorter path"
            )
        return None


def default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get("NBD_STATE_DIR"):
        return Path(env["NBD_STATE_DIR"]).expanduser()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser() / "nbd"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "nbd"


def resolve(
    socket: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> DaemonPaths:
    """Applies the rules above; explicit arguments win over the environment."""
    env = os.environ if env is None else env
    state = Path(state_dir).expanduser() if state_dir else default_state_dir(env)
    if socket:
        sock = Path(socket).expanduser()
    elif env.get("NBD_SOCKET"):
        sock = Path(env["NBD_SOCKET"]).expanduser()
    elif env.get("XDG_RUNTIME_DIR"):
        sock = Path(env["XDG_RUNTIME_DIR"]) / "nbd" / "nbd.sock"
    else:
        sock = state / "nbd.sock"
    return DaemonPaths(state_dir=Path(os.path.abspath(state)), socket=Path(os.path.abspath(sock)))
