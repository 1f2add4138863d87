"""The signed-URL upload: one streaming PUT of the spooled context, retried until it lands.

Why a PUT of the whole file: the controller signs a URL bound to the archive's Content-MD5, and
GCS commits a PUT atomically only if the bytes match it, so an interrupted or cancelled upload
never leaves a partial object behind, and a retry simply starts again from the first byte. The
file is sent by the kernel from the page cache (`nbd.upload.http`), never held in memory.

Failure handling follows `nbd.upload.policy`: connection errors, resets, stalls and 408/429/5xx are
retried with a jittered exponential backoff, up to `max_attempts`; 401/403 and expired URLs get a
freshly signed URL from `get_url()`; 400 BadDigest is final (the bytes no longer match their MD5);
any other 4xx is final with the store's error code. Signed URLs are secrets: they never appear in
messages or logs (only scheme, host and path do).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from nbd.errors import Cancelled

from .errors import BadDigest, UploadFailed, UploadForbidden, UploadRejected
from .http import ProxyRefused, put_file
from .policy import Action, RetryPolicy, backoff_delay, classify, url_expiry
from .proxy import Proxy, ProxySettingError, proxy_for

__all__ = ["CancelFlag", "Destination", "Resolve", "SignedURL", "UploadProgress", "UploadResult", "upload"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/octet-stream"
_PROGRESS_INTERVAL = 0.1
_RATE_WINDOW = 3.0


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class SignedURL:
    """A URL accepting one PUT of the archive.

    Attributes:
        url: The signed URL (a secret: never log it).
        expires_at: Unix time of expiry; None to read it from the URL's X-Goog-Date/X-Goog-Expires.
    """

    url: str
    expires_at: float | None = None

    def expiry(self) -> float | None:
        return self.expires_at if self.expires_at is not None else url_expiry(self.url)


@dataclass(frozen=True)
class Destination:
    """Where one PUT goes and how: the whole URL, extra headers (credentials), TLS settings.

    A store's own signed URL needs nothing more. A URL that is a path on the Kubernetes API
    server (the in-cluster store, through the service proxy) gets the API server's address, the
    kubeconfig's credentials and CA, and its proxy, from the `Resolve` the caller passes.
    """

    url: str
    headers: dict[str, str]
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    proxy: Proxy | None = None
    via_api_server: bool = False


# Turns a path-only signed URL ("/api/v1/namespaces/NS/services/NAME:PORT/proxy/...") into a
# Destination on the API server, with credentials fresh at each attempt.
Resolve = Callable[[str], Awaitable[Destination]]


@dataclass(frozen=True)
class UploadProgress:
    done_bytes: int
    total_bytes: int
    bytes_per_second: float
    eta_seconds: float  # -1 when unknown
    attempt: int


@dataclass(frozen=True)
class UploadResult:
    size: int
    attempts: int
    url_refreshes: int
    seconds: float


class _Transient(Exception):
    """A failure worth another attempt on the same URL."""


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path


class _Meter:
    """Counts body bytes handed to the connection and reports rate and ETA, throttled."""

    def __init__(self, total: int, attempt: int, progress: Callable[[UploadProgress], None] | None) -> None:
        self.total = total
        self.attempt = attempt
        self.done = 0
        self.last_progress = time.monotonic()
        self._progress = progress
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(self.last_progress, 0)])
        self._last_report = 0.0

    def add(self, n: int) -> None:
        now = time.monotonic()
        self.done += n
        self.last_progress = now
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > _RATE_WINDOW:
            self._samples.popleft()
        if self._progress is not None and (
            now - self._last_report >= _PROGRESS_INTERVAL or self.done == self.total
        ):
            self._last_report = now
            self._progress(self.snapshot(now))

    def snapshot(self, now: float | None = None) -> UploadProgress:
        now = time.monotonic() if now is None else now
        t0, b0 = self._samples[0]
        rate = (self.done - b0) / (now - t0) if now > t0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else -1.0
        return UploadProgress(self.done, self.total, rate, eta, self.attempt)


async def _put_once(
    destination: Destination,
    path: str,
    size: int,
    md5_b64: str,
    meter: _Meter,
    policy: RetryPolicy,
    cancel: CancelFlag | None,
) -> tuple[int, bytes]:
    """One PUT; returns (status, body). Raises _Transient on connection failures and stalls."""
    headers = {**destination.headers, "Content-MD5": md5_b64, "Content-Type": CONTENT_TYPE}
    url = destination.url
    proxy = destination.proxy if destination.via_api_server else _proxy(url)
    task = asyncio.ensure_future(
        put_file(
            url,
            headers,
            path,
            size,
            meter.add,
            connect_timeout=policy.connect_timeout,
            response_timeout=policy.response_timeout,
            chunk_bytes=policy.chunk_bytes,
            proxy=proxy,
            ssl_context=destination.ssl_context,
            server_hostname=destination.server_hostname,
        )
    )
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(0.25, policy.stall_timeout / 4))
            if done:
                break
            if cancel is not None and cancel.is_set():
                raise Cancelled("the upload was cancelled; nothing was stored", reason="Cancelled")
            if meter.done < size and time.monotonic() - meter.last_progress > policy.stall_timeout:
                raise _Transient(f"no progress for {policy.stall_timeout:g} s")
        try:
            return task.result()
        except ProxyRefused as e:
            if e.status == 407:
                raise UploadRejected(
                    f"{e}: the proxy asks for credentials; put them in {e.proxy.variable} as "
                    f"http://USER:PASSWORD@{e.proxy.address}",
                    reason="ProxyAuthenticationRequired",
                    status=e.status,
                ) from e
            if e.status == 403:
                raise UploadRejected(
                    f"{e}: the proxy does not allow it; ask its admins to, or add {e.target.rpartition(':')[0]} "
                    "to NO_PROXY if it is reachable directly",
                    reason="ProxyForbidden",
                    status=e.status,
                ) from e
            raise _Transient(str(e)) from e
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
            raise _Transient(_describe(e)) from e
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass


def _proxy(url: str) -> Proxy | None:
    """The proxy for `url` from this process's environment (read per attempt: cheap, and current)."""
    try:
        return proxy_for(url, os.environ)
    except ProxySettingError as e:
        raise UploadRejected(str(e), reason="ProxySetting") from e


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, asyncio.IncompleteReadError):
        return "the connection closed before the answer was complete"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _spooled_size(path: str) -> int:
    """The archive's size; -1 when it is gone (every attempt re-reads it from the first byte)."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


async def _sleep_unless_cancelled(seconds: float, cancel: CancelFlag | None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the upload was cancelled; nothing was stored", reason="Cancelled")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.2))


async def upload(
    path: str | os.PathLike[str],
    md5_b64: str,
    get_url: Callable[[], Awaitable[SignedURL]],
    *,
    progress: Callable[[UploadProgress], None] | None = None,
    cancel: CancelFlag | None = None,
    policy: RetryPolicy = RetryPolicy(),
    resolve: Resolve | None = None,
) -> UploadResult:
    """PUTs the file at `path` to a signed URL, with retries; returns when the store has it.

    Args:
        path: The spooled archive.
        md5_b64: Its MD5, base64 (sent as Content-MD5; the URL is signed for it).
        get_url: Returns a signed URL; called once at the start and again whenever the store
            refuses the signature or the URL has expired (or is about to).
        progress: Called on the event loop with byte progress (at most every 100 ms, and at the end).
        cancel: Checked continuously; when set the request is aborted and `Cancelled` raised.
            Cancelling the awaiting task works as well. Either way nothing is committed.
        policy: Retry bounds and timeouts.
        resolve: For a signed URL that is a path on the API server (`/api/...`): where and with
            which credentials to send it (see `Destination`); called before every attempt.

    Raises:
        BadDigest: the store received bytes that do not match md5_b64 (not retried).
        UploadForbidden: the store kept refusing fresh URLs (401/403/expired).
        UploadRejected: any other 4xx, with the store's error code.
        UploadFailed: transient failures outlasted `policy.max_attempts`.
        Cancelled: `cancel` was set.
    """
    file_path = os.fspath(path)
    size = _spooled_size(file_path)
    if size < 0:
        raise UploadFailed(f"the packaged context {file_path} is missing; relaunch", reason="ContextMissing")
    started = time.monotonic()
    attempts = 0
    refreshes = 0
    last_error = ""
    signed = await get_url()
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the upload was cancelled; nothing was stored", reason="Cancelled")
        expiry = signed.expiry()
        if expiry is not None and expiry - policy.expiry_margin <= time.time():
            if refreshes >= policy.max_url_refreshes:
                raise UploadForbidden(
                    "the upload URL keeps expiring before it can be used; check the clock of this "
                    "machine and of the cluster, then relaunch",
                    reason="URLExpired",
                )
            refreshes += 1
            signed = await get_url()
            continue
        via_api_server = signed.url.startswith("/api/")
        if via_api_server and resolve is None:
            raise UploadRejected(
                "the upload URL is a path on the API server, and this client has no cluster to send it to",
                reason="BadURL",
            )
        if not via_api_server and urlsplit(signed.url).scheme not in ("http", "https"):
            raise UploadRejected(
                "the upload URL is not usable (it must be http(s)://HOST/...); this is a controller bug",
                reason="BadURL",
            )
        if _spooled_size(file_path) != size:
            raise UploadFailed(
                f"the packaged context {file_path} changed or disappeared while uploading; relaunch",
                reason="ContextMissing",
            )
        attempts += 1
        meter = _Meter(size, attempts, progress)
        if via_api_server:
            assert resolve is not None
            destination = await resolve(signed.url)
        else:
            destination = Destination(signed.url, {})
        try:
            status, body = await _put_once(destination, file_path, size, md5_b64, meter, policy, cancel)
        except _Transient as e:
            last_error = str(e)
            log.info("upload to %s: attempt %d failed: %s", _redact(signed.url), attempts, e)
            if attempts >= policy.max_attempts:
                raise UploadFailed(
                    f"uploading the build context failed {attempts} times (last: {last_error}); "
                    "check the network and relaunch",
                ) from e
            await _sleep_unless_cancelled(backoff_delay(attempts, policy), cancel)
            continue
        decision = classify(status, body)
        what = f"{status} {decision.code}".strip() + (f": {decision.message}" if decision.message else "")
        if decision.action is Action.DONE:
            return UploadResult(size, attempts, refreshes, time.monotonic() - started)
        if decision.action is Action.BAD_DIGEST:
            raise BadDigest(
                "the uploaded bytes did not match their MD5 (BadDigest): the file changed while uploading? "
                "relaunch to package and upload again",
                status=status,
                store_code=decision.code,
            )
        if decision.action is Action.REFRESH_URL:
            log.info("upload to %s refused (%s); asking for a new URL", _redact(signed.url), what)
            if refreshes >= policy.max_url_refreshes:
                raise UploadForbidden(
                    f"the store refused the upload URL {refreshes + 1} times ({what}); check the "
                    "controller's signing identity and both clocks, then relaunch",
                    status=status,
                    store_code=decision.code,
                )
            refreshes += 1
            signed = await get_url()
            continue
        if decision.action is Action.RETRY:
            last_error = what
            log.info("upload to %s: attempt %d answered %s", _redact(signed.url), attempts, what)
            if attempts >= policy.max_attempts:
                raise UploadFailed(
                    f"uploading the build context failed {attempts} times (last: {what}); "
                    "the store is unavailable, relaunch later",
                    status=status,
                    store_code=decision.code,
                )
            await _sleep_unless_cancelled(backoff_delay(attempts, policy), cancel)
            continue
        if via_api_server and decision.code in ("Forbidden", "NotFound"):
            raise UploadRejected(
                f"the API server refused the upload to the in-cluster store ({what}); ask the cluster's "
                "admin to apply cluster/manifests (the Service nbd-store and the Role nbd-store-upload)",
                reason=f"StoreProxy{decision.code}",
                status=status,
                store_code=decision.code,
            )
        raise UploadRejected(
            f"the store refused the upload ({what}); check the controller's storage configuration",
            reason=decision.code or f"HTTP{status}",
            status=status,
            store_code=decision.code,
        )
