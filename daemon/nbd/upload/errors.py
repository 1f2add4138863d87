"""Upload errors: what the store said, and what the user should do about it."""

from __future__ import annotations

from nbd.errors import FailedPrecondition, NbdError, PermissionDenied, Unavailable

__all__ = ["UploadError", "UploadFailed", "BadDigest", "UploadRejected", "UploadForbidden"]


class UploadError(NbdError):
    """Base of upload failures. Nothing was committed: a PUT to object storage is atomic.

    Attributes:
        status: The last HTTP status (0 when the request never got an answer).
        store_code: The store's error code from its XML body (e.g. "SignatureDoesNotMatch"), or "".
    """

    default_reason = "UploadFailed"

    def __init__(
        self, message: str, *, reason: str | None = None, status: int = 0, store_code: str = ""
    ) -> None:
        super().__init__(message, reason=reason)
        self.status = status
        self.store_code = store_code


class UploadFailed(UploadError, Unavailable):
    """Transient failures (connection errors, 5xx, stalls) outlasted the retries."""

    default_reason = "UploadFailed"


class BadDigest(UploadError, FailedPrecondition):
    """The bytes received did not match their Content-MD5; not retried (the file changed?)."""

    default_reason = "BadDigest"


class UploadRejected(UploadError, FailedPrecondition):
    """The store refused the request for a reason a retry cannot fix."""

    default_reason = "UploadRejected"


class UploadForbidden(UploadError, PermissionDenied):
    """Signed URLs kept being refused (signature or expiry) even after asking for fresh ones."""

    default_reason = "UploadForbidden"
