"""The catalogue of resources kubesim serves: built-in kinds plus whatever CRDs define.

`ResourceInfo` is everything the store, the router, discovery, OpenAPI and the table printer need
to know about one resource (names, scope, verbs, subresources, printer columns). `Registry` holds
them and is mutated when CRDs are created or deleted; discovery reads it on every request so a new
CRD is served at once.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubesim import jobpolicy
from kubesim.errors import ApiError, now_rfc3339
from kubesim.quantity import parse_quantity

__all__ = [
    "KindKey",
    "PrinterColumn",
    "ResourceInfo",
    "Registry",
    "builtin_resources",
    "ALL_VERBS",
]

# (group, version, resource), e.g. ("", "v1", "pods"), ("batch", "v1", "jobs").
KindKey = tuple[str, str, str]

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class PrinterColumn:
    """One column of `kubectl get` output; `json_path` is a CRD-style JSONPath (`.spec.x`)."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""


# Built-in resources whose DELETE returns the object (upstream `ReturnDeletedObject: true`, which
# the OpenAPI document, and so the official clients, type as the object); the others answer
# `Status{status: Success}` once the object is gone.
RETURN_DELETED_OBJECT: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "pods"),
        ("", "podtemplates"),
        ("", "resourcequotas"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("", "namespaces"),
        ("", "persistentvolumes"),
        ("", "persistentvolumeclaims"),
        ("storage.k8s.io", "storageclasses"),
        ("storage.k8s.io", "csidrivers"),
        ("storage.k8s.io", "csinodes"),
        ("storage.k8s.io", "volumeattachments"),
        ("storage.k8s.io", "volumeattributesclasses"),
        ("resource.k8s.io", "deviceclasses"),
        ("resource.k8s.io", "resourceclaims"),
        ("resource.k8s.io", "resourceclaimtemplates"),
        ("resource.k8s.io", "resourceslices"),
    }
)


