"""Pod Security admission: the `baseline` and `restricted` levels of the Pod Security Standards.

A namespace labelled `pod-security.kubernetes.io/enforce=baseline|restricted` refuses pods that
break its level with the real 403 (`violates PodSecurity "restricted:latest": …`, each check's
name and its hint, in the upstream order and wording); `…/warn=LEVEL` admits them with the same
text as a `Warning` header. Pods of Jobs are checked when the Job controller creates them, so a
Job in such a namespace shows `FailedCreate`, as on a real cluster.

The checks are those of upstream's policy package for the latest version (Linux pods): host
namespaces, privileged, capabilities, hostPath volumes, host ports, AppArmor, SELinux, /proc mount,
seccomp and sysctls for `baseline`; restricted volume types, privilege escalation, running as
non-root, a non-zero uid, a RuntimeDefault/Localhost seccomp profile and dropping ALL capabilities
for `restricted`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["LEVELS", "ENFORCE_LABEL", "WARN_LABEL", "violations", "message"]

LEVELS = ("privileged", "baseline", "restricted")
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
WARN_LABEL = "pod-security.kubernetes.io/warn"

_BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _q(text: str) -> str:
    return f'"{text}"'


def _names(items: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in items)
    return f"container {quoted}" if len(items) == 1 else f"containers {quoted}"


def _pod_or(items: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in items)
    return f"pod or container {quoted}" if len(items) == 1 else f"pod or containers {quoted}"


def _baseline(pod: dict[str, Any]) -> Iterator[str]:
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    containers = list(_containers(spec))
    annotations = (pod.get("metadata") or {}).get("annotations") or {}

    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        yield f"host namespaces ({', '.join(host)})"
    privileged = [c["name"] for c in containers if (c.get("securityContext") or {}).get("privileged")]
    if privileged:
        yield f"privileged ({_names(privileged)} must not set securityContext.privileged=true)"
    added: list[tuple[str, list[str]]] = []
    for c in containers:
        caps = [
            x
            for x in ((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
            if x not in _BASELINE_CAPABILITIES
        ]
        if caps:
            added.append((c["name"], caps))
    if added:
        caps = sorted({x for _, xs in added for x in xs})
        yield (
            f"non-default capabilities ({_names([n for n, _ in added])} must not include "
            f"{', '.join(_q(x) for x in caps)} in securityContext.capabilities.add)"
        )
    host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        yield f"hostPath volumes ({'volume' if len(host_paths) == 1 else 'volumes'} {', '.join(_q(n) for n in host_paths)})"
    ports = [
        (c["name"], p["hostPort"]) for c in containers for p in c.get("ports") or [] if p.get("hostPort")
    ]
    if ports:
        yield (
            f"hostPort ({_names(sorted({n for n, _ in ports}))} "
            f"{'uses hostPort' if len(ports) == 1 else 'use hostPorts'} {', '.join(str(p) for _, p in ports)})"
        )
    unconfined_aa = [
        c["name"]
        for c in containers
        if ((c.get("securityContext") or {}).get("appArmorProfile") or {}).get("type") == "Unconfined"
        or annotations.get(f"container.apparmor.security.beta.kubernetes.io/{c['name']}") == "unconfined"
    ]
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined" or unconfined_aa:
        yield (
            "appArmorProfile ("
            + (
                f'{_pod_or(unconfined_aa)} must not set appArmorProfile.type to "Unconfined"'
                if unconfined_aa
                else 'pod must not set appArmorProfile.type to "Unconfined"'
            )
            + ")"
        )
    selinux = [
        c["name"]
        for c in containers
        if ((c.get("securityContext") or {}).get("seLinuxOptions") or {}).get("type", "")
        not in _SELINUX_TYPES
    ]
    if (psc.get("seLinuxOptions") or {}).get("type", "") not in _SELINUX_TYPES or selinux:
        yield (
            "seLinuxOptions ("
            + (
                f"{_pod_or(selinux) if selinux else 'pod'} must not set seLinuxOptions.type "
                "to a forbidden value"
            )
            + ")"
        )
    proc = [
        c["name"]
        for c in containers
        if (c.get("securityContext") or {}).get("procMount", "Default") != "Default"
    ]
    if proc:
        yield f'procMount ({_names(proc)} must not set securityContext.procMount to "Unmasked")'
    unconfined = [
        c["name"]
        for c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type") == "Unconfined"
    ]
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined" or unconfined:
        who = _pod_or(unconfined) if unconfined else "pod"
        yield f'seccompProfile ({who} must not set securityContext.seccompProfile.type to "Unconfined")'
    sysctls = [s["name"] for s in psc.get("sysctls") or [] if s.get("name") not in _SAFE_SYSCTLS]
    if sysctls:
        yield f"forbidden sysctls ({', '.join(sysctls)})"


def _restricted(pod: dict[str, Any]) -> Iterator[str]:
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    containers = list(_containers(spec))

    bad_volumes = [
        (v["name"], next((k for k in v if k != "name"), ""))
        for v in spec.get("volumes") or []
        if not set(v) - {"name"} <= _RESTRICTED_VOLUMES and "hostPath" not in v
    ]
    if bad_volumes:
        kinds = sorted({k for _, k in bad_volumes})
        yield (
            f"restricted volume types ({'volume' if len(bad_volumes) == 1 else 'volumes'} "
            f"{', '.join(_q(n) for n, _ in bad_volumes)} "
            f"{'uses' if len(bad_volumes) == 1 else 'use'} restricted volume "
            f"{'type' if len(kinds) == 1 else 'types'} {', '.join(_q(k) for k in kinds)})"
        )
    escalating = [
        c["name"]
        for c in containers
        if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False
    ]
    if escalating:
        yield (
            f"allowPrivilegeEscalation != false ({_names(escalating)} must set "
            "securityContext.allowPrivilegeEscalation=false)"
        )
    caps_bad = [
        c["name"]
        for c in containers
        if "ALL" not in (((c.get("securityContext") or {}).get("capabilities") or {}).get("drop") or [])
        or set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or [])
        - {"NET_BIND_SERVICE"}
    ]
    if caps_bad:
        yield f'unrestricted capabilities ({_names(caps_bad)} must set securityContext.capabilities.drop=["ALL"])'
    pod_non_root = psc.get("runAsNonRoot")
    not_non_root = [
        c["name"]
        for c in containers
        if (c.get("securityContext") or {}).get(
            "runAsNonRoot", pod_non_root if pod_non_root is not None else None
        )
        is not True
    ]
    if pod_non_root is False or not_non_root:
        yield (
            f"runAsNonRoot != true ({_pod_or(not_non_root) if not_non_root else 'pod'} must set "
            "securityContext.runAsNonRoot=true)"
        )
    root_uid = [c["name"] for c in containers if (c.get("securityContext") or {}).get("runAsUser") == 0]
    if psc.get("runAsUser") == 0 or root_uid:
        yield f"runAsUser=0 ({_pod_or(root_uid) if root_uid else 'pod'} must not set runAsUser=0)"
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    no_seccomp = [
        c["name"]
        for c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type", pod_seccomp)
        not in ("RuntimeDefault", "Localhost")
    ]
    if no_seccomp:
        yield (
            f"seccompProfile ({_pod_or(no_seccomp)} must set securityContext.seccompProfile.type to "
            '"RuntimeDefault" or "Localhost")'
        )


def violations(pod: dict[str, Any], level: str) -> list[str]:
    """The checks `pod` fails at `level` (`privileged` allows everything), each with its hint."""
    if level == "privileged":
        return []
    if level not in LEVELS:
        level = "restricted"  # an unknown level fails closed, as upstream does
    found = list(_baseline(pod))
    if level == "restricted":
        found += list(_restricted(pod))
    return found


def message(level: str, found: list[str], verb: str = "violates") -> str:
    """`violates PodSecurity "LEVEL:latest": …` (`verb="would violate"` for a warning)."""
    return f'{verb} PodSecurity "{level}:latest": ' + ", ".join(found)
