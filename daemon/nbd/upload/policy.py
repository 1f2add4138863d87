"""What to do with each answer of the store: the upload's decisions, without I/O.

The client (`nbd.upload.client`) performs requests; this module decides, from a status and an
error body, whether the upload succeeded, should be retried on the same URL after a backoff,
needs a freshly signed URL, or failed for good. It also reads a V4 signed URL's expiry from its
query (`X-Goog-Date` + `X-Goog-Expires`) and computes backoff delays (exponential, jittered).
"""

from __future__ import annotations

import enum
import json
import random
import re
from calendar import timegm
from dataclasses import dataclass
from time import strptime
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Action",
    "Decision",
    "RetryPolicy",
    "backoff_delay",
    "classify",
    "parse_store_error",
    "url_expiry",
]


class Action(enum.Enum):
    DONE = "done"
    RETRY = "retry"  # same URL, after a backoff
    REFRESH_URL = "refresh-url"  # ask for a newly signed URL, then retry at once
    BAD_DIGEST = "bad-digest"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    action: Action
    status: int
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of one upload.

    Attributes:
        max_attempts: PUTs on transient failures (connection errors, resets, stalls, 408/429/5xx).
        max_url_refreshes: New URLs asked for after 401/403 or an expired URL.
        base_delay / max_delay: Exponential backoff bounds in seconds (jittered).
        connect_timeout: Seconds to establish the connection.
        stall_timeout: Seconds without any body byte accepted by the connection before giving up on it.
        response_timeout: Seconds to wait for the answer once the body is sent.
        expiry_margin: A URL expiring within this many seconds is refreshed before use.
        chunk_bytes: Bytes per sendfile call (the progress granularity).
    """

    max_attempts: int = 6
    max_url_refreshes: int = 3
    base_delay: float = 0.5
    max_delay: float = 15.0
    connect_timeout: float = 15.0
    stall_timeout: float = 60.0
    response_timeout: float = 120.0
    expiry_margin: float = 30.0
    chunk_bytes: int = 4 << 20


_CODE = re.compile(r"<Code>\s*([^<]*?)\s*</Code>", re.S)
_MESSAGE = re.compile(r"<Message>\s*([^<]*?)\s*</Message>", re.S)
_REFRESH_CODES = frozenset(
    {"SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "AuthenticationRequired"}
)


def parse_store_error(body: bytes) -> tuple[str, str]:
    """(code, message) from a GCS/S3-style XML error body, or the reason and message of a
    Kubernetes `Status`; ("", "") when there is none."""
    text = body[:16384].decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            status = json.loads(text)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("kind") == "Status":
            return str(status.get("reason") or ""), str(status.get("message") or "")
    code = _CODE.search(text)
    message = _MESSAGE.search(text)
    return (code.group(1) if code else "", message.group(1) if message else "")


def classify(status: int, body: bytes) -> Decision:
    """The action for one answer to a signed PUT."""
    if 200 <= status < 300:
        return Decision(Action.DONE, status)
    code, message = parse_store_error(body)
    if status == 400 and code == "BadDigest":
        return Decision(Action.BAD_DIGEST, status, code, message)
    if status == 403 and code == "Forbidden":
        # RBAC of the API server's service proxy: a new URL would be refused the same way.
        return Decision(Action.FAIL, status, code, message)
    if status in (401, 403) or code in _REFRESH_CODES or (status == 400 and "expired" in message.lower()):
        return Decision(Action.REFRESH_URL, status, code, message)
    if status in (408, 429) or status >= 500:
        return Decision(Action.RETRY, status, code, message)
    return Decision(Action.FAIL, status, code, message)


def url_expiry(url: str) -> float | None:
    """The Unix time at which a signed URL expires, or None when its query does not say.

    GCS and S3 V4 URLs say it as a date plus seconds; the in-cluster store's as Unix seconds.
    """
    query = parse_qs(urlsplit(url).query)
    absolute = (query.get("X-Nbd-Expires") or [""])[0]
    if absolute.isdigit():
        return float(absolute)
    date = (query.get("X-Goog-Date") or query.get("X-Amz-Date") or [""])[0]
    expires = (query.get("X-Goog-Expires") or query.get("X-Amz-Expires") or [""])[0]
    if not date or not expires:
        return None
    try:
        return float(timegm(strptime(date, "%Y%m%dT%H%M%SZ")) + int(expires))
    except ValueError:
        return None


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based): equal jitter under an exponential cap."""
    cap = min(policy.max_delay, policy.base_delay * (2 ** max(0, attempt - 1)))
    jitter = rng.uniform(0, cap / 2) if rng is not None else random.uniform(0, cap / 2)
    return float(cap / 2 + jitter)
