"""API discovery documents, legacy and aggregated, built from the live `Registry`.

Both forms are computed from the same registry on every request, so /api, /apis, /api/v1 and
/apis/G/V always agree and a CRD is discoverable as soon as it is created. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from kubesim.resources import Registry, ResourceInfo

__all__ = [
    "AGGREGATED_CONTENT_TYPE",
    "api_versions",
    "api_group_list",
    "api_group",
    "resource_list",
    "aggregated",
]

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def api_versions(host: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": vs, "preferredVersion": vs[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group_doc(g, vs) for g, vs in sorted(registry.groups().items(), key=_group_order) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _group_order(item: tuple[str, list[str]]) -> tuple[int, str]:
    # Built-in groups first (stable order), custom groups after, alphabetically.
    builtin = [
        "",
        "apps",
        "events.k8s.io",
        "authorization.k8s.io",
        "batch",
        "networking.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "apiextensions.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
    ]
    g = item[0]
    return (builtin.index(g), g) if g in builtin else (len(builtin), g)


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    gv = f"{group}/{version}" if group else version
    resources: list[dict[str, Any]] = []
    for info in sorted(registry.in_group_version(group, version), key=lambda i: i.resource):
        entry: dict[str, Any] = {
            "name": info.resource,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs,
        }
        if info.short_names:
            entry["shortNames"] = info.short_names
        if info.categories:
            entry["categories"] = info.categories
        entry["storageVersionHash"] = ""
        resources.append(entry)
        for sub, verbs in sorted(info.subresources.items()):
            kind = info.kind
            sub_group, sub_version = group, version
            if sub == "scale":
                kind, sub_group, sub_version = "Scale", "autoscaling", "v1"
            elif sub in ("exec", "portforward", "attach", "proxy"):
                kind = (
                    "PodExecOptions"
                    if sub == "exec"
                    else "PodPortForwardOptions"
                    if sub == "portforward"
                    else kind
                )
            elif sub == "log":
                kind = "Pod"
            s: dict[str, Any] = {
                "name": f"{info.resource}/{sub}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": kind,
                "verbs": verbs,
            }
            if sub == "scale":
                s["group"], s["version"] = sub_group, sub_version
            resources.append(s)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _aggregated_resource(info: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": info.resource,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": info.verbs,
    }
    if info.short_names:
        entry["shortNames"] = info.short_names
    if info.categories:
        entry["categories"] = info.categories
    subs = []
    for sub, verbs in sorted(info.subresources.items()):
        kind = {"scale": "Scale", "exec": "PodExecOptions", "portforward": "PodPortForwardOptions"}.get(
            sub, info.kind
        )
        group, version = ("autoscaling", "v1") if sub == "scale" else (info.group, info.version)
        subs.append(
            {
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": verbs,
            }
        )
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(registry: Registry, core: bool) -> dict[str, Any]:
    """APIGroupDiscoveryList for /api (core=True) or /apis (core=False)."""
    items = []
    for group, versions in sorted(registry.groups().items(), key=_group_order):
        if (group == "") != core:
            continue
        vdocs = []
        for v in versions:
            infos = sorted(registry.in_group_version(group, v), key=lambda i: i.resource)
            vdocs.append(
                {"version": v, "resources": [_aggregated_resource(i) for i in infos], "freshness": "Current"}
            )
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": vdocs})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
