"""The client's one error type: what went wrong, as the daemon (or the client) said it.

Every failure of a client call is an `NbdClientError` carrying the gRPC status code, the daemon's
one-line message and its stable reason (from the `nbd-reason` trailing metadata), so a CLI prints
`message` and an editor can branch on `code` or `reason`.
"""

from __future__ import annotations

from typing import Any

import grpc

__all__ = [
    "DaemonNotRunning",
    "DaemonStartError",
    "NbdClientError",
    "REASON_WORKSPACE_KEPT",
    "SESSIONS_RESUMING",
    "VersionMismatch",
    "from_rpc_error",
]

REASON_METADATA = "nbd-reason"
# The reason of a `stop(delete=True)` refused because the notebook's workspace claim (and every file
# on it) would be deleted with it: ask, then stop again with `delete_workspace=True`.
REASON_WORKSPACE_KEPT = "WorkspaceKept"
# The reason of an UNAVAILABLE answer from a daemon still resuming its sessions (retry it).
SESSIONS_RESUMING = "SessionsResuming"


class NbdClientError(Exception):
    """A failed call. `code` is a grpc.StatusCode; `message` is one sentence for the user."""

    def __init__(
        self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return self.message


class DaemonNotRunning(NbdClientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, grpc.StatusCode.UNAVAILABLE, "DaemonNotRunning")


class DaemonStartError(NbdClientError):
    def __init__(self, message: str) -> None:
        super().__init__(message, grpc.StatusCode.UNAVAILABLE, "DaemonStartFailed")


class VersionMismatch(NbdClientError):
    def __init__(self, daemon_version: str, client_version: str) -> None:
        super().__init__(
            f"nbd daemon is version {daemon_version} but this client is {client_version}; "
            "restart it with `nbctl daemon stop` (it restarts on next use)",
            grpc.StatusCode.FAILED_PRECONDITION,
            "VersionMismatch",
        )
        self.daemon_version = daemon_version
        self.client_version = client_version


def _reason(error: Any) -> str:
    try:
        metadata = error.trailing_metadata() or ()
    except Exception:
        return ""
    for key, value in metadata:
        if key == REASON_METADATA:
            return str(value)
    return ""


def from_rpc_error(error: grpc.RpcError, socket: str = "", log_file: str = "") -> NbdClientError:
    """Turns a gRPC error into an NbdClientError; transport failures get a message of their own."""
    code: grpc.StatusCode = error.code()
    details: str = error.details() or ""
    reason = _reason(error)
    if not reason and code == grpc.StatusCode.UNAVAILABLE:
        where = f" at {socket}" if socket else ""
        see = f"; see its log {log_file}" if log_file else ""
        return NbdClientError(f"lost the connection to the nbd daemon{where}{see}", code, "DaemonUnavailable")
    if not reason and code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NbdClientError("the nbd daemon did not answer in time", code, "DeadlineExceeded")
    return NbdClientError(details or code.name.lower().replace("_", " "), code, reason)
