"""Authentication and the little authorization kubesim does.

Authentication: bearer tokens (a map token → user) and TLS client certificates signed by
kubesim's CA (user = certificate CN). When no token is configured and no client certificate is
presented, requests are anonymous and allowed (`require_auth=False`), which is what a test that
wants no auth gets.

Authorization: everything is allowed except (user, namespace) pairs made forbidden through the
admin API, and requests of users put under RBAC (`rbac_users`, `--rbac-user`) that no Role or
ClusterRole bound to them allows (`kubesim.rbac`); those answer 403 with the real server's wording,
which is what clients must handle.
"""

from __future__ import annotations

import hmac
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
    # Users authorized by the cluster's RBAC objects only (read from `rules`, the store).
    rbac_users: set[str] = field(default_factory=set)
    rules: rbac.RuleSource | None = None

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
                    return User(user)
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
        """Raise 403 Forbidden when `user` may not act in `namespace`, or RBAC does not allow it."""
        under_rbac = user.name in self.rbac_users and self.rules is not None
        if under_rbac:
            assert self.rules is not None
            if rbac.allowed(
                self.rules, user.name, user.groups, verb, group, resource, subresource, namespace, name
            ):
                return
        elif namespace is None or namespace not in self.forbidden.get(user.name, set()):
            return
        res = f"{resource}/{subresource}" if subresource else resource
        qualified = f"{resource}.{group}" if group else resource
        what = f'{qualified} "{name}"' if name else qualified
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise ApiError(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{user.name}" cannot {verb} resource "{res}" in API group '
            f'"{group}"{where}',
            {"name": name, "kind": resource} if name else {"kind": resource},
        )


def _bearer(header: str | None) -> str:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return ""


def _unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")
