"""The daemon's one error vocabulary.

Every failure a user can cause or meet is raised as an `NbdError` subclass carrying a message that
says what happened and what to do. The gRPC layer maps `NbdError.code` to a status code in one
interceptor; nothing below the servicers imports grpc. Causes are chained with `raise ... from e`.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Transport-neutral error classes; the gRPC layer maps each to one status code."""

    INVALID_ARGUMENT = "invalid-argument"
    NOT_FOUND = "not-found"
    ALREADY_EXISTS = "already-exists"
    FAILED_PRECONDITION = "failed-precondition"
    PERMISSION_DENIED = "permission-denied"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline-exceeded"
    CANCELLED = "cancelled"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"


class NbdError(Exception):
    """Base of every error the daemon reports to a user.

    Attributes:
        message: One sentence naming what happened and what to do.
        reason: A stable machine-readable reason (e.g. "CRDNotInstalled").
    """

    code: Code = Code.INTERNAL
    default_reason: str = "Internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return self.message


class InvalidArgument(NbdError):
    code = Code.INVALID_ARGUMENT
    default_reason = "InvalidArgument"


class NotFound(NbdError):
    code = Code.NOT_FOUND
    default_reason = "NotFound"


class AlreadyExists(NbdError):
    code = Code.ALREADY_EXISTS
    default_reason = "AlreadyExists"


class FailedPrecondition(NbdError):
    code = Code.FAILED_PRECONDITION
    default_reason = "FailedPrecondition"


class PermissionDenied(NbdError):
    code = Code.PERMISSION_DENIED
    default_reason = "Forbidden"


class Unavailable(NbdError):
    code = Code.UNAVAILABLE
    default_reason = "Unavailable"


class DeadlineExceeded(NbdError):
    code = Code.DEADLINE_EXCEEDED
    default_reason = "DeadlineExceeded"


class Cancelled(NbdError):
    code = Code.CANCELLED
    default_reason = "Cancelled"


class Unimplemented(NbdError):
    code = Code.UNIMPLEMENTED
    default_reason = "Unimplemented"
