"""What a container runs: command line, environment and working directory, as a kubelet derives them.

Rules (as the real kubelet applies them):
* `command` replaces the image entrypoint and drops the image cmd; `args` alone replace the image
  cmd and keep the entrypoint; neither: entrypoint + cmd.
* `$(VAR)` in command, args and env values expands to a variable defined earlier (image env, then
  the container's env in order); `$$` is a literal `$`; an undefined reference stays as written.
* `env[].valueFrom`: secretKeyRef / configMapKeyRef (missing object or key is an error unless
  `optional`), fieldRef (metadata.name/namespace/uid/labels/annotations, spec.nodeName,
  spec.serviceAccountName, status.podIP/hostIP), resourceFieldRef (limits/requests).
* `envFrom`: configMapRef / secretRef with an optional prefix.

Pure: objects are looked up through the `Lookup` callable the caller passes; no I/O here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from kubesim.quantity import parse_quantity

__all__ = [
    "ConfigError",
    "Lookup",
    "expand",
    "resolve_argv",
    "resolve_env",
    "parse_quantity",
    "SYSTEM_PATH",
]

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# lookup(kind, name) -> the Secret / ConfigMap object, or None when it does not exist.
Lookup = Callable[[str, str], dict[str, Any] | None]


class ConfigError(Exception):
    """The container's configuration cannot be built (kubelet reason CreateContainerConfigError)."""


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion of `value` against `env`."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, value)


def resolve_argv(
    container: dict[str, Any], entrypoint: list[str], cmd: list[str], env: dict[str, str]
) -> list[str]:
    """The argv the container runs (empty list: nothing to run, an error for the caller)."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [expand(c, env) for c in command] + [expand(a, env) for a in (args or [])]
    elif args:
        argv = list(entrypoint) + [expand(a, env) for a in args]
    else:
        argv = list(entrypoint) + list(cmd)
    return argv


def _field(pod: dict[str, Any], path: str) -> str:
    md = pod.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": md.get("name"),
        "metadata.namespace": md.get("namespace"),
        "metadata.uid": md.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": (pod.get("status") or {}).get("hostIP"),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    v = simple[path]
    return "" if v is None else str(v)


def _data_value(obj: dict[str, Any], key: str, secret: bool) -> str | None:
    if secret:
        if key in (obj.get("data") or {}):
            return base64.b64decode(obj["data"][key]).decode("utf-8", "replace")
        if key in (obj.get("stringData") or {}):
            return str(obj["stringData"][key])
        return None
    if key in (obj.get("data") or {}):
        return str(obj["data"][key])
    if key in (obj.get("binaryData") or {}):
        return base64.b64decode(obj["binaryData"][key]).decode("utf-8", "replace")
    return None


def _all_data(obj: dict[str, Any], secret: bool) -> dict[str, str]:
    keys = list((obj.get("data") or {}).keys()) + list(
        (obj.get("stringData" if secret else "binaryData") or {}).keys()
    )
    out: dict[str, str] = {}
    for k in keys:
        v = _data_value(obj, k, secret)
        if v is not None:
            out[k] = v
    return out


def resolve_env(
    pod: dict[str, Any], container: dict[str, Any], base: dict[str, str], image_env: list[str], lookup: Lookup
) -> dict[str, str]:
    """The container's environment: `base`, then image env, then envFrom, then env (in order).

    Raises ConfigError naming the missing Secret/ConfigMap/key, like the kubelet's
    CreateContainerConfigError message (`secret "x" not found`).
    """
    env = dict(base)
    for item in image_env:
        k, _, v = item.partition("=")
        env[k] = v
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(key)
            if not ref:
                continue
            obj = lookup(kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            for k, v in _all_data(obj, kind == "Secret").items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item.get("name", "")
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        vf = item["valueFrom"] or {}
        if "fieldRef" in vf:
            env[name] = _field(pod, (vf["fieldRef"] or {}).get("fieldPath", ""))
        elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
            secret = "secretKeyRef" in vf
            ref = vf["secretKeyRef" if secret else "configMapKeyRef"] or {}
            kind = "Secret" if secret else "ConfigMap"
            obj = lookup(kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            value = _data_value(obj, ref.get("key", ""), secret)
            if value is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref.get('key', '')} in {kind} {pod['metadata'].get('namespace')}/{ref.get('name')}"
                )
            env[name] = value
        elif "resourceFieldRef" in vf:
            res = (vf["resourceFieldRef"] or {}).get("resource", "")
            section, _, rname = res.partition(".")
            val = ((container.get("resources") or {}).get(section) or {}).get(rname)
            env[name] = str(val) if val is not None else "0"
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom")
    return env
