"""The daemon's own async HTTP/WebSocket access to one cluster, authenticated like `kubernetes`.

Port-forwards, exec channels and watches are long-lived streams: running each in a blocking client
thread would tie up one thread per stream. This transport speaks to the API server with aiohttp,
using exactly what the `kubernetes` Configuration of the target says: the Authorization header from
`api_key`/`api_key_prefix` (refreshed through `refresh_api_key_hook`, which exec credential plugins
install, well before expiry), client certificate files, the CA bundle, verify_ssl, tls_server_name
and the proxy. One `aiohttp.ClientSession` per target and event loop is reused by every request so
that a new forwarded connection costs one WebSocket handshake and nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import certifi
from yarl import URL

from nbd.errors import NbdError
from nbd.kube.failures import ResourceRef, error_from_exception, error_from_status
from nbd.kube.target import KubeTarget

__all__ = ["AUTH_REFRESH_SECONDS", "Transport", "close_transport", "transport_for"]

log = logging.getLogger(__name__)

# The kubernetes loader refreshes an exec-plugin token once it is within 5 minutes of expiry; asking
# the hook at least this often therefore always sends a token that is valid for minutes more.
AUTH_REFRESH_SECONDS = 30.0


# Exec and port-forward WebSockets ping the API server after this many quiet seconds and are closed
# when no pong comes within half of it, as client-go's streams give up on a silent connection: a
# stalled stream (a dropped NAT entry, a vanished control-plane node) ends and is opened again
# instead of hanging forever. Pongs come from the API server, so a busy pod never trips it.
# NBD_STREAM_HEARTBEAT overrides it (seconds; 0 turns it off).
def _heartbeat_seconds(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw else 20.0
    except ValueError:
        value = 20.0
    return value if value > 0 else None


STREAM_HEARTBEAT = _heartbeat_seconds(os.environ.get("NBD_STREAM_HEARTBEAT"))

Query = Sequence[tuple[str, str]]


def _ssl_context(target: KubeTarget) -> ssl.SSLContext | bool:
    cfg = target.configuration
    if not str(cfg.host).startswith("https"):
        return False
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or certifi.where())
        if cfg.assert_hostname is False:
            ctx.check_hostname = False
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx


def _tcp_nodelay_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    if family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


class Transport:
    """An aiohttp session bound to one `KubeTarget` and one event loop.

    Invariants: `session` is created in the loop that uses it and closed only by `aclose`; the
    cached Authorization header is never older than AUTH_REFRESH_SECONDS when a hook exists.
    """

    def __init__(self, target: KubeTarget) -> None:
        self.target = target
        self.base = URL(target.host)
        cfg = target.configuration
        self._ssl = _ssl_context(target)
        self._server_hostname: str | None = getattr(cfg, "tls_server_name", None) or None
        self._proxy: str | None = cfg.proxy or None
        self._proxy_headers: dict[str, str] | None = dict(cfg.proxy_headers) if cfg.proxy_headers else None
        if self._proxy and cfg.no_proxy:
            host = self.base.host or ""
            if any(h.strip() and host.endswith(h.strip().lstrip("*")) for h in cfg.no_proxy.split(",")):
                self._proxy = None
        connector = aiohttp.TCPConnector(
            limit=0,  # forwarded connections each hold a WebSocket: no pool ceiling
            ssl=self._ssl,
            socket_factory=_tcp_nodelay_socket,
            keepalive_timeout=30,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15),
            auto_decompress=True,
        )
        self._auth: str | None = None
        self._auth_at = -1e9
        self._auth_lock = asyncio.Lock()
        self.closed = False

    @property
    def url(self) -> str:
        return str(self.base)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings of the kubeconfig (CA, client certificate); None for plain HTTP."""
        return self._ssl if isinstance(self._ssl, ssl.SSLContext) else None

    @property
    def server_hostname(self) -> str | None:
        """The kubeconfig's tls-server-name, when the certificate names another host."""
        return self._server_hostname

    @property
    def proxy_url(self) -> str | None:
        """The kubeconfig's proxy-url for this server (None: connect directly)."""
        return self._proxy

    def absolute(self, path: str) -> str:
        """The URL of a path on this API server, the path and query kept exactly as given."""
        return str(self.base).rstrip("/") + path

    def _auth_blocking(self) -> str | None:
        cfg = self.target.configuration
        # auth_settings() calls get_api_key_with_prefix, which runs refresh_api_key_hook first.
        bearer = cfg.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            return str(bearer["value"])
        if cfg.username and cfg.password:
            return str(cfg.get_basic_auth_token())
        return None

    async def auth_header(self) -> dict[str, str]:
        """The Authorization header to send now (refreshed in a thread when it may be stale)."""
        cfg = self.target.configuration
        now = time.monotonic()
        stale = self._auth_at < 0 or (
            cfg.refresh_api_key_hook is not None and now - self._auth_at > AUTH_REFRESH_SECONDS
        )
        if stale:
            async with self._auth_lock:
                if self._auth_at < 0 or time.monotonic() - self._auth_at > AUTH_REFRESH_SECONDS:
                    if cfg.refresh_api_key_hook is None and self._auth_at < 0:
                        self._auth = self._auth_blocking()  # no hook: plain dict reads, no I/O
                    else:
                        self._auth = await asyncio.to_thread(self._auth_blocking)
                    self._auth_at = time.monotonic()
        return {"Authorization": self._auth} if self._auth else {}

    @property
    def _route(self) -> dict[str, Any]:
        """How every request reaches the API server: the kubeconfig's proxy and TLS server name."""
        return {
            "proxy": self._proxy,
            "proxy_headers": self._proxy_headers,
            "server_hostname": self._server_hostname,
        }

    def _url(self, path: str) -> URL:
        return self.base.with_path(self.base.path.rstrip("/") + path, encoded=False)

    async def get_json(
        self,
        path: str,
        params: Mapping[str, str] | Query | None = None,
        *,
        resource: ResourceRef | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """GET a JSON document; errors become `NbdError`s."""
        headers = await self.auth_header()
        headers["Accept"] = "application/json"
        try:
            async with self.session.get(
                self._url(path),
                params=params,
                headers=headers,
                **self._route,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise error_from_status(resp.status, body, url=self.url, resource=resource)
                data = json.loads(body)
        except NbdError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise error_from_exception(e, url=self.url, resource=resource) from e
        if not isinstance(data, dict):
            raise NbdError(f"the cluster at {self.url} answered {path} with non-object JSON")
        return data

    async def stream_lines(
        self,
        path: str,
        params: Mapping[str, str] | Query | None = None,
        *,
        resource: ResourceRef | None = None,
    ) -> AsyncIterator[str]:
        """GET a streaming text response (a container's log) line by line, through the same proxy,
        TLS server name and credentials as every other request; errors become `NbdError`s."""
        headers = await self.auth_header()
        try:
            async with self.session.get(
                self._url(path),
                params=params,
                headers=headers,
                **self._route,
                timeout=aiohttp.ClientTimeout(total=None, connect=15),
            ) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise error_from_status(resp.status, body, url=self.url, resource=resource)
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
                if pending:
                    yield pending.decode("utf-8", "replace")
        except NbdError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise error_from_exception(e, url=self.url, resource=resource) from e

    async def stream_json_lines(
        self,
        path: str,
        params: Mapping[str, str] | Query | None = None,
        *,
        read_timeout: float | None = None,
        resource: ResourceRef | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """GET a streaming response of one JSON object per line (a watch); errors become NbdErrors.

        `read_timeout` bounds the silence between two chunks (a dead connection after the laptop
        slept is noticed instead of hanging forever).
        """
        headers = await self.auth_header()
        headers["Accept"] = "application/json"
        try:
            async with self.session.get(
                self._url(path),
                params=params,
                headers=headers,
                **self._route,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=read_timeout, connect=15),
            ) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise error_from_status(resp.status, body, url=self.url, resource=resource)
                while True:
                    line = await resp.content.readline()
                    if not line:
                        return
                    line = line.strip()
                    if not line:
                        continue
                    event = json.loads(line)
                    if isinstance(event, dict):
                        yield event
        except NbdError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise error_from_exception(e, url=self.url, resource=resource) from e

    async def ws_connect(
        self,
        path: str,
        query: Query,
        protocols: Iterable[str],
        *,
        timeout: float = 15.0,
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket to an API path (exec, portforward); errors become `NbdError`s.

        aiohttp drops the body of a refused upgrade, so for 403/404 the same URL is fetched once
        more without the upgrade to show the server's own message.
        """
        headers = await self.auth_header()
        url = self._url(path)
        try:
            ws: aiohttp.ClientWebSocketResponse = await self.session.ws_connect(
                url,
                params=list(query),
                protocols=tuple(protocols),
                headers=headers,
                **self._route,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                autoping=True,
                heartbeat=STREAM_HEARTBEAT,
                max_msg_size=0,
                compress=0,
            )
            return ws
        except aiohttp.WSServerHandshakeError as e:
            body: bytes | None = None
            if e.status in (403, 404):
                body = await self._body_of(url, query, headers)
            if e.status >= 400:
                raise error_from_status(e.status, body, url=self.url) from e
            raise NbdError(
                f"the cluster at {self.url} refused the stream upgrade ({e.status} {e.message})",
                reason="UpgradeFailed",
            ) from e
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise error_from_exception(e, url=self.url) from e

    async def _body_of(self, url: URL, query: Query, headers: Mapping[str, str]) -> bytes | None:
        try:
            async with self.session.get(
                url,
                params=list(query),
                headers=headers,
                **self._route,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                return await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async def aclose(self) -> None:
        self.closed = True
        await self.session.close()


# One transport per (target, event loop): the target is keyed by identity (KubeTarget has eq=False),
# and both levels are weak, so a dropped target or a closed loop takes its sessions with it.
_transports: weakref.WeakKeyDictionary[
    KubeTarget, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport]
] = weakref.WeakKeyDictionary()
_transports_lock = threading.Lock()


def transport_for(target: KubeTarget) -> Transport:
    """The aiohttp transport of `target` for the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    with _transports_lock:
        per_loop = _transports.setdefault(target, weakref.WeakKeyDictionary())
        transport = per_loop.get(loop)
        if transport is None or transport.closed:
            transport = Transport(target)
            per_loop[loop] = transport
        return transport


async def close_transport(target: KubeTarget) -> None:
    """Close `target`'s transport of the running loop (its aiohttp session and pooled connections)."""
    loop = asyncio.get_running_loop()
    with _transports_lock:
        per_loop = _transports.get(target)
        transport = per_loop.pop(loop, None) if per_loop is not None else None
    if transport is not None:
        await transport.aclose()
