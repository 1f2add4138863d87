"""An image as the kubelet sees it: its name, the parts of its config it uses, its layers.

Plain data, below the store and the image makers, so each of them builds and returns images
without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Image", "ImageConfig"]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a kubelet uses.

    `env` entries are `NAME=value`; `workdir` "" means "/"; `user` is the Dockerfile's last `USER`
    ("" means root). Serialised as config.json with keys `entrypoint`, `cmd`, `env`, `workdir`,
    `user` (OCI-style `Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`, optionally nested under
    `config`, are accepted when reading).
    """

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    # The image's tool makes a user namespace of its own in which it is root (rootless BuildKit's
    # rootlesskit): kubesim runs it as root after the runAsNonRoot checks. Not serialised.
    userns_root: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
            "env": self.env,
            "workdir": self.workdir,
            "user": self.user,
        }

    def env_value(self, key: str, default: str = "") -> str:
        for item in self.env:
            name, _, value = item.partition("=")
            if name == key:
                return value
        return default

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageConfig:
        d = data.get("config", data) if isinstance(data.get("config"), dict) else data

        def pick(*keys: str) -> Any:
            for k in keys:
                if d.get(k) is not None:
                    return d[k]
            return None

        return cls(
            entrypoint=list(pick("entrypoint", "Entrypoint") or []),
            cmd=list(pick("cmd", "Cmd") or []),
            env=list(pick("env", "Env") or []),
            workdir=str(pick("workdir", "WorkingDir") or ""),
            user=str(pick("user", "User") or ""),
        )


@dataclass(frozen=True)
class Image:
    """A resolved image: its normalised name, config, rootfs folder (None: empty) and layer ids."""

    name: str
    config: ImageConfig
    rootfs: Path | None = None
    layers: tuple[str, ...] = ()
