"""The in-cluster store: build contexts on the controller's volume, for clusters with no bucket.

The controller serves them over plain HTTP on its pod's port, behind the ClusterIP Service
`nbd-store`. Users' machines never reach that Service directly: their upload URL is a path on
the API server, `/api/v1/namespaces/NS/services/nbd-store:http/proxy/...`, which the daemon sends
with the kubeconfig's own credentials, so the API server's TLS and authentication carry it and an
admin sets up no ingress, load balancer or certificate. Build pods fetch from the Service's DNS
name inside the cluster.

Every request is authorized by an HMAC signature (`nbd_controller.urlsigning`): a PUT URL is bound
to the MD5 and content type of one context and expires within the configured TTL (≤ 15 min).

Invariants:
- An object is never visible half-written: the body is streamed into a temporary file under
  `.incoming/` while its MD5 is computed, and renamed to `<prefix>/<md5>.tar.gz` only when the
  MD5 matches the URL's. So a stored object's name is its verified MD5, and a failed, cut or
  mismatching upload leaves nothing behind (BadDigest, as S3 answers).
- The last use of an object (upload or download) is its atime, set explicitly (mounts are often
  noatime); the collector (`nbd_controller.collecting`) removes the least recently used contexts
  that no Notebook or Run needs once the store passes its size bound.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .collecting import StoredContext, choose_evictions
from .naming import object_name
from .urlsigning import Refusal, sign_query, verify

__all__ = ["InClusterStore", "KEY_FILE"]

log = logging.getLogger(__name__)

KEY_FILE = ".key"
_INCOMING = ".incoming"
_CHUNK = 1 << 20
# The longest a request may stay silent mid-body before the store gives up on it.
_READ_TIMEOUT = 60.0


def _b64(md5_hex: str) -> str:
    return base64.b64encode(binascii.unhexlify(md5_hex)).decode()


def _load_key(root: str) -> bytes:
    """The signing key kept on the volume (made once), so URLs survive a controller restart."""
    path = os.path.join(root, KEY_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = -1
    if fd < 0:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) < 32:
            raise RuntimeError(f"the in-cluster store's key {path} is damaged; delete it to make a new one")
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


class InClusterStore:
    """The `ObjectStore` on a directory, with the HTTP server that takes uploads and serves fetches.

    Args:
        root: The volume's mount point.
        prefix: Objects are `<prefix>/<md5>.tar.gz` under root (as in a bucket).
        service: `NAMESPACE/SERVICE:PORT` of the Service in front of the server (for upload URLs).
        internal_url: `http://HOST:PORT` at which build pods reach the server (for fetch URLs).
        max_bytes: The size bound the collector keeps the store under.
    """

    def __init__(
        self,
        root: str,
        prefix: str,
        service: str,
        internal_url: str,
        max_bytes: int,
        key: bytes | None = None,
    ) -> None:
        os.makedirs(os.path.join(root, _INCOMING), exist_ok=True)
        self.root = root
        self.prefix = prefix
        namespace, _, name_port = service.partition("/")
        self.proxy_base = f"/api/v1/namespaces/{namespace}/services/{name_port}/proxy"
        self.internal_url = internal_url.rstrip("/")
        self.max_bytes = max_bytes
        self.key = key if key is not None else _load_key(root)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._pattern = re.compile(
            "^/" + re.escape(object_name(prefix, "X")).replace("X", "([0-9a-f]{32})") + "$"
        )
        # Leftovers of uploads cut by a crash are never renamed into place: remove them.
        for leftover in os.listdir(os.path.join(root, _INCOMING)):
            try:
                os.unlink(os.path.join(root, _INCOMING, leftover))
            except OSError:
                pass

    # --- ObjectStore ------------------------------------------------------------------------------

    def _path(self, md5: str) -> str:
        return os.path.join(self.root, object_name(self.prefix, md5))

    def stat(self, md5: str) -> str | None:
        # A stored object's name is the MD5 its bytes were verified against on arrival.
        return md5 if os.path.isfile(self._path(md5)) else None

    def signed_put_url(self, md5: str, content_type: str, expires: timedelta) -> str:
        path = "/" + object_name(self.prefix, md5)
        until = int(time.time() + expires.total_seconds())
        query = sign_query(self.key, "PUT", path, until, _b64(md5), content_type)
        # A path on the API server: the daemon sends it there with the kubeconfig's credentials.
        return f"{self.proxy_base}{path}?{query}"

    def signed_get_url(self, md5: str, expires: timedelta) -> str:
        path = "/" + object_name(self.prefix, md5)
        until = int(time.time() + expires.total_seconds())
        return f"{self.internal_url}{path}?{sign_query(self.key, 'GET', path, until)}"

    def delete(self, md5: str) -> None:
        try:
            os.unlink(self._path(md5))
        except FileNotFoundError:
            pass

    # --- collection ---------------------------------------------------------------------------------

    def contexts(self) -> list[StoredContext]:
        folder = os.path.dirname(self._path("0" * 32))
        out = []
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        for name in names:
            md5 = name.removesuffix(".tar.gz")
            if len(md5) != 32 or not name.endswith(".tar.gz"):
                continue
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            out.append(StoredContext(md5, st.st_size, max(st.st_atime, st.st_mtime)))
        return out

    def collect(self, needed: set[str]) -> list[StoredContext]:
        """Removes the least recently used unneeded contexts over the size bound; returns them."""
        evicted = choose_evictions(self.contexts(), needed, self.max_bytes)
        for context in evicted:
            self.delete(context.md5)
            log.info("in-cluster store: removed context %s (%d bytes, unused)", context.md5, context.size)
        return evicted

    # --- the server ---------------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Starts the HTTP server on a thread; returns the port it listens on."""
        store = self

        class Handler(_Handler):
            pass

        Handler.store = store
        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="nbd-store", daemon=True)
        self._thread.start()
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def touch(self, path: str) -> None:
        """Marks a use: the collector keeps recently used contexts longest."""
        try:
            st = os.stat(path)
            os.utime(path, (time.time(), st.st_mtime))
        except OSError:
            pass


