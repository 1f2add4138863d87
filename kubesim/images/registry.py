"""The registry side of kubesim's image store: who may push and pull, and the build caches.

A real registry can require credentials. kubesim's can too, per prefix of a normalised image
reference: `RegistryPolicy.require(prefix, username, password)` makes every push and pull of a
name under `prefix` need those credentials. The policy is a file in the image store
(`.kubesim-registry.json`), so the builders (separate processes in build pods) and the kubelet see
the same one.

Who presents what, as on a cluster:
* a builder (BuildKit, kaniko) reads the Docker config at `$DOCKER_CONFIG/config.json`
  (`auths[host].auth` = base64 `user:password`, or `username`/`password`), the file a
  `kubernetes.io/dockerconfigjson` Secret mounts;
* the kubelet uses the pod's `imagePullSecrets`, Secrets of that type in the pod's namespace.

Refusals use the words of the real tools: containerd's pusher says `unexpected status from POST
request to https://HOST/v2/REPO/blobs/uploads/: 401 Unauthorized` (what BuildKit and kaniko print
after their own prefix), and the kubelet's pull says `pull access denied, repository does not exist
or may require authorization: authorization failed: no basic auth credentials` without
credentials, or `unexpected status from HEAD request to https://HOST/v2/REPO/manifests/TAG: 401
Unauthorized` with wrong ones.

A pull is checked every time, as if the image were not yet on the node: a pod may land on any
node of a real cluster, and one that never pulled the image needs the credentials.

Build caches (BuildKit's `--export-cache type=registry,ref=REF`, kaniko's `--cache-repo`) are
manifests listing the cache keys of the layers a build exported, stored beside the layers: like a
registry's blobs, they outlive the cluster that wrote them.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubesim.images.names import normalize, split

__all__ = [
    "Credentials",
    "RegistryPolicy",
    "AuthFailure",
    "docker_config_credentials",
    "pull_secret_credentials",
    "push_refusal",
    "pull_refusal",
    "CacheManifests",
]

POLICY_FILE = ".kubesim-registry.json"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


# Credentials presented per registry host.
Presented = dict[str, Credentials]


@dataclass(frozen=True)
class AuthFailure:
    """Why a push or pull was refused: `missing` (no credentials for the host) or `denied`."""

    kind: str
    host: str
    repository: str
    reference: str


def _host_key(key: str) -> str:
    """`https://r.example/v1/` and `r.example` name the same registry host."""
    key = key.strip()
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc
    key = key.split("/", 1)[0]
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


def _parse_auths(config: Any) -> Presented:
    out: Presented = {}
    if not isinstance(config, dict):
        return out
    for key, entry in (config.get("auths") or {}).items():
        if not isinstance(entry, dict):
            continue
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"])).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            username, _, password = decoded.partition(":")
        if username or password:
            out[_host_key(str(key))] = Credentials(username, password)
    return out


def docker_config_credentials(env: dict[str, str] | os._Environ[str], home: str | None = None) -> Presented:
    """The credentials of `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`)."""
    folder = env.get("DOCKER_CONFIG") or os.path.join(home or env.get("HOME", "/root"), ".docker")
    try:
        return _parse_auths(json.loads((Path(folder) / "config.json").read_text()))
    except (OSError, ValueError):
        return {}


def pull_secret_credentials(secrets: list[dict[str, Any]]) -> Presented:
    """The credentials of `kubernetes.io/dockerconfigjson` Secrets (a pod's imagePullSecrets)."""
    out: Presented = {}
    for secret in secrets:
        if secret.get("type") != DOCKERCONFIGJSON:
            continue
        raw = (secret.get("data") or {}).get(".dockerconfigjson")
        try:
            config = json.loads(base64.b64decode(raw).decode()) if raw else None
        except (ValueError, UnicodeDecodeError):
            continue
        for host, creds in _parse_auths(config).items():
            out.setdefault(host, creds)
    return out


class RegistryPolicy:
    """Which prefixes need which credentials; stored in `<image store>/.kubesim-registry.json`."""

    def __init__(self, store_root: Path) -> None:
        self.path = Path(store_root) / POLICY_FILE

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return dict(data.get("prefixes") or {})

    def require(self, prefix: str, username: str, password: str) -> None:
        """Every push and pull of a name under `prefix` needs these credentials from now on."""
        prefixes = self._load()
        prefixes[prefix.rstrip("/")] = {"username": username, "password": password}
        tmp = Path(tempfile.mkstemp(prefix=".registry-", dir=self.path.parent)[1])
        tmp.write_text(json.dumps({"prefixes": prefixes}, indent=1))
        os.chmod(tmp, 0o644)
        tmp.replace(self.path)

    def check(self, ref: str, presented: Presented) -> AuthFailure | None:
        """None when `presented` may push or pull `ref`; else why not."""
        full = normalize(ref)
        wanted = None
        for prefix, creds in sorted(self._load().items(), key=lambda item: -len(item[0])):
            if full == prefix or full.startswith(prefix + "/") or full.startswith(prefix + ":"):
                wanted = Credentials(creds.get("username", ""), creds.get("password", ""))
                break
        if wanted is None:
            return None
        host, repository, suffix = split(full)
        reference = suffix[1:]
        given = presented.get(host)
        if given is None:
            return AuthFailure("missing", host, repository, reference)
        if given != wanted:
            return AuthFailure("denied", host, repository, reference)
        return None


def push_refusal(failure: AuthFailure) -> str:
    """containerd's pusher's words for a push the registry refused."""
    return (
        f"unexpected status from POST request to https://{failure.host}/v2/{failure.repository}"
        "/blobs/uploads/: 401 Unauthorized"
    )


def pull_refusal(failure: AuthFailure) -> str:
    """containerd's resolver's words for a pull the registry refused (after `failed to resolve ...:`)."""
    if failure.kind == "missing":
        return (
            "pull access denied, repository does not exist or may require authorization: "
            "authorization failed: no basic auth credentials"
        )
    return (
        f"unexpected status from HEAD request to https://{failure.host}/v2/{failure.repository}"
        f"/manifests/{failure.reference}: 401 Unauthorized"
    )


class CacheManifests:
    """Exported build caches: a ref (or kaniko cache repository) -> the cache keys it holds."""

    def __init__(self, layers_root: Path) -> None:
        self.root = Path(layers_root) / ".cache-manifests"

    def _path(self, ref: str) -> Path:
        return self.root / urllib.parse.quote(ref, safe="")

    def read(self, ref: str) -> set[str] | None:
        """The keys exported to `ref`, or None when nothing was ever exported there."""
        try:
            return set(json.loads(self._path(ref).read_text())["keys"])
        except (OSError, ValueError, KeyError):
            return None

    def write(self, ref: str, keys: list[str], *, merge: bool = False) -> None:
        """Replaces (BuildKit's export) or extends (kaniko's per-layer pushes) the keys of `ref`."""
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = list(dict.fromkeys(keys))
        if merge:
            wanted = sorted(set(wanted) | (self.read(ref) or set()))
        fd, name = tempfile.mkstemp(prefix=".manifest-", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": wanted}, f)
        os.chmod(name, 0o644)
        os.replace(name, self._path(ref))
