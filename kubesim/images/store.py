"""The node's image store: what a container can be started from.

An image is a folder `<state>/images/<escaped name>/` holding `config.json` (entrypoint, cmd,
env, workdir) and `rootfs/` (the image's own files; the kubelet copies each top-level entry that
is not a system directory of this machine into the pod's folder and bind-mounts it at that
path). Commands otherwise run with this machine's userland (sh, tar, python3...).

Resolution order for a name: images `put` into the store (exact normalised name), then
registered providers (in registration order, first match wins), then the built-in images
`busybox`, `alpine`, `python` (any tag, empty rootfs). A name nothing resolves is an image pull
error for the kubelet (ErrImagePull, then ImagePullBackOff).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubesim.images.names import InvalidReference, matches, normalize

__all__ = ["Image", "ImageConfig", "ImageProvider", "ImageStore", "BUILTIN_IMAGES", "InvalidReference"]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a kubelet uses.

    `env` entries are `NAME=value`; `workdir` "" means "/". Serialised as config.json with keys
    `entrypoint`, `cmd`, `env`, `workdir` (OCI-style `Entrypoint`, `Cmd`, `Env`, `WorkingDir`,
    optionally nested under `config`, are accepted when reading).
    """

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"entrypoint": self.entrypoint, "cmd": self.cmd, "env": self.env, "workdir": self.workdir}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ImageConfig":
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
        )


@dataclass(frozen=True)
class Image:
    """A resolved image: its normalised name, config and rootfs folder (None: empty rootfs)."""

    name: str
    config: ImageConfig
    rootfs: Path | None = None


# Called with the normalised name; returns the image or None (not this provider's).
ImageProvider = Callable[[str], Image | None]

# Built-in images: their commands run with this machine's userland.
BUILTIN_IMAGES: dict[str, ImageConfig] = {
    "busybox": ImageConfig(cmd=["sh"]),
    "alpine": ImageConfig(cmd=["/bin/sh"]),
    "python": ImageConfig(cmd=["python3"]),
}


class ImageStore:
    """Images on this node. Thread-safe; `put` is atomic (a reader sees the old or the new image)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._providers: list[tuple[str, ImageProvider]] = []
        for short, config in BUILTIN_IMAGES.items():
            self._providers.append((f"{short}:*", _fixed(config)))

    def _folder(self, name: str) -> Path:
        return self.root / urllib.parse.quote(normalize(name), safe="")

    def put(self, name: str, config: ImageConfig | dict[str, Any], rootfs_dir: str | os.PathLike[str] | None = None) -> Image:
        """Store (or replace) image `name` with `config` and a copy of `rootfs_dir`.

        Raises InvalidReference for a bad name and FileNotFoundError for a missing rootfs_dir.
        """
        cfg = config if isinstance(config, ImageConfig) else ImageConfig.from_json(config)
        target = self._folder(name)
        tmp = Path(tempfile.mkdtemp(prefix=".put-", dir=self.root))
        try:
            if rootfs_dir is not None:
                shutil.copytree(rootfs_dir, tmp / "rootfs", symlinks=True)
            else:
                (tmp / "rootfs").mkdir()
            (tmp / "config.json").write_text(json.dumps({"name": normalize(name), **cfg.to_json()}, indent=1))
            with self._lock:
                old = None
                if target.exists():
                    old = target.with_name(target.name + ".old")
                    shutil.rmtree(old, ignore_errors=True)
                    target.rename(old)
                tmp.rename(target)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Image(normalize(name), cfg, target / "rootfs")

    def register_provider(self, pattern: str, provider: ImageProvider) -> None:
        """Resolve names matching `pattern` (e.g. `moby/buildkit:*`) with `provider`.

        Providers registered later are consulted before the built-ins but after earlier ones.
        """
        with self._lock:
            self._providers.insert(len(self._providers) - len(BUILTIN_IMAGES), (pattern, provider))

    def get(self, name: str) -> Image | None:
        """The image `name` resolves to, or None (the kubelet reports ErrImagePull).

        Raises InvalidReference when `name` is not an image reference at all.
        """
        ref = normalize(name)
        folder = self._folder(ref)
        cfg_path = folder / "config.json"
        if cfg_path.is_file():
            cfg = ImageConfig.from_json(json.loads(cfg_path.read_text()))
            return Image(ref, cfg, folder / "rootfs")
        with self._lock:
            providers = list(self._providers)
        for pattern, provider in providers:
            if matches(pattern, ref):
                image = provider(ref)
                if image is not None:
                    return image
        return None

    def list(self) -> list[str]:
        """Normalised names of the images `put` into this store."""
        out = []
        for p in sorted(self.root.iterdir()):
            if (p / "config.json").is_file():
                out.append(urllib.parse.unquote(p.name))
        return out


def _fixed(config: ImageConfig) -> ImageProvider:
    def provide(ref: str) -> Image:
        return Image(ref, config, None)

    return provide
