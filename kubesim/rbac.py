"""RBAC authorization, evaluated the way the API server's RBAC authorizer evaluates it.

Pure: `allows(objects, user, attrs)` reads the Roles, ClusterRoles, RoleBindings and
ClusterRoleBindings it is given (`Objects`) and answers whether any binding that names the user
(a User, one of its Groups, or its ServiceAccount) refers to a role with a matching rule:

- a ClusterRoleBinding's role applies everywhere; a RoleBinding's role (a Role of its namespace,
  or a ClusterRole) only in the binding's namespace;
- a rule matches when its verbs, apiGroups and resources hold the request's (or `*`), where a
  subresource is matched as `resource/subresource` (`*/subresource` matches it in every resource);
  non-empty `resourceNames` restrict the rule to requests that name one of them (a list or a
  create, which names nothing, never matches such a rule, as upstream).

Every authenticated user also holds what upstream's bootstrap `system:basic-user` role gives the
`system:authenticated` group: creating self access, rules and subject reviews.

What it leaves out: aggregated ClusterRoles (upstream's aggregation controller fills their rules;
kubesim does not) and non-resource URLs (every authenticated user may read discovery, as the
bootstrap `system:discovery` role allows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Attributes", "Objects", "Subject", "allows", "rules_for", "service_account_groups"]

SA_PREFIX = "system:serviceaccount:"


class Subject(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def groups(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str
    resource: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


@dataclass
class Objects:
    """The RBAC objects of the cluster: roles by (namespace, name), cluster roles by name."""

    roles: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    cluster_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    role_bindings: list[dict[str, Any]] = field(default_factory=list)
    cluster_role_bindings: list[dict[str, Any]] = field(default_factory=list)


# The bootstrap policy's `system:basic-user`, bound to `system:authenticated` on every cluster.
BASIC_USER_RULES = (
    {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    },
    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
)


def service_account_groups(user_name: str) -> tuple[str, ...]:
    """The groups the token authenticator gives a service account (empty for other users)."""
    if not user_name.startswith(SA_PREFIX):
        return ()
    parts = user_name[len(SA_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        return ()
    return ("system:serviceaccounts", f"system:serviceaccounts:{parts[0]}")


def _names_subject(subject: dict[str, Any], user: Subject, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = str(subject.get("name") or "")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = str(subject.get("namespace") or binding_namespace)
        return user.name == f"{SA_PREFIX}{ns}:{name}"
    return False


def _binds(binding: dict[str, Any], user: Subject) -> bool:
    ns = str((binding.get("metadata") or {}).get("namespace") or "")
    return any(_names_subject(s, user, ns) for s in binding.get("subjects") or [] if isinstance(s, dict))


def _rule_matches(rule: dict[str, Any], attrs: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    resources = rule.get("resources") or []
    if attrs.subresource:
        wanted = {f"{attrs.resource}/{attrs.subresource}", f"*/{attrs.subresource}", "*"}
    else:
        wanted = {attrs.resource, "*"}
    if not wanted.intersection(resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(attrs.name) and attrs.name in names)


def _role_rules(objects: Objects, ref: dict[str, Any], binding_namespace: str) -> list[dict[str, Any]]:
    kind, name = ref.get("kind"), str(ref.get("name") or "")
    role = objects.cluster_roles.get(name) if kind == "ClusterRole" else None
    if kind == "Role":
        role = objects.roles.get((binding_namespace, name))
    return [r for r in (role or {}).get("rules") or [] if isinstance(r, dict)]


def rules_for(objects: Objects, user: Subject, namespace: str | None) -> Iterable[dict[str, Any]]:
    """Every rule that applies to `user` in `namespace` (None: only the cluster-wide ones)."""
    if "system:authenticated" in user.groups:
        yield from BASIC_USER_RULES
    for b in objects.cluster_role_bindings:
        if _binds(b, user):
            yield from _role_rules(objects, b.get("roleRef") or {}, "")
    if namespace is None:
        return
    for b in objects.role_bindings:
        if (b.get("metadata") or {}).get("namespace") == namespace and _binds(b, user):
            yield from _role_rules(objects, b.get("roleRef") or {}, namespace)


def allows(objects: Objects, user: Subject, attrs: Attributes) -> bool:
    return any(_rule_matches(r, attrs) for r in rules_for(objects, user, attrs.namespace))
