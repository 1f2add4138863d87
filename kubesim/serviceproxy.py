"""The `services/proxy` and `pods/proxy` subresources: the API server forwards an HTTP request to a
Service's backend, or to one pod.

Path: `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy[/PATH]`, any method; the
query is passed on verbatim. As the real server does it:

- authorization is of the subresource `services/proxy`, with the verb of the HTTP method (GET and
  HEAD get, POST create, PUT update, PATCH patch, DELETE delete) and, as the name, the whole
  `[SCHEME:]NAME[:PORT]` segment: a rule with `resourceNames: [nbd-store]` does not allow
  `nbd-store:http`;
- an unknown Service is 404 `services "NAME" not found`; a PORT that is neither a port name nor
  a port number of the Service is 503 `no endpoints available for service "NAME:PORT"`; a Service
  with no ready endpoint is 503 `no endpoints available for service "NAME"`; a backend that
  cannot be reached is 503 as well;
- the caller's credentials (Authorization) and hop-by-hop headers are not passed on; the body is
  streamed both ways, with the request's Content-Length.

Endpoints are the Service's ready pods (kubesim's endpoints controller, `kubelet.dns.endpoints`)
at their pod IP and the target port (a named targetPort resolved through the container ports).
`pods/proxy` (`/api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]`) goes to the pod's
IP, as the real server's pod strategy does: an unknown pod is 404 `pods "NAME" not found`; a pod
without an address (not scheduled or not started yet) is 400 `address not allowed`; without PORT,
the first containerPort of the pod's containers, and with none at all the request goes to port 80.
It is authorized as `pods/proxy` with the segment as the name.

kubesim also knows Services served by a process on this machine (`host_backends`, from
`--host-service`), which the real server cannot have: devstack's controller runs on the host.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from kubesim.errors import ApiError
from kubesim.kubelet.dns import endpoints
from kubesim.store import Store

__all__ = ["ServiceProxy", "PROXY_PATH", "POD_PROXY_PATH", "PROXY_VERBS"]

log = logging.getLogger("kubesim.serviceproxy")

PROXY_PATH = re.compile(r"^namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?$")
POD_PROXY_PATH = re.compile(r"^namespaces/([^/]+)/pods/([^/]+)/proxy(/.*)?$")
SERVICES = ("", "v1", "services")
PODS = ("", "v1", "pods")
# The verb a proxy subresource request is authorized with, by HTTP method.
PROXY_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        "expect",
    }
)


def split_scheme_name_port(segment: str) -> tuple[str, str, str]:
    """(scheme, name, port) of `[SCHEME:]NAME[:PORT]`; raises 400 on any other form."""
    parts = segment.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
    else:
        raise ApiError(400, "BadRequest", f'invalid service request "{segment}"')
    if scheme not in ("", "http", "https") or not name:
        raise ApiError(400, "BadRequest", f'invalid service request "{segment}"')
    return scheme, name, port


def _service_port(service: dict[str, Any], port: str) -> dict[str, Any] | None:
    ports = (service.get("spec") or {}).get("ports") or []
    if not port:
        return ports[0] if len(ports) >= 1 else None
    for p in ports:
        if p.get("name") == port or str(p.get("port")) == port:
            return dict(p)
    return None


def _target_port(pod: dict[str, Any], target: Any) -> int | None:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


class ServiceProxy:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.host_backends: dict[tuple[str, str], int] = {}
        self._session: aiohttp.ClientSession | None = None

    def backend(self, namespace: str, segment: str) -> tuple[str, str, int]:
        """(scheme, host, port) to forward to, or the ApiError the real server answers."""
        scheme, name, port = split_scheme_name_port(segment)
        service = self.store.get(SERVICES, namespace, name)
        if service is None:
            raise ApiError(
                404, "NotFound", f'services "{name}" not found', {"name": name, "kind": "services"}
            )
        service_port = _service_port(service, port)
        if service_port is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{segment}"')
        for pod in endpoints(self.store, service):
            number = _target_port(pod, service_port.get("targetPort", service_port.get("port")))
            if number is not None:
                return scheme or "http", str(pod["status"]["podIP"]), number
        host_port = self.host_backends.get((namespace, name))
        if host_port is not None:
            return scheme or "http", "127.0.0.1", host_port
        raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')

    def pod_backend(self, namespace: str, segment: str) -> tuple[str, str, int]:
        """(scheme, host, port) of a `pods/proxy` request, or the ApiError the real server answers."""
        scheme, name, port = split_scheme_name_port(segment)
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        if not port:
            for container in (pod.get("spec") or {}).get("containers") or []:
                if container.get("ports"):
                    port = str(container["ports"][0].get("containerPort"))
                    break
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if not ip:
            raise ApiError(400, "BadRequest", "address not allowed")
        if not port:
            port = "80"
        if not port.isdigit():
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp: address {ip}:{port}: invalid port",
            )
        return scheme or "http", ip, int(port)

    async def handle(
        self,
        request: web.Request,
        namespace: str,
        segment: str,
        rest: str,
        backend: tuple[str, str, int] | None = None,
    ) -> web.StreamResponse:
        scheme, host, port = backend or self.backend(namespace, segment)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
            )
        # The query goes on exactly as it came (a signed URL's query must not be re-encoded).
        raw_query = request.raw_path.partition("?")[2]
        url = URL(
            f"{scheme}://{host}:{port}{rest or '/'}" + (f"?{raw_query}" if raw_query else ""), encoded=True
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body: Any = None
        if request.body_exists:

            async def chunks() -> Any:
                async for chunk in request.content.iter_chunked(1 << 20):
                    yield chunk

            body = chunks()
        prepared = False
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=("User-Agent",),
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        response.headers.add(key, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                prepared = True
                async for chunk in upstream.content.iter_chunked(1 << 20):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectionError, OSError) as e:
            if prepared or request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client went away") from e
            log.info("service proxy to %s/%s failed: %s", namespace, segment, e)
            raise ApiError(
                503, "ServiceUnavailable", f"error trying to reach service: {type(e).__name__}"
            ) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
