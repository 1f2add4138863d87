"""HMAC-signed URLs of the in-cluster store: pure, no I/O.

A URL's query carries `X-Nbd-Expires` (Unix seconds) and `X-Nbd-Signature`, the hex HMAC-SHA256,
under the store's key, of the method, the object path, the Content-MD5 (base64) and Content-Type
the request must carry, and the expiry. So a PUT URL accepts exactly one content (its MD5 and type
are bound, as in a GCS or S3 V4 signature), a GET URL only reads, and neither outlives its expiry.
The key never leaves the controller's pod; the URLs are secrets all the same (never logged).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode

__all__ = ["EXPIRES", "SIGNATURE", "Refusal", "sign_query", "verify"]

EXPIRES = "X-Nbd-Expires"
SIGNATURE = "X-Nbd-Signature"


def _mac(key: bytes, method: str, path: str, content_md5: str, content_type: str, expires: int) -> str:
    message = "\n".join(["NBD-HMAC-SHA256", method.upper(), path, content_md5, content_type, str(expires)])
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign_query(
    key: bytes, method: str, path: str, expires: int, content_md5: str = "", content_type: str = ""
) -> str:
    """The query string (without `?`) that authorizes `method path` until `expires`."""
    return urlencode(
        {EXPIRES: str(expires), SIGNATURE: _mac(key, method, path, content_md5, content_type, expires)}
    )


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, as an S3-style error: HTTP status, code and message."""

    status: int
    code: str
    message: str


def verify(
    key: bytes,
    method: str,
    path: str,
    query: dict[str, str],
    content_md5: str,
    content_type: str,
    now: float,
) -> Refusal | None:
    """None when the request is authorized, else the refusal to answer (S3's codes and statuses)."""
    expires_raw = query.get(EXPIRES, "")
    signature = query.get(SIGNATURE, "")
    if not expires_raw or not signature:
        return Refusal(403, "AccessDenied", "Query-string authentication is required")
    try:
        expires = int(expires_raw)
    except ValueError:
        return Refusal(403, "AccessDenied", "X-Nbd-Expires is not a number")
    expected = _mac(key, method, path, content_md5, content_type, expires)
    if not hmac.compare_digest(expected, signature):
        return Refusal(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided",
        )
    if now > expires:
        return Refusal(403, "AccessDenied", "Request has expired")
    return None
