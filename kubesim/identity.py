"""Who a container's processes run as: user, group, supplementary groups and HOME, as a kubelet and
runc derive them.

Rules (upstream kubelet `verifyRunAsNonRoot`, the CRI's security context, runc's user lookup):
* The user is the container's `securityContext.runAsUser`, else the pod's, else the image's
  `USER` (config `User`: `uid`, `uid:gid`, `name` or `name:group`); no `USER` means root.
* The primary group is `runAsGroup` (container, then pod), else the group of the image's
  `USER uid:gid`, else the user's group in the container's passwd file, else 0.
* Supplementary groups are the pod's `supplementalGroups` and its `fsGroup`: every container of a
  pod with an fsGroup can write the volumes the kubelet gave to that group.
* HOME is the user's home in the passwd file, else `/`.
* `runAsNonRoot: true` (container, then pod) refuses to start a container that would run as uid 0,
  and one whose image names its user by name only (the kubelet cannot verify it), with the
  kubelet's messages; the container waits in CreateContainerConfigError.
* A user name the passwd file does not know fails the start, as runc does.

The rules are pure: the passwd and group lookups come from the caller. `host_passwd` and
`host_group` read this machine's files, which are the container's too (kubesim's images add
layers over this machine's system directories, never an /etc of their own).
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Identity",
    "NonRootViolation",
    "PasswdEntry",
    "UnknownUser",
    "host_group",
    "host_passwd",
    "resolve_identity",
]


@dataclass(frozen=True)
class PasswdEntry:
    uid: int
    gid: int
    home: str


# name_or_uid -> the passwd entry, or None.
PasswdLookup = Callable[[str], PasswdEntry | None]
# group name -> gid, or None.
GroupLookup = Callable[[str], int | None]


class NonRootViolation(Exception):
    """`runAsNonRoot` refuses the container (the kubelet's CreateContainerConfigError message)."""


class UnknownUser(Exception):
    """The image's user (or group) is a name the container's passwd (or group) file lacks: runc's
    start error."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @property
    def is_root_unchanged(self) -> bool:
        """Root with no supplementary groups: what the runtime's own processes already are."""
        return self.uid == 0 and self.gid == 0 and not self.groups

    def prefix(self) -> list[str]:
        """The argv prefix that drops to this identity (setpriv(1) after nsenter)."""
        if self.is_root_unchanged:
            return []
        groups = [f"--groups={','.join(str(g) for g in self.groups)}"] if self.groups else ["--clear-groups"]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", *groups, "--"]


def _effective(pod_sc: dict[str, Any], c_sc: dict[str, Any], key: str) -> Any:
    value = c_sc.get(key)
    return pod_sc.get(key) if value is None else value


def _pod_ref(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', 'default')}({meta.get('uid', '')})"


def resolve_identity(
    pod: dict[str, Any],
    container: dict[str, Any],
    image_user: str,
    passwd: PasswdLookup,
    group: GroupLookup,
) -> Identity:
    """The identity container `container` of `pod` runs as.

    Raises NonRootViolation for a runAsNonRoot violation (CreateContainerConfigError) and UnknownUser
    for a user or group name that cannot be resolved (a start error).
    """
    spec = pod.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    c_sc = container.get("securityContext") or {}
    name = container.get("name", "")
    run_as_user = _effective(pod_sc, c_sc, "runAsUser")
    run_as_group = _effective(pod_sc, c_sc, "runAsGroup")
    non_root = bool(_effective(pod_sc, c_sc, "runAsNonRoot"))

    user_part, _, group_part = (image_user or "").partition(":")
    image_uid = int(user_part) if user_part.isdigit() else None
    if non_root:
        if run_as_user is not None:
            if int(run_as_user) == 0:
                raise NonRootViolation(
                    f"container's runAsUser breaks non-root policy (pod: {_pod_ref(pod)!r}, container: {name})"
                )
        elif user_part and image_uid is None:
            raise NonRootViolation(
                f"container has runAsNonRoot and image has non-numeric user ({user_part}), cannot verify "
                f"user is non-root (pod: {_pod_ref(pod)!r}, container: {name})"
            )
        elif not image_uid:
            raise NonRootViolation(
                f"container has runAsNonRoot and image will run as root (pod: {_pod_ref(pod)!r}, container: {name})"
            )

    entry: PasswdEntry | None
    if run_as_user is not None:
        uid = int(run_as_user)
        entry = passwd(str(uid))
    elif image_uid is not None:
        uid = image_uid
        entry = passwd(str(uid))
    elif user_part:
        entry = passwd(user_part)
        if entry is None:
            raise UnknownUser(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = entry.uid
    else:
        uid, entry = 0, passwd("0")

    if run_as_group is not None:
        gid = int(run_as_group)
    elif group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            found = group(group_part)
            if found is None:
                raise UnknownUser(f"unable to find group {group_part}: no matching entries in group file")
            gid = found
    else:
        gid = entry.gid if entry is not None and entry.uid == uid else 0

    extra = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        extra.append(int(pod_sc["fsGroup"]))
    groups = tuple(dict.fromkeys(g for g in extra))
    home = entry.home if entry is not None and entry.uid == uid else "/"
    return Identity(uid, gid, groups, home)


def host_passwd(name_or_uid: str) -> PasswdEntry | None:
    """The passwd entry of a user name or a numeric uid, or None."""
    try:
        entry = pwd.getpwuid(int(name_or_uid)) if name_or_uid.isdigit() else pwd.getpwnam(name_or_uid)
    except KeyError:
        return None
    return PasswdEntry(entry.pw_uid, entry.pw_gid, entry.pw_dir)


def host_group(name: str) -> int | None:
    """The gid of a group name, or None."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
