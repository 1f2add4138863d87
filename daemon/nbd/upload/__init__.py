"""The signed-URL upload client: streams the spooled build context to object storage.

Public API:

    async upload(path, md5_b64, get_url, *, progress=None, cancel=None, session=None,
                 policy=RetryPolicy()) -> UploadResult
        One streaming PUT with `Content-MD5`, `Content-Type: application/octet-stream` and an
        explicit `Content-Length`; retries transient failures with backoff, asks `get_url()` for a
        fresh URL on 401/403/expiry, and raises `BadDigest` / `UploadRejected` / `UploadForbidden` /
        `UploadFailed` (all `nbd.errors.NbdError`s) or `nbd.errors.Cancelled`.

    SignedURL(url, expires_at=None)        what `get_url()` returns
    Destination / Resolve                  a path-only URL (`/api/...`) sent to the API server with
                                           the kubeconfig's credentials (the in-cluster store)
    UploadProgress(done_bytes, total_bytes, bytes_per_second, eta_seconds, attempt)
    RetryPolicy(...)                       attempts, backoff, timeouts, chunk size

Decisions live in `nbd.upload.policy` (pure); the I/O in `nbd.upload.client`.
"""

from __future__ import annotations

from .client import CancelFlag, Destination, Resolve, SignedURL, UploadProgress, UploadResult, upload
from .errors import BadDigest, UploadError, UploadFailed, UploadForbidden, UploadRejected
from .policy import RetryPolicy

__all__ = [
    "BadDigest",
    "CancelFlag",
    "Destination",
    "Resolve",
    "RetryPolicy",
    "SignedURL",
    "UploadError",
    "UploadFailed",
    "UploadForbidden",
    "UploadProgress",
    "UploadRejected",
    "UploadResult",
    "upload",
]
