"""RBAC as the real authorizer evaluates it, for the users a test puts under it.

kubesim lets every user do everything unless it is told otherwise (`Auth.forbid`, or this module).
A user named with `--rbac-user` is authorized only by the Roles and ClusterRoles bound to them
(RoleBindings in the request's namespace, ClusterRoleBindings everywhere), rule by rule:

- `apiGroups` holds the group or `*`; `verbs` the verb or `*`;
- `resources` holds `resource` or `resource/subresource` exactly (`services` does NOT grant
  `services/proxy`), `*` (everything) or `*/subresource`;
- `resourceNames`, when set, must hold the request's name; for a service proxy request the name is
  the whole path segment, e.g. `nbd-store:http` (so `nbd-store` alone grants nothing there). A
  request with no name (list, watch, create of a new object) never matches a rule with names.

Subjects are `User` (by name), `Group` (by the user's groups) and `ServiceAccount`
(`system:serviceaccount:NS:NAME`). `system:masters` is allowed everything, as on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["RuleSource", "allowed", "rule_allows"]

ROLES = ("rbac.authorization.k8s.io", "v1", "roles")
ROLE_BINDINGS = ("rbac.authorization.k8s.io", "v1", "rolebindings")
CLUSTER_ROLES = ("rbac.authorization.k8s.io", "v1", "clusterroles")
CLUSTER_ROLE_BINDINGS = ("rbac.authorization.k8s.io", "v1", "clusterrolebindings")


class RuleSource(Protocol):
    """What the authorizer reads: kubesim's store."""

    def get(self, kind_key: Any, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    def list(self, kind_key: Any, namespace: str | None = None) -> Any: ...


def rule_allows(
    rule: dict[str, Any], verb: str, group: str, resource: str, subresource: str | None, name: str | None
) -> bool:
    groups = rule.get("apiGroups") or []
    if "*" not in groups and group not in groups:
        return False
    verbs = rule.get("verbs") or []
    if "*" not in verbs and verb not in verbs:
        return False
    wanted = f"{resource}/{subresource}" if subresource else resource
    resources = rule.get("resources") or []
    if not (
        "*" in resources
        or wanted in resources
        or (subresource is not None and f"*/{subresource}" in resources)
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or (name is not None and name in names)


def _subject_matches(subject: dict[str, Any], user: str, groups: Iterable[str]) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user)
    if kind == "Group":
        return subject.get("name") in set(groups)
    if kind == "ServiceAccount":
        return user == f"system:serviceaccount:{subject.get('namespace', '')}:{subject.get('name', '')}"
    return False


def _items(result: Any) -> list[dict[str, Any]]:
    items = result[0] if isinstance(result, tuple) else result
    return list(items or [])


def allowed(
    store: RuleSource,
    user: str,
    groups: Iterable[str],
    verb: str,
    group: str,
    resource: str,
    subresource: str | None,
    namespace: str | None,
    name: str | None,
) -> bool:
    """Whether any rule bound to the user allows the request."""
    groups = tuple(groups)
    if "system:masters" in groups:
        return True
    bindings: list[tuple[dict[str, Any], str | None]] = [
        (b, None) for b in _items(store.list(CLUSTER_ROLE_BINDINGS, None))
    ]
    if namespace is not None:
        bindings += [(b, namespace) for b in _items(store.list(ROLE_BINDINGS, namespace))]
    for binding, scope in bindings:
        if not any(_subject_matches(s, user, groups) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            role = store.get(CLUSTER_ROLES, None, str(ref.get("name", "")))
        elif ref.get("kind") == "Role" and scope is not None:
            role = store.get(ROLES, scope, str(ref.get("name", "")))
        else:
            role = None
        for rule in (role or {}).get("rules") or []:
            if rule_allows(rule, verb, group, resource, subresource, name):
                return True
    return False