@dataclass
class ResourceInfo:
    """One servable resource in one version.

    Invariant: (group, resource) names the storage; every version of a resource shares the same
    objects (kubesim does no schema conversion between versions, only rewrites `apiVersion`).
    """

    group: str
    version: str
    resource: str  # plural, lower case
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    # subresource name -> verbs; "status" and "scale" are handled by the router itself,
    # others ("log", "exec", "portforward") by handlers registered with the API server.
    subresources: dict[str, list[str]] = field(default_factory=dict)
    printer_columns: list[PrinterColumn] = field(default_factory=list)
    # For custom resources: the CRD's openAPIV3Schema of this version (None = no validation).
    schema: dict[str, Any] | None = None
    served: bool = True
    storage_version: bool = True
    # CRD `selectableFields` (extra field selectors a custom resource accepts), as dotted paths.
    selectable_fields: frozenset[str] = frozenset()
    crd_name: str | None = None

    @property
    def key(self) -> KindKey:
        return (self.group, self.version, self.resource)

    @property
    def group_resource(self) -> tuple[str, str]:
        return (self.group, self.resource)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def is_custom(self) -> bool:
        return self.crd_name is not None

    @property
    def returns_deleted_object(self) -> bool:
        """Whether DELETE answers with the deleted object rather than a `Status`: the registries
        that set `ReturnDeletedObject` upstream (the official clients parse the answer by it)."""
        return self.is_custom or self.group_resource in RETURN_DELETED_OBJECT

    def qualified(self) -> str:
        """`pods`, `jobs.batch`: the name used in error messages."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


class Registry:
    """All resources currently served, keyed by (group, version, resource)."""

    def __init__(self, infos: list[ResourceInfo] | None = None) -> None:
        self._infos: dict[KindKey, ResourceInfo] = {}
        for info in infos if infos is not None else builtin_resources():
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        self._infos[info.key] = info

    def remove_crd(self, crd_name: str) -> None:
        for key in [k for k, i in self._infos.items() if i.crd_name == crd_name]:
            del self._infos[key]

    def get(self, key: KindKey) -> ResourceInfo | None:
        return self._infos.get(key)

    def all(self) -> list[ResourceInfo]:
        return list(self._infos.values())

    def by_kind(self, group: str, version: str, kind: str) -> ResourceInfo | None:
        for info in self._infos.values():
            if info.group == group and info.version == version and info.kind == kind:
                return info
        return None

    def by_api_version_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        group, _, version = api_version.rpartition("/")
        return self.by_kind(group, version, kind)

    def any_version(self, group: str, resource: str) -> ResourceInfo | None:
        """Some served version of (group, resource): the storage version when there is one."""
        found = [i for i in self._infos.values() if i.group == group and i.resource == resource]
        found.sort(key=lambda i: not i.storage_version)
        return found[0] if found else None

    def groups(self) -> dict[str, list[str]]:
        """group -> versions, preferred (storage) version first."""
        out: dict[str, list[str]] = {}
        for info in self._infos.values():
            versions = out.setdefault(info.group, [])
            if info.version not in versions:
                if info.storage_version:
                    versions.insert(0, info.version)
                else:
                    versions.append(info.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._infos.values() if i.group == group and i.version == version]

    def copy(self) -> Registry:
        return Registry([copy.copy(i) for i in self._infos.values()])


def builtin_resources() -> list[ResourceInfo]:
    """The built-in kinds kubesim serves (fresh objects each call)."""
    st = {"status": ["get", "patch", "update"]}
    return [
        ResourceInfo(
            "",
            "v1",
            "namespaces",
            "Namespace",
            False,
            "namespace",
            ["ns"],
            verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
            subresources=dict(st),
        ),
        ResourceInfo("", "v1", "pods", "Pod", True, "pod", ["po"], ["all"], subresources=dict(st)),
        ResourceInfo("", "v1", "secrets", "Secret", True, "secret"),
        ResourceInfo("", "v1", "configmaps", "ConfigMap", True, "configmap", ["cm"]),
        ResourceInfo("", "v1", "events", "Event", True, "event", ["ev"]),
        ResourceInfo(
            "", "v1", "services", "Service", True, "service", ["svc"], ["all"], subresources=dict(st)
        ),
        ResourceInfo("", "v1", "nodes", "Node", False, "node", ["no"], subresources=dict(st)),
        ResourceInfo(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            True,
            "serviceaccount",
            ["sa"],
            subresources={"token": ["create"]},
        ),
        ResourceInfo(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            True,
            "persistentvolumeclaim",
            ["pvc"],
            subresources=dict(st),
        ),
        ResourceInfo(
            "",
            "v1",
            "persistentvolumes",
            "PersistentVolume",
            False,
            "persistentvolume",
            ["pv"],
            subresources=dict(st),
        ),
        ResourceInfo("", "v1", "endpoints", "Endpoints", True, "endpoints", ["ep"]),
        ResourceInfo(
            "",
            "v1",
            "resourcequotas",
            "ResourceQuota",
            True,
            "resourcequota",
            ["quota"],
            subresources=dict(st),
        ),
        ResourceInfo("", "v1", "limitranges", "LimitRange", True, "limitrange", ["limits"]),
        ResourceInfo("batch", "v1", "jobs", "Job", True, "job", [], ["all"], subresources=dict(st)),
        ResourceInfo(
            "batch", "v1", "cronjobs", "CronJob", True, "cronjob", ["cj"], ["all"], subresources=dict(st)
        ),
        ResourceInfo(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            True,
            "deployment",
            ["deploy"],
            ["all"],
            subresources={"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]},
        ),
        ResourceInfo(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            True,
            "replicaset",
            ["rs"],
            ["all"],
            subresources=dict(st),
        ),
        ResourceInfo(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            True,
            "statefulset",
            ["sts"],
            ["all"],
            subresources=dict(st),
        ),
        ResourceInfo(
            "apps", "v1", "daemonsets", "DaemonSet", True, "daemonset", ["ds"], ["all"], subresources=dict(st)
        ),
        ResourceInfo("events.k8s.io", "v1", "events", "Event", True, "event", ["ev"]),
        ResourceInfo("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
        ResourceInfo("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
        ResourceInfo("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, "clusterrole"),
        ResourceInfo(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            False,
            "clusterrolebinding",
        ),
        ResourceInfo(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            False,
            "customresourcedefinition",
            ["crd", "crds"],
            ["api-extensions"],
            subresources=dict(st),
        ),
        ResourceInfo("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
        ResourceInfo(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            True,
            "poddisruptionbudget",
            ["pdb"],
            subresources=dict(st),
        ),
        ResourceInfo(
            "networking.k8s.io", "v1", "ingresses", "Ingress", True, "ingress", ["ing"], subresources=dict(st)
        ),
        ResourceInfo(
            "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy", ["netpol"]
        ),
        ResourceInfo(
            "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, "priorityclass", ["pc"]
        ),
        ResourceInfo("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, "storageclass", ["sc"]),
        ResourceInfo(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            False,
            "selfsubjectaccessreview",
            verbs=["create"],
        ),
        ResourceInfo(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            False,
            "selfsubjectreview",
            verbs=["create"],
        ),
        ResourceInfo(
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            True,
            "selfsubjectrulesreview",
            verbs=["create"],
        ),
    ]


# ---------------------------------------------------------------------- defaulting (per kind)

_service_ip_counter = [10]


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    if "serviceAccountName" in spec or "serviceAccount" not in spec:
        spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        image = str(c.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        resources = c.setdefault("resources", {})
        # The API server's defaulting: a resource with a limit and no request requests its limit.
        if isinstance(resources, dict) and resources.get("limits"):
            requests = resources.setdefault("requests", {})
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def _qos_class(spec: dict[str, Any]) -> str:
    any_set = False
    guaranteed = True
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and req[r] != lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# Field selectors the real server accepts beyond metadata.name and metadata.namespace, per
# (group, resource). Anything else is a 400 there, so it is here too.
FIELD_SELECTORS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        }
    ),
    ("", "events"): frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    ("events.k8s.io", "events"): frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
            "reportingComponent",
            "source",
        }
    ),
    ("", "secrets"): frozenset({"type"}),
    ("", "namespaces"): frozenset({"status.phase"}),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("", "replicationcontrollers"): frozenset({"status.replicas"}),
    ("apps", "replicasets"): frozenset({"status.replicas"}),
    ("batch", "jobs"): frozenset({"status.successful"}),
    ("certificates.k8s.io", "certificatesigningrequests"): frozenset({"spec.signerName"}),
}


def check_field_selector(info: ResourceInfo, paths: list[str]) -> str | None:
    """The first field path the real server would refuse for this resource, or None."""
    allowed = FIELD_SELECTORS.get(info.group_resource, frozenset()) | info.selectable_fields
    for p in paths:
        if p not in ("metadata.name", "metadata.namespace") and p not in allowed:
            return p
    return None


def prepare_create(info: ResourceInfo, obj: dict[str, Any], store: Any) -> dict[str, Any]:
    """Server-side defaults and create-time resets of built-in kinds (status is cleared where the
    real server clears it; pods start Pending; jobs get their selector and labels)."""
    key = (info.group, info.resource)
    meta = obj["metadata"]
    if info.has_status and key not in {
        ("", "nodes"),
        ("", "namespaces"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    }:
        obj.pop("status", None)
    if key == ("", "pods"):
        spec = obj.setdefault("spec", {})
        if not isinstance(spec.get("containers"), list) or not spec["containers"]:
            raise ApiError.invalid(
                info,
                meta["name"],
                [{"field": "spec.containers", "reason": "FieldValueRequired", "message": "Required value"}],
            )
        _default_pod_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
    elif key == ("batch", "jobs"):
        spec = obj.setdefault("spec", {})
        uid = meta["uid"]
        mode_causes = jobpolicy.validate_indexed_name(meta["name"], spec) + jobpolicy.validate_spec(spec)
        if mode_causes:
            raise ApiError.invalid(info, meta["name"], mode_causes)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        # As upstream: with a per-index limit the Job-wide one defaults to "no limit".
        spec.setdefault("backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        # As upstream: with a podFailurePolicy a pod is replaced only once it has failed.
        spec.setdefault(
            "podReplacementPolicy",
            "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed",
        )
        tmpl = spec.setdefault("template", {})
        tmeta = tmpl.setdefault("metadata", {})
        labels = tmeta.setdefault("labels", {})
        if not spec.get("manualSelector"):
            for k, v in (
                ("batch.kubernetes.io/controller-uid", uid),
                ("batch.kubernetes.io/job-name", meta["name"]),
                ("controller-uid", uid),
                ("job-name", meta["name"]),
            ):
                labels.setdefault(k, v)
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        tspec = tmpl.setdefault("spec", {})
        if tspec.get("restartPolicy") not in ("Never", "OnFailure"):
            raise ApiError.invalid(
                info,
                meta["name"],
                [
                    {
                        "field": "spec.template.spec.restartPolicy",
                        "reason": "FieldValueNotSupported",
                        "message": f'Unsupported value: "{tspec.get("restartPolicy", "Always")}": supported values: '
                        '"OnFailure", "Never"',
                    }
                ],
            )
        policy_causes = jobpolicy.validate(spec)
        if policy_causes:
            raise ApiError.invalid(info, meta["name"], policy_causes)
        _default_pod_spec(tspec)
        meta.setdefault("labels", {}).update(
            {
                k: v
                for k, v in labels.items()
                if k
                in (
                    "batch.kubernetes.io/controller-uid",
                    "batch.kubernetes.io/job-name",
                    "controller-uid",
                    "job-name",
                )
            }
        )
    elif key == ("", "persistentvolumeclaims"):
        spec = obj.setdefault("spec", {})
        causes = []
        if not spec.get("accessModes"):
            causes.append(
                {
                    "field": "spec.accessModes",
                    "reason": "FieldValueRequired",
                    "message": "Required value: at least 1 access mode is required",
                }
            )
        modes = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
        for mode in spec.get("accessModes") or []:
            if mode not in modes:
                causes.append(
                    {
                        "field": "spec.accessModes",
                        "reason": "FieldValueNotSupported",
                        "message": f'Unsupported value: "{mode}": supported values: '
                        + ", ".join(f'"{m}"' for m in modes),
                    }
                )
        if "ReadWriteOncePod" in (spec.get("accessModes") or []) and len(spec["accessModes"]) > 1:
            causes.append(
                {
                    "field": "spec.accessModes",
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: may not use ReadWriteOncePod with other access modes",
                }
            )
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            causes.append(
                {
                    "field": "spec.resources[storage]",
                    "reason": "FieldValueRequired",
                    "message": "Required value",
                }
            )
        if causes:
            raise ApiError.invalid(info, meta["name"], causes)
        spec.setdefault("volumeMode", "Filesystem")
        # The admission plugin StorageObjectInUseProtection: a claim in use is not deleted.
        finalizers = meta.setdefault("finalizers", [])
        if "kubernetes.io/pvc-protection" not in finalizers:
            finalizers.append("kubernetes.io/pvc-protection")
        obj["status"] = {"phase": "Pending"}
    elif key == ("", "persistentvolumes"):
        obj.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain")
        obj["status"] = {"phase": "Available"}
    elif key == ("", "namespaces"):
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    elif key == ("", "services"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") != "None":
            _service_ip_counter[0] += 1
            n = _service_ip_counter[0]
            spec.setdefault("clusterIP", f"10.96.{n // 250}.{n % 250 + 1}")
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        obj["status"] = {"loadBalancer": {}}
    elif key == ("apps", "deployments"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        )
        _default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    elif key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
        data = (
            obj.setdefault("data", {})
            if obj.get("data") is not None or obj.get("stringData")
            else obj.get("data")
        )
        if obj.get("stringData"):
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()  # type: ignore[index]
    elif key == ("", "nodes"):
        obj.setdefault("spec", {})
    _check_data_size(info, obj)
    return obj


# A ConfigMap's or Secret's data, keys and values together, is at most 1 MiB (core.MaxSecretSize).
MAX_DATA_BYTES = 1024 * 1024


def _check_data_size(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """Refuses a ConfigMap or Secret over 1 MiB with the real server's 422."""
    key = (info.group, info.resource)
    if key == ("", "configmaps"):
        # Values count as the bytes they are; binaryData values are base64 on the wire.
        total = sum(len(k) + len(str(v).encode()) for k, v in (obj.get("data") or {}).items())
        total += sum(len(k) + len(base64.b64decode(str(v))) for k, v in (obj.get("binaryData") or {}).items())
        field_path = "[]"
    elif key == ("", "secrets"):
        total = sum(len(k) + len(base64.b64decode(str(v))) for k, v in (obj.get("data") or {}).items())
        field_path = "data"
    else:
        return
    if total > MAX_DATA_BYTES:
        raise ApiError.invalid(
            info,
            obj["metadata"]["name"],
            [
                {
                    "field": field_path,
                    "reason": "FieldValueTooLong",
                    "message": f"Too long: must have at most {MAX_DATA_BYTES} bytes",
                }
            ],
        )


