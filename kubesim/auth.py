"""Authentication and the little authorization kubesim does.

Authentication: bearer tokens (a map token → user) and TLS client certificates signed by
kubesim's CA (user = certificate CN). When no token is configured and no client certificate is
presented, requests are anonymous and allowed (`require_auth=False`), which is what a test that
wants no auth gets.

Authorization: by default everything is allowed except (user, namespace) pairs made forbidden
through the admin API. Users under RBAC are also checked against the cluster's Roles and bindings
(`kubesim.rbac`), as a real cluster's RBAC authorizer does: every user outside `system:masters`
with `rbac_all` (`kubesim serve --rbac`), or the users named in `rbac_users` (`--rbac-user`).
Refusals answer 403 with the real server's wording.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubesim import rbac
from kubesim.errors import ApiError

__all__ = ["Auth", "User"]


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ("system:authenticated",)


@dataclass
class Auth:
    tokens: dict[str, str] = field(default_factory=dict)  # token -> user name
    admin_token: str = ""
    require_auth: bool = False
    # user -> namespaces in which every request is forbidden
    forbidden: dict[str, set[str]] = field(default_factory=dict)
    # RBAC: the source of the cluster's RBAC objects, and who is under it: every user outside
    # system:masters (`rbac_all`), or only the users named in `rbac_users`.
    rbac_objects: Callable[[], rbac.Objects] | None = None
    rbac_all: bool = False
    rbac_users: set[str] = field(default_factory=set)

    def add_token(self, token: str, user: str) -> None:
        self.tokens[token] = user

    def forbid(self, user: str, namespace: str) -> None:
        self.forbidden.setdefault(user, set()).add(namespace)

    def allow(self, user: str, namespace: str) -> None:
        self.forbidden.get(user, set()).discard(namespace)

    def is_admin(self, authorization: str | None) -> bool:
        token = _bearer(authorization)
        return bool(token) and bool(self.admin_token) and hmac.compare_digest(token, self.admin_token)

    def authenticate(self, authorization: str | None, peercert: dict[str, Any] | None) -> User:
        """Return the caller, or raise 401 Unauthorized."""
        token = _bearer(authorization)
        if token:
            for known, user in self.tokens.items():
                if hmac.compare_digest(token, known):
                    return _token_user(user)
            if self.admin_token and hmac.compare_digest(token, self.admin_token):
                return User("kubesim-admin", ("system:masters", "system:authenticated"))
            raise _unauthorized()
        if peercert:
            cn = ""
            groups: list[str] = []
            for rdn in peercert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        cn = v
                    elif k == "organizationName":
                        groups.append(v)
            if cn:
                return User(cn, tuple(groups) + ("system:authenticated",))
        if self.require_auth:
            raise _unauthorized()
        return User("system:anonymous", ("system:unauthenticated",))

    def authorize(
        self,
        user: User,
        verb: str,
        resource: str,
        group: str,
        namespace: str | None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> None:
        """Raise 403 Forbidden when `user` may not do `verb` on the resource."""
        if self.can(user, verb, resource, group, namespace, name, subresource):
            return
        res = f"{resource}/{subresource}" if subresource else resource
        qualified = f"{resource}.{group}" if group else resource
        what = f'{qualified} "{name}"' if name else qualified
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        raise ApiError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{user.name}" cannot {verb} resource "{res}" in API group '
            f'"{group}" {where}',
            {"name": name, "kind": resource} if name else {"kind": resource},
        )

    def can(
        self,
        user: User,
        verb: str,
        resource: str,
        group: str,
        namespace: str | None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> bool:
        if namespace is not None and namespace in self.forbidden.get(user.name, set()):
            return False
        if self.rbac_objects is None or "system:masters" in user.groups:
            return True
        if not (self.rbac_all or user.name in self.rbac_users):
            return True
        attrs = rbac.Attributes(verb, group, resource, namespace, name or None, subresource or None)
        return rbac.allows(self.rbac_objects(), user, attrs)


def _token_user(name: str) -> User:
    """The groups a token's user has: kubesim's own admin is in system:masters; a service account
    in its `system:serviceaccounts` groups, as the service-account authenticator answers."""
    if name == "kubesim-admin":
        return User(name, ("system:masters", "system:authenticated"))
    return User(name, rbac.service_account_groups(name) + ("system:authenticated",))


def _bearer(header: str | None) -> str:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return ""


def _unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")
