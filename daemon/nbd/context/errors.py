"""The build context's errors: each names the path at fault and what to do about it."""

from __future__ import annotations

from nbd.errors import FailedPrecondition, InvalidArgument

__all__ = ["ContextError", "MissingDockerfile", "UnreadableFile", "ContextChanged", "BadIgnoreFile"]


class ContextError(FailedPrecondition):
    """The directory cannot be packaged as it is; nothing was uploaded.

    Attributes:
        path: The file or directory at fault (absolute), or "" when the whole context is.
    """

    default_reason = "BadContext"

    def __init__(self, message: str, *, path: str = "", reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.path = path


class MissingDockerfile(ContextError):
    default_reason = "MissingDockerfile"


class UnreadableFile(ContextError):
    default_reason = "UnreadableFile"


class ContextChanged(ContextError):
    default_reason = "ContextChanged"


class BadIgnoreFile(ContextError, InvalidArgument):
    code = InvalidArgument.code
    default_reason = "BadDockerignore"