_POD_MUTABLE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
    "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
    "previously negative)"
)


def _pod_spec_change_allowed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether `new` differs from `old` only where the real server lets a pod spec change."""
    candidate = copy.deepcopy(new)
    for field_name in ("containers", "initContainers"):
        olds = old.get(field_name) or []
        news = candidate.get(field_name) or []
        if len(olds) == len(news):
            for o, n in zip(olds, news):
                if isinstance(o, dict) and isinstance(n, dict) and "image" in o:
                    n["image"] = o["image"]
    for field_name in ("activeDeadlineSeconds",):
        if field_name in old:
            candidate[field_name] = old[field_name]
        else:
            candidate.pop(field_name, None)
    old_tol = old.get("tolerations") or []
    new_tol = candidate.get("tolerations") or []
    if new_tol[: len(old_tol)] == old_tol:
        if old_tol:
            candidate["tolerations"] = old_tol
        else:
            candidate.pop("tolerations", None)
    return bool(candidate == old)


def prepare_update(
    info: ResourceInfo, new: dict[str, Any], old: dict[str, Any], store: Any, trusted: bool = False
) -> dict[str, Any]:
    """Update-time normalisation and the immutability rules of built-in kinds.

    `trusted` writes (the kubelet binding a pod, controllers) skip the immutability checks.
    """

    key = (info.group, info.resource)
    name = old["metadata"]["name"]
    if key == ("", "secrets") and new.get("stringData"):
        data = new.setdefault("data", {}) or {}
        new["data"] = data
        for k, v in new.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    elif key == ("", "pods") and not trusted:
        spec = new.setdefault("spec", {})
        _default_pod_spec(spec)
        if not _pod_spec_change_allowed(old.get("spec") or {}, spec):
            raise ApiError.invalid(
                info,
                name,
                [{"field": "spec", "reason": "FieldValueForbidden", "message": f"Forbidden: {_POD_MUTABLE}"}],
            )
    elif key == ("batch", "jobs") and not trusted:
        spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
        tmpl = spec.get("template") or {}
        _default_pod_spec(tmpl.setdefault("spec", {}))
        labels = tmpl.setdefault("metadata", {}).setdefault("labels", {})
        for k, v in ((old_spec.get("template") or {}).get("metadata") or {}).get("labels", {}).items():
            if k in (
                "batch.kubernetes.io/controller-uid",
                "batch.kubernetes.io/job-name",
                "controller-uid",
                "job-name",
            ):
                labels.setdefault(k, v)
        if "selector" not in spec and "selector" in old_spec:
            spec["selector"] = old_spec["selector"]
        for field_name in ("selector", "template"):
            if field_name in old_spec and spec.get(field_name) != old_spec[field_name]:
                raise ApiError.invalid(
                    info,
                    name,
                    [
                        {
                            "field": f"spec.{field_name}",
                            "reason": "FieldValueInvalid",
                            "message": f"Invalid value: {json.dumps(spec.get(field_name), separators=(',', ':'))}: "
                            "field is immutable",
                        }
                    ],
                )
    elif key == ("", "persistentvolumeclaims") and not trusted:
        _check_claim_update(info, name, new, old, store)
    _check_data_size(info, new)
    return new


def _claim_storage(obj: dict[str, Any]) -> str:
    return str((((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage") or "")


def _check_claim_update(
    info: ResourceInfo, name: str, new: dict[str, Any], old: dict[str, Any], store: Any
) -> None:
    """A claim's spec is immutable but for its storage request, which may only grow, and only on a
    bound claim whose StorageClass allows expansion (the PersistentVolumeClaimResize admission)."""
    spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
    spec.setdefault("volumeMode", old_spec.get("volumeMode", "Filesystem"))
    for k in ("volumeName", "storageClassName"):
        if k in old_spec and k not in spec:
            spec[k] = old_spec[k]

    def without_requests(s: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(s)
        (out.get("resources") or {}).pop("requests", None)
        if not out.get("resources"):
            out.pop("resources", None)
        return out

    if without_requests(spec) != without_requests(old_spec):
        raise ApiError.invalid(
            info,
            name,
            [
                {
                    "field": "spec",
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: spec is immutable after creation except resources.requests and "
                    "volumeAttributesClassName for bound claims",
                }
            ],
        )
    wanted, had = _claim_storage(new), _claim_storage(old)
    if wanted == had:
        return
    if parse_quantity(wanted or "0") < parse_quantity(had or "0"):
        raise ApiError.invalid(
            info,
            name,
            [
                {
                    "field": "spec.resources.requests.storage",
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: field can not be less than previous value",
                }
            ],
        )
    class_name = old_spec.get("storageClassName")
    storage_class = (
        store.get(("storage.k8s.io", "v1", "storageclasses"), None, class_name) if class_name else None
    )
    bound = (old.get("status") or {}).get("phase") == "Bound"
    if not bound or storage_class is None or not storage_class.get("allowVolumeExpansion"):
        raise ApiError(
            403,
            "Forbidden",
            f'{info.qualified()} "{name}" is forbidden: only dynamically provisioned pvc can be resized and '
            "the storageclass that provisions the pvc must support resize",
            {"name": name, "kind": info.resource},
        )


# ---------------------------------------------------------------------- CRDs


def admit_crd(crd: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """Validate and default a CustomResourceDefinition, and set its status as the real server
    does once names are accepted (Established and NamesAccepted True)."""

    info = registry.get(("apiextensions.k8s.io", "v1", "customresourcedefinitions"))
    assert info is not None
    name = crd["metadata"]["name"]
    spec = crd.get("spec") or {}
    causes: list[dict[str, str]] = []

    def bad(fieldpath: str, message: str, reason: str = "FieldValueInvalid") -> None:
        causes.append({"field": fieldpath, "reason": reason, "message": message})

    group = spec.get("group")
    names = spec.get("names") or {}
    if not group:
        bad("spec.group", "Required value", "FieldValueRequired")
    if not names.get("plural"):
        bad("spec.names.plural", "Required value", "FieldValueRequired")
    if not names.get("kind"):
        bad("spec.names.kind", "Required value", "FieldValueRequired")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        bad(
            "spec.scope",
            f'Unsupported value: "{spec.get("scope", "")}": supported values: "Cluster", "Namespaced"',
            "FieldValueNotSupported",
        )
    versions = spec.get("versions") or []
    if not versions:
        bad("spec.versions", "Invalid value: null: must have exactly one version marked as storage version")
    elif sum(1 for v in versions if v.get("storage")) != 1:
        bad("spec.versions", "Invalid value: must have exactly one version marked as storage version")
    if group and names.get("plural") and name != f"{names['plural']}.{group}":
        bad("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
    for i, v in enumerate(versions):
        if not ((v.get("schema") or {}).get("openAPIV3Schema")):
            bad(
                f"spec.versions[{i}].schema.openAPIV3Schema",
                "Required value: schemas are required",
                "FieldValueRequired",
            )
    if causes:
        raise ApiError.invalid(info, name, causes)
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    spec["names"] = names
    spec.setdefault("conversion", {"strategy": "None"})
    crd["spec"] = spec
    now = now_rfc3339()
    old_status = crd.get("status") or {}
    old_conds = {c.get("type"): c for c in old_status.get("conditions") or []}

    def cond(ctype: str, reason: str, message: str) -> dict[str, Any]:
        prev = old_conds.get(ctype)
        return {
            "type": ctype,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": prev.get("lastTransitionTime", now) if prev else now,
        }

    stored = list(old_status.get("storedVersions") or [])
    for v in versions:
        if v.get("storage") and v["name"] not in stored:
            stored.append(v["name"])
    crd["status"] = {
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": {
            k: names[k]
            for k in ("plural", "singular", "shortNames", "kind", "listKind", "categories")
            if k in names
        },
        "storedVersions": stored,
    }
    return crd


def crd_resource_infos(crd: dict[str, Any]) -> list[ResourceInfo]:
    """The ResourceInfos (one per served version) a CRD defines."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subs: dict[str, list[str]] = {}
        if "status" in (v.get("subresources") or {}):
            subs["status"] = ["get", "patch", "update"]
        if "scale" in (v.get("subresources") or {}):
            subs["scale"] = ["get", "patch", "update"]
        cols = [
            PrinterColumn(
                c["name"],
                c.get("jsonPath", ""),
                c.get("type", "string"),
                c.get("description", ""),
                int(c.get("priority", 0)),
                c.get("format", ""),
            )
            for c in v.get("additionalPrinterColumns") or []
        ]
        out.append(
            ResourceInfo(
                group=spec["group"],
                version=v["name"],
                resource=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced",
                singular=names.get("singular", ""),
                short_names=list(names.get("shortNames") or []),
                categories=list(names.get("categories") or []),
                subresources=subs,
                printer_columns=cols,
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                storage_version=bool(v.get("storage")),
                crd_name=crd["metadata"]["name"],
                selectable_fields=frozenset(
                    str(f.get("jsonPath", "")).lstrip(".") for f in v.get("selectableFields") or []
                ),
            )
        )
    return out