def _error_body(refusal: Refusal, resource: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{refusal.code}</Code><Message>{refusal.message}</Message>"
        f"<Resource>{resource}</Resource></Error>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    """PUT and GET of one object; errors in S3's XML form, which the uploader already reads."""

    store: InClusterStore
    protocol_version = "HTTP/1.1"
    server_version = "nbd-store"
    timeout = _READ_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the signature: log the method and path only.
        pass

    def _target(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return parts.path, dict(parse_qsl(parts.query))

    def _refuse(self, refusal: Refusal, *, close: bool = False) -> None:
        body = _error_body(refusal, self._target()[0])
        self.send_response(refusal.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorize(self, method: str) -> tuple[str, Refusal | None]:
        """(md5, None) when the request may go on, else the refusal."""
        path, query = self._target()
        match = self.store._pattern.match(path)
        if match is None:
            return "", Refusal(404, "NoSuchKey", "The specified key does not exist.")
        md5 = match.group(1)
        content_md5 = self.headers.get("Content-MD5", "") if method == "PUT" else ""
        content_type = self.headers.get("Content-Type", "") if method == "PUT" else ""
        refusal = verify(self.store.key, method, path, query, content_md5, content_type, time.time())
        if refusal is None and method == "PUT" and content_md5 != _b64(md5):
            refusal = Refusal(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
        return md5, refusal

    def handle_expect_100(self) -> bool:
        # A refused URL is answered before the client sends the body (one round trip, no upload).
        if self.command == "PUT":
            _, refusal = self._authorize("PUT")
            if refusal is not None:
                self._refuse(refusal, close=True)
                return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        if self.path == "/healthz":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        md5, refusal = self._authorize("GET")
        if refusal is not None:
            self._refuse(refusal)
            return
        path = self.store._path(md5)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            self._refuse(Refusal(404, "NoSuchKey", "The specified key does not exist."))
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", f'"{md5}"')
            self.end_headers()
            self.store.touch(path)
            shutil.copyfileobj(f, self.wfile, _CHUNK)

    def do_PUT(self) -> None:
        md5, refusal = self._authorize("PUT")
        if refusal is not None:
            self._refuse(refusal, close=True)
            return
        length_raw = self.headers.get("Content-Length")
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower() or not length_raw:
            self._refuse(
                Refusal(411, "MissingContentLength", "You must provide the Content-Length HTTP header."),
                close=True,
            )
            return
        try:
            length = int(length_raw)
        except ValueError:
            self._refuse(Refusal(400, "InvalidArgument", "Content-Length is not a number"), close=True)
            return
        if length > self.store.max_bytes:
            self._refuse(
                Refusal(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"),
                close=True,
            )
            return
        incoming = os.path.join(self.store.root, _INCOMING)
        fd, tmp = tempfile.mkstemp(prefix=md5 + ".", dir=incoming)
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise ConnectionError("the body ended early")
                    digest.update(chunk)
                    out.write(chunk)
                    remaining -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != md5:
                os.unlink(tmp)
                self._refuse(
                    Refusal(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
                )
                return
            final = self.store._path(md5)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
        except (OSError, ValueError):
            # A cut or silent client: nothing was stored, and there is nobody left to answer.
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            self.close_connection = True
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("ETag", f'"{md5}"')
        self.send_header("Date", formatdate(usegmt=True))
        self.send_header("Content-Length", "0")
        self.end_headers()
