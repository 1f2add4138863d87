"""Writing the kubeconfig a kubesim server is reached with.

Context `kubesim` uses the bearer token (or no credentials when none is configured); when a client
certificate exists, context `kubesim-cert` uses it instead. Written atomically, mode 0600.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["build", "write"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build(
    url: str,
    *,
    token: str | None = None,
    ca_pem: bytes | None = None,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    namespace: str = "default",
    name: str = "kubesim",
) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    user: dict[str, Any] = {"token": token} if token else {}
    users = [{"name": name, "user": user}]
    contexts = [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}]
    if client_cert_pem is not None and client_key_pem is not None:
        users.append(
            {
                "name": f"{name}-cert",
                "user": {
                    "client-certificate-data": _b64(client_cert_pem),
                    "client-key-data": _b64(client_key_pem),
                },
            }
        )
        contexts.append(
            {
                "name": f"{name}-cert",
                "context": {"cluster": name, "user": f"{name}-cert", "namespace": namespace},
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": users,
        "contexts": contexts,
        "current-context": name,
    }


def write(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, path)