def register_crd(crd: dict[str, Any], registry: Registry) -> None:
    registry.remove_crd(crd["metadata"]["name"])
    for info in crd_resource_infos(crd):
        registry.add(info)


# ---------------------------------------------------------------------- events.k8s.io view


def core_event_to_events_v1(ev: dict[str, Any]) -> dict[str, Any]:
    """Render a stored core/v1 Event as events.k8s.io/v1."""
    out: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": ev.get("metadata", {}),
        # Required in this version; the generated clients reject null, so derive it.
        "eventTime": ev.get("eventTime")
        or _micro(ev.get("firstTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp")),
        "reportingController": ev.get("reportingComponent") or (ev.get("source") or {}).get("component", ""),
        "reportingInstance": ev.get("reportingInstance", ""),
        "action": ev.get("action", ""),
        "reason": ev.get("reason", ""),
        "regarding": ev.get("involvedObject", {}),
        "note": ev.get("message", ""),
        "type": ev.get("type", "Normal"),
        "deprecatedSource": ev.get("source", {}),
        "deprecatedFirstTimestamp": ev.get("firstTimestamp"),
        "deprecatedLastTimestamp": ev.get("lastTimestamp"),
        "deprecatedCount": ev.get("count"),
    }
    if ev.get("related"):
        out["related"] = ev["related"]
    return out


def _micro(ts: str | None) -> str | None:
    """RFC 3339 seconds → the MicroTime form (`2026-01-02T03:04:05.000000Z`)."""
    if not ts:
        return None
    return ts[:-1] + ".000000Z" if ts.endswith("Z") and "." not in ts else ts


def events_v1_to_core_event(ev: dict[str, Any]) -> dict[str, Any]:
    """Store an events.k8s.io/v1 Event as a core/v1 Event."""
    if ev.get("apiVersion") == "v1" or "involvedObject" in ev:
        return ev
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": ev.get("metadata", {}),
        "involvedObject": ev.get("regarding", {}),
        "reason": ev.get("reason", ""),
        "message": ev.get("note", ""),
        "type": ev.get("type", "Normal"),
        "source": ev.get("deprecatedSource") or {"component": ev.get("reportingController", "")},
        "firstTimestamp": ev.get("deprecatedFirstTimestamp"),
        "lastTimestamp": ev.get("deprecatedLastTimestamp"),
        "count": ev.get("deprecatedCount") or 1,
        "eventTime": ev.get("eventTime"),
        "action": ev.get("action"),
        "reportingComponent": ev.get("reportingController", ""),
        "reportingInstance": ev.get("reportingInstance", ""),
    }
