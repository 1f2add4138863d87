"""A minimal OpenAPI v3 surface: enough for `kubectl apply`/`create` validation and `explain`.

kubectl fetches `/openapi/v3` (a map of group-version paths to document URLs) and then the
document of the object's group-version. It decides that the server validates fields itself
(and sends `fieldValidation=Strict`) when the patch operation of the resource's path carries
`x-kubernetes-group-version-kind` and a `fieldValidation` query parameter. Built-in kinds get an
open schema (the server does not validate them); custom resources get their CRD schema, wrapped
with apiVersion/kind/metadata, and a component-level `x-kubernetes-group-version-kind`.

Pure: no I/O. The document hash changes whenever the registry does, so kubectl's cache is
invalidated when a CRD appears.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubesim.resources import Registry, ResourceInfo

__all__ = ["root", "document", "schema_name"]


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def schema_name(info: ResourceInfo) -> str:
    if info.is_custom:
        rev = ".".join(reversed(info.group.split(".")))
        return f"{rev}.{info.version}.{info.kind}"
    g = info.group.split(".")[0] if info.group else "core"
    return f"io.k8s.api.{g}.{info.version}.{info.kind}"


def root(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for v in versions:
            p = _gv_path(group, v)
            doc = document(registry, p)
            h = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={h}"}
    return {"paths": paths}


_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "fieldValidation instructs the server on how to handle objects in the request containing "
    "unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
    "schema": {"type": "string", "uniqueItems": True},
}


def _param(name: str, loc: str = "query") -> dict[str, Any]:
    return {
        "name": name,
        "in": loc,
        "schema": {"type": "string", "uniqueItems": True},
        **({"required": True} if loc == "path" else {}),
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ops(info: ResourceInfo, sname: str) -> tuple[dict[str, Any], dict[str, Any]]:
    gvk = {"group": info.group, "version": info.version, "kind": info.kind}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": _ref(sname)}}}}
    body = {"content": {"*/*": {"schema": _ref(sname)}}, "required": True}
    patch_body = {
        "content": {
            t: {"schema": {"type": "object"}}
            for t in (
                # No strategic-merge-patch+json here: kubectl would then compute strategic patches from
                # these (open) schemas; without it, it uses its compiled-in types (built-ins) or merge
                # patches (custom resources), as against a real server.
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
            )
        },
        "required": True,
    }
    common = {"x-kubernetes-group-version-kind": gvk, "tags": [info.group or "core_" + info.version]}
    item = {
        "get": {**common, "operationId": f"read{info.kind}", "x-kubernetes-action": "get", "responses": ok},
        "put": {
            **common,
            "operationId": f"replace{info.kind}",
            "x-kubernetes-action": "put",
            "parameters": [_param("dryRun"), _param("fieldManager"), _FIELD_VALIDATION],
            "requestBody": body,
            "responses": ok,
        },
        "patch": {
            **common,
            "operationId": f"patch{info.kind}",
            "x-kubernetes-action": "patch",
            "parameters": [_param("dryRun"), _param("fieldManager"), _FIELD_VALIDATION, _param("force")],
            "requestBody": patch_body,
            "responses": ok,
        },
        "delete": {
            **common,
            "operationId": f"delete{info.kind}",
            "x-kubernetes-action": "delete",
            "responses": ok,
        },
        "parameters": [_param("name", "path")] + ([_param("namespace", "path")] if info.namespaced else []),
    }
    coll = {
        "get": {**common, "operationId": f"list{info.kind}", "x-kubernetes-action": "list", "responses": ok},
        "post": {
            **common,
            "operationId": f"create{info.kind}",
            "x-kubernetes-action": "post",
            "parameters": [_param("dryRun"), _param("fieldManager"), _FIELD_VALIDATION],
            "requestBody": body,
            "responses": ok,
        },
        "parameters": [_param("namespace", "path")] if info.namespaced else [],
    }
    return item, coll


def _object_meta() -> dict[str, Any]:
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _schema(info: ResourceInfo) -> dict[str, Any]:
    gvk = [{"group": info.group, "version": info.version, "kind": info.kind}]
    if info.is_custom:
        s: dict[str, Any] = json.loads(json.dumps(info.schema or {"type": "object"}))
        props = s.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned schema."}
        props["kind"] = {
            "type": "string",
            "description": "Kind is a string value representing the REST resource.",
        }
        props["metadata"] = {
            "allOf": [_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")],
            "description": "Standard object's metadata.",
        }
        s["type"] = "object"
        s["x-kubernetes-group-version-kind"] = gvk
        return s
    return {
        "type": "object",
        "description": f"{info.kind} (kubesim does not publish built-in schemas)",
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema."},
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource.",
            },
            "metadata": {
                "allOf": [_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")],
                "description": "Standard object's metadata.",
            },
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": gvk,
    }


def document(registry: Registry, path: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group-version (`api/v1`, `apis/batch/v1`), or None."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    infos = registry.in_group_version(group, version)
    if not infos:
        return None
    prefix = "/" + _gv_path(group, version)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": _object_meta()}
    for info in sorted(infos, key=lambda i: i.resource):
        sname = schema_name(info)
        schemas[sname] = _schema(info)
        item, coll = _ops(info, sname)
        if info.namespaced:
            base = f"{prefix}/namespaces/{{namespace}}/{info.resource}"
        else:
            base = f"{prefix}/{info.resource}"
        paths[base] = coll
        paths[base + "/{name}"] = item
        if info.has_status:
            status_item, _ = _ops(info, sname)
            paths[base + "/{name}/status"] = status_item
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
