"""The HTTP face of kubesim: Kubernetes REST, watch, discovery, OpenAPI and the admin endpoint.

`ApiServer(store, faults, auth)` builds an aiohttp `web.Application` (`.app`). Every route goes
through one middleware that (1) serves `/_kubesim/...` to holders of the admin token only,
(2) authenticates (401) and applies faults (503 windows, hangs, slowness) to everything else,
(3) renders `ApiError` as a `Status` object with the same code.

Interface for the kubelet half:

    api.register_subresource(group, version, resource, subresource, handler, methods)

mounts e.g. `pods/log`, `pods/exec`, `pods/portforward`. The handler is
`async def handler(request: web.Request, namespace: str, name: str) -> web.StreamResponse`; it
runs after authentication, authorization (verb "get" for GET, "create" otherwise) and fault
checks; it may raise `ApiError` (rendered as Status). Long-lived handlers should register their
stream with `api.faults.track(...)` so `drop_streams()` closes it. Registering also lists the
subresource in discovery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from kubesim import discovery, openapi, protobuf, rbac, tables
from kubesim.auth import Auth, User
from kubesim.errors import ApiError, now_rfc3339
from kubesim.faults import Faults
from kubesim.patch import json_patch
from kubesim.resources import ResourceInfo
from kubesim.serviceproxy import POD_PROXY_PATH, PROXY_PATH, PROXY_VERBS, ServiceProxy
from kubesim.store import Store

__all__ = ["ApiServer", "SubresourceHandler", "VERSION_INFO", "json_response", "status_response"]

log = logging.getLogger("kubesim.apiserver")

SubresourceHandler = Callable[[web.Request, str, str], Awaitable[web.StreamResponse]]

VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

USER_KEY = web.RequestKey("user", User)
_TABLE_MARK = "as=table"
_PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})


def json_response(
    obj: Any, status: int = 200, content_type: str = "application/json", headers: dict[str, str] | None = None
) -> web.Response:
    """A compact JSON answer with an exact Content-Type (discovery needs its parameters kept)."""
    # The real server's JSON encoder ends every body with a newline.
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode() + b"\n",
        status=status,
        headers={**(headers or {}), "Content-Type": content_type},
    )


def query_bool(query: Any, name: str) -> bool:
    """A boolean query parameter read as the real server reads it (apimachinery's
    Convert_Slice_string_To_bool): absent, `false` in any case, or `0` is false; anything else,
    `True` and the empty string included, is true."""
    if name not in query:
        return False
    value = str(query.get(name))
    return not (value == "0" or value.lower() == "false")


def status_response(err: ApiError) -> web.Response:
    return json_response(err.status(), status=err.code)


@dataclass
class _Target:
    """A parsed resource URL."""

    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None


class ApiServer:
    """Routes and handlers; see the module docstring."""

    def __init__(
        self,
        store: Store,
        faults: Faults | None = None,
        auth: Auth | None = None,
        bookmark_interval: float = 10.0,
    ) -> None:
        self.store = store
        self.faults = faults or Faults()
        self.auth = auth or Auth()
        self.bookmark_interval = bookmark_interval
        self._subresources: dict[tuple[str, str, str], tuple[SubresourceHandler, set[str]]] = {}
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.service_proxy = ServiceProxy(store)
        self.on_shutdown.append(self.service_proxy.close)
        services = store.registry.get(("", "v1", "services"))
        if services is not None:
            services.subresources["proxy"] = ["create", "delete", "get", "patch", "update"]
        pods = store.registry.get(("", "v1", "pods"))
        if pods is not None:
            pods.subresources.setdefault("proxy", ["create", "delete", "get", "patch", "update"])
        self.app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        r = self.app.router
        r.add_get("/version", self._version)
        for p in ("/healthz", "/livez", "/readyz"):
            r.add_get(p, self._health)
            r.add_get(p + "/{check:.*}", self._health)
        r.add_get("/api", self._api_root)
        r.add_get("/apis", self._apis_root)
        r.add_get("/api/v1", self._core_v1)
        r.add_get("/apis/{group}", self._group)
        r.add_get("/apis/{group}/{version}", self._group_version)
        r.add_get("/openapi/v3", self._openapi_root)
        r.add_get("/openapi/v3/{path:.*}", self._openapi_doc)
        r.add_get("/openapi/v2", self._not_found)
        r.add_route("*", "/api/v1/{rest:.+}", self._core_resource)
        r.add_route("*", "/apis/{group}/{version}/{rest:.+}", self._group_resource)
        r.add_route("*", "/_kubesim/{path:.*}", self._admin)

    # ------------------------------------------------------------------ interface

    def register_subresource(
        self,
        group: str,
        version: str,
        resource: str,
        subresource: str,
        handler: SubresourceHandler,
        methods: list[str] | tuple[str, ...] = ("GET",),
    ) -> None:
        """Serve `/.../{resource}/{name}/{subresource}` with `handler` (see module docstring)."""
        self._subresources[(group, resource, subresource)] = (handler, {m.upper() for m in methods})
        info = self.store.registry.get((group, version, resource))
        if info is not None:
            verbs = ["get"] if set(m.upper() for m in methods) == {"GET"} else ["create", "get"]
            info.subresources[subresource] = verbs

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        try:
            if path.startswith("/_kubesim/"):
                if not self.auth.is_admin(request.headers.get("Authorization")):
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                return await handler(request)
            peercert = None
            transport = request.transport
            if transport is not None:
                peercert = transport.get_extra_info("peercert")
            try:
                request[USER_KEY] = self.auth.authenticate(request.headers.get("Authorization"), peercert)
            except ApiError:
                # Like system:public-info-viewer: version and health answer anonymous callers.
                if request.headers.get("Authorization") or path not in _PUBLIC_PATHS:
                    raise
                request[USER_KEY] = User("system:anonymous", ("system:unauthenticated",))
            code = await self.faults.before_request()
            if code is not None:
                raise ApiError(
                    code,
                    "ServiceUnavailable" if code == 503 else "InternalError",
                    "the server is currently unable to handle the request"
                    if code == 503
                    else "an error on the server has prevented the request from succeeding",
                )
            return await handler(request)
        except ApiError as e:
            # Retry-After only on 429: urllib3 would otherwise retry 503s silently, hiding the fault.
            headers = {"Retry-After": "1"} if e.code == 429 else None
            return json_response(e.status(), status=e.code, headers=headers)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug in a handler: answer like the real server's 500
            log.exception("internal error on %s %s", request.method, path)
            err = ApiError(500, "InternalError", f"Internal error occurred: {e}")
            return json_response(err.status(), status=500)

    # ------------------------------------------------------------------ simple endpoints

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(VERSION_INFO)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _not_found(self, request: web.Request) -> web.Response:
        raise ApiError.no_resource()

    def _wants_aggregated(self, request: web.Request) -> bool:
        return "as=apigroupdiscoverylist" in request.headers.get("Accept", "").lower().replace(" ", "")

    async def _api_root(self, request: web.Request) -> web.Response:
        if self._wants_aggregated(request):
            return json_response(
                discovery.aggregated(self.store.registry, core=True),
                content_type=discovery.AGGREGATED_CONTENT_TYPE,
            )
        return json_response(discovery.api_versions(request.host))

    async def _apis_root(self, request: web.Request) -> web.Response:
        if self._wants_aggregated(request):
            return json_response(
                discovery.aggregated(self.store.registry, core=False),
                content_type=discovery.AGGREGATED_CONTENT_TYPE,
            )
        return json_response(discovery.api_group_list(self.store.registry))

    async def _core_v1(self, request: web.Request) -> web.Response:
        return json_response(discovery.resource_list(self.store.registry, "", "v1"))

    async def _group(self, request: web.Request) -> web.Response:
        g = discovery.api_group(self.store.registry, request.match_info["group"])
        if g is None:
            raise ApiError.no_resource()
        return json_response(g)

    async def _group_version(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        if version not in self.store.registry.groups().get(group, []):
            raise ApiError.no_resource()
        return json_response(discovery.resource_list(self.store.registry, group, version))

    async def _openapi_root(self, request: web.Request) -> web.Response:
        return json_response(openapi.root(self.store.registry))

    async def _openapi_doc(self, request: web.Request) -> web.Response:
        doc = openapi.document(self.store.registry, request.match_info["path"])
        if doc is None:
            raise ApiError.no_resource()
        return json_response(
            doc, headers={"Cache-Control": "public, immutable"} if request.query.get("hash") else None
        )

    # ------------------------------------------------------------------ resource routing

    async def _core_resource(self, request: web.Request) -> web.StreamResponse:
        rest = request.match_info["rest"]
        proxied = PROXY_PATH.match(rest)
        to_pod = POD_PROXY_PATH.match(rest)
        if to_pod is not None:
            namespace, segment, path = to_pod.group(1), to_pod.group(2), to_pod.group(3) or ""
            verb = PROXY_VERBS.get(request.method, "")
            if not verb:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            self.auth.authorize(request[USER_KEY], verb, "pods", "", namespace, segment, "proxy")
            backend = self.service_proxy.pod_backend(namespace, segment)
            return await self.service_proxy.handle(request, namespace, segment, path, backend)
        if proxied is not None:
            namespace, segment, path = proxied.group(1), proxied.group(2), proxied.group(3) or ""
            verb = PROXY_VERBS.get(request.method, "")
            if not verb:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            # The name authorized is the whole segment, port included (as the real server does).
            self.auth.authorize(request[USER_KEY], verb, "services", "", namespace, segment, "proxy")
            return await self.service_proxy.handle(request, namespace, segment, path)
        return await self._resource(request, "", "v1", rest)

    async def _group_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(
            request, request.match_info["group"], request.match_info["version"], request.match_info["rest"]
        )

    def _parse(self, group: str, version: str, rest: str) -> _Target:
        parts = [p for p in rest.split("/") if p]
        namespace: str | None = None
        if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] not in ("status", "finalize"):
            namespace = parts[1]
            parts = parts[2:]
        info = self.store.registry.get((group, version, parts[0]))
        if info is None or len(parts) > 3:
            raise ApiError.no_resource()
        if namespace is not None and not info.namespaced:
            raise ApiError.no_resource()
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if name is not None and info.namespaced and namespace is None:
            raise ApiError.no_resource()
        return _Target(info, namespace, name, sub)

    async def _resource(
        self, request: web.Request, group: str, version: str, rest: str
    ) -> web.StreamResponse:
        t = self._parse(group, version, rest)
        q = request.query
        user: User = request[USER_KEY]
        method = request.method
        watching = query_bool(q, "watch")
        if t.name is None:
            verb = {
                "GET": "watch" if watching else "list",
                "POST": "create",
                "DELETE": "deletecollection",
            }.get(method)
        else:
            verb = {
                "GET": "get",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
                "POST": "create",
            }.get(method)
        if verb is None:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        self.auth.authorize(
            user,
            verb if t.subresource is None or method != "POST" else "create",
            t.info.resource,
            t.info.group,
            t.namespace,
            t.name,
            t.subresource,
        )
        if t.subresource == "token" and t.info.resource == "serviceaccounts" and t.name and method == "POST":
            return await self._token_request(request, t)
        if t.subresource is not None and t.subresource not in ("status", "scale"):
            entry = self._subresources.get((t.info.group, t.info.resource, t.subresource))
            if entry is None or t.name is None:
                raise ApiError.no_resource()
            handler, methods = entry
            if method not in methods:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            return await handler(request, t.namespace or "", t.name)
        if t.subresource is not None and t.subresource not in t.info.subresources:
            raise ApiError.no_resource()
        if t.info.resource in ("selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"):
            return await self._access_review(request, t, user)
        if t.name is None:
            if method == "GET":
                return await (self._watch(request, t) if watching else self._list(request, t))
            if method == "POST":
                return await self._create(request, t)
            if method == "DELETE":
                return await self._delete_collection(request, t)
        else:
            if t.subresource == "scale":
                return await self._scale(request, t)
            if method == "GET":
                if watching:
                    return await self._watch(request, t)
                obj = self.store.read(t.info.key, t.namespace, t.name)
                return self._render(request, t.info, obj)
            if method == "PUT":
                return await self._replace(request, t)
            if method == "PATCH":
                return await self._patch(request, t)
            if method == "DELETE":
                return await self._delete(request, t)
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    # ------------------------------------------------------------------ bodies and rendering

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.headers.get("Content-Type", "application/json").lower()
        if "protobuf" in ctype:
            try:
                return protobuf.decode(raw)
            except (protobuf.ProtobufError, UnicodeDecodeError) as e:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({e}) - accepted media types "
                    "include: application/json, application/yaml",
                ) from None
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            try:
                return yaml.safe_load(raw)  # apply bodies may be YAML whatever the header says
            except yaml.YAMLError:
                raise ApiError.bad_request(f"the body of the request could not be decoded: {e}") from None

    def _wants_table(self, request: web.Request) -> bool:
        accept = request.headers.get("Accept", "").lower().replace(" ", "")
        first = accept.split(",")[0] if accept else ""
        return _TABLE_MARK in first

    def _render(
        self,
        request: web.Request,
        info: ResourceInfo,
        obj: dict[str, Any],
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        headers = _warning_headers(warnings)
        if self._wants_table(request):
            return json_response(
                tables.table(
                    info,
                    [obj],
                    self.store.resource_version,
                    request.query.get("includeObject", "PartialObjectMetadata"),
                ),
                status=status,
                headers=headers,
            )
        return json_response(obj, status=status, headers=headers)

    def _write_opts(self, request: web.Request) -> dict[str, Any]:
        q = request.query
        fv = q.get("fieldValidation")
        if fv and fv not in ("Ignore", "Warn", "Strict"):
            raise ApiError.bad_request(f"fieldValidation must be one of Ignore, Warn, Strict, not {fv!r}")
        return {
            "field_manager": q.get("fieldManager")
            or _manager_from_agent(request.headers.get("User-Agent", "")),
            "field_validation": fv,
            "dry_run": q.get("dryRun") == "All",
        }

    # ------------------------------------------------------------------ verbs

    async def _list(self, request: web.Request, t: _Target) -> web.Response:
        q = request.query
        limit = int(q["limit"]) if q.get("limit", "").isdigit() and int(q["limit"]) > 0 else None
        items, rv, cont = self.store.list_page(
            t.info.key, t.namespace, q.get("labelSelector"), q.get("fieldSelector"), limit, q.get("continue")
        )
        if self._wants_table(request):
            return json_response(
                tables.table(t.info, items, rv, q.get("includeObject", "PartialObjectMetadata"), cont)
            )
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = max(
                0,
                len(
                    self.store.list(t.info.key, t.namespace, q.get("labelSelector"), q.get("fieldSelector"))[
                        0
                    ]
                )
                - len(items),
            )
        return json_response(
            {"kind": t.info.list_kind, "apiVersion": t.info.api_version, "metadata": meta, "items": items}
        )

    async def _create(self, request: web.Request, t: _Target) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        warnings: list[str] = []
        opts = self._write_opts(request)
        with self.store.acting_as(request.get(USER_KEY)):
            obj = self.store.create(t.info.key, body, t.namespace, warnings=warnings, **opts)
        return self._render(request, t.info, obj, status=201, warnings=warnings)

    async def _replace(self, request: web.Request, t: _Target) -> web.Response:
        assert t.name is not None
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        warnings: list[str] = []
        opts = self._write_opts(request)
        with self.store.acting_as(request.get(USER_KEY)):
            obj = self.store.replace(
                t.info.key, t.namespace, t.name, body, subresource=t.subresource, warnings=warnings, **opts
            )
        return self._render(request, t.info, obj, warnings=warnings)

    async def _patch(self, request: web.Request, t: _Target) -> web.Response:
        assert t.name is not None
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        patch_type = {
            "application/json-patch+json": "json",
            "application/merge-patch+json": "merge",
            "application/strategic-merge-patch+json": "strategic",
            "application/apply-patch+yaml": "apply",
            "application/apply-patch+json": "apply",
        }.get(ctype)
        if patch_type is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml, application/strategic-merge-patch+json",
            )
        body = await self._body(request)
        warnings: list[str] = []
        existed = self.store.get(t.info.key, t.namespace, t.name) is not None
        opts = self._write_opts(request)
        with self.store.acting_as(request.get(USER_KEY)):
            obj = self.store.patch(
                t.info.key,
                t.namespace,
                t.name,
                body,
                patch_type,
                subresource=t.subresource,
                force=query_bool(request.query, "force"),
                warnings=warnings,
                **opts,
            )
        return self._render(request, t.info, obj, status=200 if existed else 201, warnings=warnings)

    def _delete_options(self, body: Any, q: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        body = body if isinstance(body, dict) else {}
        prop = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan: bool | None = query_bool(q, "orphanDependents") if "orphanDependents" in q else None
        if orphan is None and isinstance(body.get("orphanDependents"), bool):
            orphan = body["orphanDependents"]
        if prop is None and orphan is not None:
            prop = "Orphan" if orphan else "Background"
        opts["propagation"] = prop
        grace = q.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        if grace is not None:
            try:
                opts["grace_period_seconds"] = int(grace)
            except ValueError:
                raise ApiError.bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
        opts["preconditions"] = body.get("preconditions")
        opts["dry_run"] = q.get("dryRun") == "All" or body.get("dryRun") == ["All"]
        return opts

    async def _delete(self, request: web.Request, t: _Target) -> web.Response:
        assert t.name is not None
        body = await self._body(request)
        obj = self.store.delete(t.info.key, t.namespace, t.name, **self._delete_options(body, request.query))
        still = self.store.get(t.info.key, t.namespace, t.name)
        if still is not None or t.info.returns_deleted_object:
            return json_response(still if still is not None else obj)
        # StatusDetails' field order: name, group, kind, uid.
        details: dict[str, Any] = {"name": t.name}
        if t.info.group:
            details["group"] = t.info.group
        details.update(kind=t.info.resource, uid=obj["metadata"]["uid"])
        return json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    async def _delete_collection(self, request: web.Request, t: _Target) -> web.Response:
        body = await self._body(request)
        opts = self._delete_options(body, request.query)
        items, _ = self.store.list(
            t.info.key, t.namespace, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        deleted = []
        for item in items:
            m = item["metadata"]
            try:
                deleted.append(self.store.delete(t.info.key, m.get("namespace"), m["name"], **opts))
            except ApiError as e:
                if e.code != 404:
                    raise
        return json_response(
            {
                "kind": t.info.list_kind,
                "apiVersion": t.info.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": deleted,
            }
        )

    async def _scale(self, request: web.Request, t: _Target) -> web.Response:
        assert t.name is not None
        obj = self.store.read(t.info.key, t.namespace, t.name)
        if request.method in ("PUT", "PATCH"):
            body = await self._body(request) or {}
            if request.method == "PATCH" and "json-patch" in request.headers.get("Content-Type", ""):
                body = json_patch(_scale_of(obj), body)
            replicas = (body.get("spec") or {}).get("replicas")
            if replicas is not None:
                obj = self.store.patch(
                    t.info.key,
                    t.namespace,
                    t.name,
                    {"spec": {"replicas": int(replicas)}},
                    "merge",
                    field_manager=request.query.get("fieldManager"),
                )
        return json_response(_scale_of(obj))

    async def _token_request(self, request: web.Request, t: _Target) -> web.Response:
        """`kubectl create token`: a random bearer token (not accepted by auth unless registered)."""
        assert t.name is not None
        sa = self.store.read(t.info.key, t.namespace, t.name)
        try:
            body = await self._body(request) or {}
        except ApiError:
            body = {}
        spec = body.get("spec") if isinstance(body, dict) else None
        seconds = int((spec or {}).get("expirationSeconds") or 3600)
        return json_response(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": t.name, "namespace": t.namespace, "creationTimestamp": None},
                "spec": {
                    "audiences": (spec or {}).get("audiences") or ["https://kubernetes.default.svc"],
                    "expirationSeconds": seconds,
                    "boundObjectRef": None,
                },
                "status": {
                    "token": f"kubesim.{sa['metadata']['uid']}.{secrets.token_urlsafe(24)}",
                    "expirationTimestamp": now_rfc3339(time.time() + seconds),
                },
            },
            status=201,
        )

    async def _access_review(self, request: web.Request, t: _Target, user: User) -> web.Response:
        try:
            body = await self._body(request) or {}
        except ApiError:
            body = {}  # kubectl's typed clients send protobuf here; kubesim reads JSON only
        if not isinstance(body, dict):
            body = {}
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes") or {}
        allowed = True
        reason = ""
        if t.info.resource == "selfsubjectreviews":
            body["status"] = {"userInfo": {"username": user.name, "groups": list(user.groups)}}
        elif t.info.resource == "selfsubjectaccessreviews":
            try:
                self.auth.authorize(
                    user,
                    attrs.get("verb", "get"),
                    attrs.get("resource", ""),
                    attrs.get("group", ""),
                    attrs.get("namespace") or None,
                    attrs.get("name"),
                    attrs.get("subresource") or None,
                )
            except ApiError as e:
                allowed, reason = False, e.message
            body["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
        elif (
            self.auth.rbac_objects is not None
            and "system:masters" not in user.groups
            and (self.auth.rbac_all or user.name in self.auth.rbac_users)
        ):
            found = rbac.rules_for(self.auth.rbac_objects(), user, spec.get("namespace") or None)
            keys = ("verbs", "apiGroups", "resources", "resourceNames")
            body["status"] = {
                "resourceRules": [{k: list(r[k]) for k in keys if r.get(k)} for r in found],
                "nonResourceRules": [
                    {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*"]}
                ],
                "incomplete": False,
            }
        else:
            body["status"] = {
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": False,
            }
        body.update({"apiVersion": t.info.api_version, "kind": t.info.kind})
        body.setdefault("metadata", {})
        return json_response(body, status=201)

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        q = request.query
        fs = q.get("fieldSelector")
        if t.name is not None:
            fs = f"metadata.name={t.name}" + (f",{fs}" if fs else "")
        as_table = self._wants_table(request)
        include = q.get("includeObject", "PartialObjectMetadata")
        bookmarks = query_bool(q, "allowWatchBookmarks")
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds", "").isdigit() else 1800.0
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
        )
        resp.enable_chunked_encoding()
        try:
            watch = self.store.watch(
                t.info.key, t.namespace, q.get("resourceVersion"), q.get("labelSelector"), fs
            )
        except ApiError as e:
            if e.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(_line({"type": "ERROR", "object": e.status()}))
            await resp.write_eof()
            return resp
        await resp.prepare(request)
        transport = request.transport

        class _Drop:
            """What `drop_streams` closes (the watch and the connection under it) and
            `stall_streams` silences."""

            stalled = False

            def close(self_inner) -> None:
                watch.close()
                if transport is not None:
                    transport.abort()

        dropper = _Drop()
        self.faults.track(dropper)
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        try:
            while True:
                now = time.monotonic()
                # aiohttp does not cancel a handler whose client went away: look every second, so
                # an abandoned watch does not keep collecting events.
                if transport is None or transport.is_closing():
                    break
                if dropper.stalled:
                    # A dead connection: nothing is sent, not even the end at the deadline.
                    await asyncio.sleep(1.0)
                    continue
                if now >= deadline:
                    break
                wait = min(deadline - now, 1.0)
                if bookmarks:
                    wait = max(0.0, min(wait, next_bookmark - now))
                try:
                    ev = await asyncio.wait_for(watch.__anext__(), timeout=wait)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if bookmarks and not dropper.stalled and time.monotonic() >= next_bookmark:
                        next_bookmark = time.monotonic() + self.bookmark_interval
                        self.faults.bookmarks_sent += 1
                        await resp.write(
                            _line(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": t.info.kind,
                                        "apiVersion": t.info.api_version,
                                        "metadata": {"resourceVersion": self.store.resource_version},
                                    },
                                }
                            )
                        )
                    continue
                if dropper.stalled:
                    continue  # lost, as on a dead connection
                obj = ev.object
                if as_table:
                    obj = tables.table(
                        t.info, [obj], obj["metadata"].get("resourceVersion", ""), include, headers=False
                    )
                await resp.write(_line({"type": ev.type, "object": obj}))
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            watch.close()
            self.faults.untrack(dropper)
        return resp

    # ------------------------------------------------------------------ admin

    async def _admin(self, request: web.Request) -> web.Response:
        path = request.match_info["path"].strip("/")
        body = (await self._body(request) or {}) if request.method in ("POST", "PUT") else {}
        f = self.faults
        if path == "faults" and request.method == "GET":
            return json_response(f.describe())
        if request.method != "POST" and path != "state":
            raise ApiError(405, "MethodNotAllowed", "use POST")
        if path == "faults/unavailable":
            f.unavailable(float(body.get("seconds", 5)), int(body.get("status", 503)))
        elif path == "faults/hang":
            f.hang(float(body.get("seconds", 5)))
        elif path == "faults/slow":
            f.slow(float(body.get("seconds", 1)), float(body.get("duration", 5)))
        elif path == "faults/clear":
            f.clear()
        elif path == "faults/drop-streams":
            return json_response({"dropped": await f.drop_streams()})
        elif path == "faults/stall-streams":
            return json_response({"stalled": f.stall_streams()})
        elif path == "faults/exec-orphans":
            f.exec_orphans = bool(body.get("on", True))
            return json_response({"execOrphans": f.exec_orphans})
        elif path == "faults/kill-pod":
            await f.kill_pod(body["namespace"], body["name"])
        elif path == "faults/recreate-pod":
            await f.recreate_pod(body["namespace"], body["name"])
        elif path == "history":
            self.store.history_size = int(body["size"])
        elif path == "auth/forbid":
            self.auth.forbid(body["user"], body["namespace"])
        elif path == "auth/allow":
            self.auth.allow(body["user"], body["namespace"])
        elif path == "auth/tokens":
            self.auth.add_token(body["token"], body["user"])
        elif path == "state":
            return json_response(
                {"resourceVersion": self.store.resource_version, "openStreams": f.open_streams()}
            )
        else:
            raise ApiError(404, "NotFound", f"no admin endpoint {path!r}")
        return json_response({"ok": True})


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _warning_headers(warnings: list[str] | None) -> dict[str, str] | None:
    if not warnings:
        return None

    # aiohttp cannot repeat a header through a dict; join like a proxy would. The text is an
    # RFC 9110 quoted-string: quotes and backslashes are escaped (client-go unescapes them).
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return {"Warning": ", ".join(f"299 - {quoted(w)}" for w in warnings)}


def _manager_from_agent(agent: str) -> str:
    """The real server names a manager after the User-Agent's program name."""
    return (agent.split("/")[0] or "unknown")[:128] if agent else "unknown"


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: obj["metadata"][k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in obj["metadata"]
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(
                f"{k}={v}"
                for k, v in (((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items()
            ),
        },
    }
