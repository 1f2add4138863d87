"""Turning what the cluster (or the network to it) answers into nbd's error vocabulary.

One place builds the user-facing message for each failure class, whichever HTTP library saw it:
the blocking `kubernetes` client (ApiException, urllib3 errors) or the daemon's aiohttp transport
(status + body, aiohttp/OSError connection errors). The builders are public so other parts of the
daemon (the Launch, the controller client) say the same thing the same way.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import nbdcontract
from nbd.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NbdError,
    NotFound,
    PermissionDenied,
    Unavailable,
)

__all__ = [
    "ResourceRef",
    "NOTEBOOK",
    "RUN",
    "crd_not_installed",
    "cluster_unreachable",
    "error_from_status",
    "error_from_exception",
    "status_message",
]


@dataclass(frozen=True)
class ResourceRef:
    """What a request was about, so a 404 can tell "object missing" from "type not installed".

    Attributes:
        kind: e.g. "Notebook" or "Pod".
        group: API group ("" for core).
        custom: True for a resource served by a CustomResourceDefinition.
        install_hint: What to run to install the CRD.
    """

    kind: str
    group: str = ""
    custom: bool = False
    install_hint: str = "kubectl apply -k cluster/manifests"


NOTEBOOK = ResourceRef(kind=nbdcontract.KIND, group=nbdcontract.GROUP, custom=True)
RUN = ResourceRef(kind=nbdcontract.RUN_KIND, group=nbdcontract.GROUP, custom=True)


def crd_not_installed(resource: ResourceRef = NOTEBOOK) -> FailedPrecondition:
    """The message for a custom resource type the cluster does not serve."""
    return FailedPrecondition(
        f"the {resource.kind} resource is not installed in this cluster; "
        f"install the controller: {resource.install_hint}",
        reason="CRDNotInstalled",
    )


def cluster_unreachable(url: str, detail: str) -> Unavailable:
    """The message for a cluster the daemon cannot connect to."""
    detail = " ".join(detail.split()) or "connection failed"
    return Unavailable(
        f"cannot reach the cluster at {url}: {detail}; check the context/VPN",
        reason="ClusterUnreachable",
    )


def status_message(body: bytes | str | None) -> tuple[str, dict[str, Any] | None]:
    """(message, Status dict) from a response body: a Kubernetes `Status` or plain text."""
    if body is None:
        return "", None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:500], None
    if isinstance(parsed, dict):
        message = parsed.get("message")
        return (str(message) if message else ""), parsed
    return "", None


def _names_an_object(status: dict[str, Any] | None) -> bool:
    if not status:
        return False
    details = status.get("details")
    return isinstance(details, dict) and bool(details.get("name"))


def error_from_status(
    code: int,
    body: bytes | str | None,
    *,
    url: str,
    resource: ResourceRef | None = None,
) -> NbdError:
    """Map one HTTP error answer of the API server to an `NbdError`.

    Args:
        code: HTTP status code (>= 400).
        body: The response body (a `Status` JSON, or text).
        url: The API server URL (not the request path: no secrets, short).
        resource: What was asked for; a 404 on a custom resource type that names no object means
            the CRD is not installed.
    """
    message, status = status_message(body)
    shown = message or f"HTTP {code}"
    if code == 401:
        return PermissionDenied(
            f"the cluster rejected your credentials (401 Unauthorized) at {url}; "
            "log in again or check the user of this context in your kubeconfig",
            reason="Unauthorized",
        )
    if code == 403:
        return PermissionDenied(
            f"the cluster refused the request: {shown}; ask your cluster admin for access "
            "or use another namespace/context",
            reason="Forbidden",
        )
    if code == 404:
        if resource is not None and resource.custom and not _names_an_object(status):
            return crd_not_installed(resource)
        return NotFound(shown, reason="NotFound")
    if code == 409:
        reason = (status or {}).get("reason")
        if reason == "AlreadyExists":
            return AlreadyExists(shown, reason="AlreadyExists")
        return FailedPrecondition(shown, reason="Conflict")
    if code == 410:
        return FailedPrecondition(shown, reason="Expired")
    if code in (400, 422):
        return InvalidArgument(shown, reason=str((status or {}).get("reason") or "Invalid"))
    if code == 504:
        return DeadlineExceeded(
            f"the cluster at {url} timed out ({shown}); try again", reason="ServerTimeout"
        )
    if code in (429, 500, 502, 503):
        return Unavailable(
            f"the cluster at {url} is not answering requests ({code}: {shown}); try again shortly",
            reason="ServerUnavailable",
        )
    return NbdError(f"the cluster at {url} answered {code}: {shown}", reason="UnexpectedStatus")


def _is_tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError somewhere in exc's chain (urllib3/aiohttp wrap it in various ways)."""
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        linked: list[object] = [
            getattr(current, "reason", None),
            getattr(current, "os_error", None),
            getattr(current, "certificate_error", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        queue.extend(x for x in linked if isinstance(x, BaseException))
    return None


def error_from_exception(exc: BaseException, *, url: str, resource: ResourceRef | None = None) -> NbdError:
    """Map any exception raised while talking to the API server to an `NbdError`.

    Handles `kubernetes.client.ApiException`, urllib3 errors, aiohttp errors and OSError; an
    `NbdError` passes through unchanged.
    """
    if isinstance(exc, NbdError):
        return exc
    status = getattr(exc, "status", None)
    # ApiException and aiohttp's ClientResponseError/WSServerHandshakeError carry a status.
    if isinstance(status, int) and status >= 400:
        body = getattr(exc, "body", None)
        return error_from_status(status, body, url=url, resource=resource)
    tls = _is_tls_failure(exc)
    if tls is not None:
        detail = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
        return Unavailable(
            f"TLS with the cluster at {url} failed ({detail}); check certificate-authority / "
            "client certificate in your kubeconfig",
            reason="TLSError",
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return cluster_unreachable(url, "timed out")
    module = type(exc).__module__
    if module.startswith(("urllib3", "aiohttp")) or isinstance(exc, OSError):
        reason = getattr(exc, "reason", None)
        detail = str(reason) if reason is not None else str(exc)
        # urllib3 wraps the useful part: "...: Failed to establish a new connection: [Errno 111] ..."
        if "Errno" in detail:
            detail = detail[detail.index("[Errno") :] if "[Errno" in detail else detail
        return cluster_unreachable(url, detail or type(exc).__name__)
    return NbdError(f"talking to the cluster at {url} failed: {exc}", reason="Internal")
