"""What the controller must be allowed to do, and the start-up check that it is.

`REQUIRED` is every (verb, group, resource) the controller's calls use (cluster/nbd_controller/
kube.py, watching.py, main.py), plus `update` on the `finalizers` of Notebooks and Runs: every
object the controller creates names its Notebook or Run as owner with `blockOwnerDeletion: true`,
which hardened clusters (OpenShift, OwnerReferencesPermissionEnforcement) allow only to a user who
may update the owner's finalizers. `cluster/manifests/rbac-controller.yaml` grants exactly these;
a test keeps the two in step.

`missing(review)` asks the API server (SelfSubjectAccessReview, through `review`) about each one,
so a controller whose role lacks one says so at start, naming the permission, instead of failing
a Notebook later with a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Permission", "REQUIRED", "missing", "describe"]


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {res}" + (f" ({self.group})" if self.group else "")


def _each(group: str, resource: str, verbs: str, subresource: str = "") -> list[Permission]:
    return [Permission(v, group, resource, subresource) for v in verbs.split()]


REQUIRED: tuple[Permission, ...] = tuple(
    _each("nbd.dev", "notebooks", "get list watch")
    + _each("nbd.dev", "runs", "get list watch")
    + _each("nbd.dev", "notebooks", "patch")
    + _each("nbd.dev", "notebooks", "patch", "status")
    + _each("nbd.dev", "runs", "patch", "status")
    + _each("nbd.dev", "notebooks", "update", "finalizers")
    + _each("nbd.dev", "runs", "update", "finalizers")
    + _each("", "pods", "get list watch create delete")
    + _each("", "pods", "get", "log")
    + _each("", "pods", "get", "proxy")
    + _each("", "events", "list")
    + _each("", "namespaces", "get")
    + _each("", "nodes", "list")
    + _each("", "secrets", "get create")
    + _each("", "configmaps", "get create patch")
    + _each("", "services", "get create")
    + _each("", "persistentvolumeclaims", "get create")
    + _each("batch", "jobs", "get list watch create delete")
)

# review(permission, namespace) -> allowed; namespace "" = every namespace.
Review = Callable[[Permission, str], bool]


def missing(review: Review, namespaces: tuple[str, ...] = ()) -> list[tuple[Permission, str]]:
    """The required permissions `review` denies, each with the namespace it was asked for ("" = all)."""
    scopes = namespaces or ("",)
    return [(p, ns) for ns in scopes for p in REQUIRED if not review(p, ns)]


def describe(denied: list[tuple[Permission, str]]) -> str:
    """One line for the log: what is missing, and where to grant it."""
    parts = [f"{p}" + (f" in {ns}" if ns else "") for p, ns in denied]
    return (
        "missing permissions: "
        + ", ".join(parts)
        + "; grant them in its ClusterRole (cluster/manifests/rbac-controller.yaml)"
    )
