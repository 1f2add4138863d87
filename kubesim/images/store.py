"""The node's image store: what a container can be started from.

An image is a folder `<state>/images/<escaped name>/` holding `config.json` (entrypoint, cmd,
env, workdir, and the ids of its layers, bottom first) and `rootfs/`: the merged view of its layers
as hard links into the layer store (kubesim/images/layers.py), never written. The kubelet mounts
each top-level entry of the image that is not a system directory of this machine at that path in
every container instance, from an overlay of the image's layers (kubesim/kubelet/containerfs.py).
Commands otherwise run with this machine's userland (sh, tar...).

Resolution order for a name: images `put` into the store (exact normalised name), then
registered providers (in registration order, first match wins), then the built-in images
`busybox`, `alpine` (empty rootfs) and `python` (any tag: one layer holding a virtual environment
at `/kubesim-python`, made from this machine's interpreter, first on the image's PATH; see
kubesim/images/python.py). A name nothing resolves is an image pull error for the kubelet
(ErrImagePull, then ImagePullBackOff).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubesim.images.image import Image, ImageConfig
from kubesim.images.layers import LAYER_DIR_ENV, LayerStore, cache_key, content_digest
from kubesim.images.names import InvalidReference, matches, normalize
from kubesim.images.python import base_layer, python_config, python_config_fallback
from kubesim.images.rootfs import StepUnavailable

__all__ = ["Image", "ImageConfig", "ImageProvider", "ImageStore", "BUILTIN_IMAGES", "InvalidReference"]


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

    def __init__(self, root: Path, layers: Path | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # A shared layer store (e.g. for several kubesim nodes or test clusters) may live elsewhere,
        # on the same filesystem (images are hard links into it).
        layer_root = layers or (Path(os.environ[LAYER_DIR_ENV]) if os.environ.get(LAYER_DIR_ENV) else None)
        self.layers = LayerStore(layer_root or self.root / ".layers")
        self._lock = threading.Lock()
        self._providers: list[tuple[str, ImageProvider]] = []
        for short, config in BUILTIN_IMAGES.items():
            provider = self._python if short == "python" else _fixed(config)
            self._providers.append((f"{short}:*", provider))

    def _python(self, ref: str) -> Image | None:
        """The image `ref` (a `python:*` name) resolves to, stored under its name on first use."""
        try:
            layer_id = base_layer(self.layers)
        except (StepUnavailable, OSError):
            return Image(ref, python_config_fallback(), None)
        return self.put_layers(ref, python_config(), [layer_id])

    def _folder(self, name: str) -> Path:
        return self.root / urllib.parse.quote(normalize(name), safe="")

    def put(
        self,
        name: str,
        config: ImageConfig | dict[str, Any],
        rootfs_dir: str | os.PathLike[str] | None = None,
    ) -> Image:
        """Store (or replace) image `name` with `config` and a copy of `rootfs_dir`.

        Raises InvalidReference for a bad name and FileNotFoundError for a missing rootfs_dir.
        """
        cfg = config if isinstance(config, ImageConfig) else ImageConfig.from_json(config)
        normalize(name)
        layers: list[str] = []
        if rootfs_dir is not None:
            upper = self.layers.scratch(".put-")
            try:
                shutil.copytree(rootfs_dir, upper / "fs", symlinks=True)
                layer_id = cache_key("put", content_digest([("", upper / "fs")]))
                self.layers.commit(upper / "fs", layer_id, f"put {name}")
            finally:
                shutil.rmtree(upper, ignore_errors=True)
            layers.append(layer_id)
        return self.put_layers(name, cfg, layers)

    def put_layers(self, name: str, config: ImageConfig, layers: list[str] | tuple[str, ...]) -> Image:
        """Store (or replace) image `name` made of `layers` (ids in `self.layers`, bottom first)."""
        cfg = config
        target = self._folder(name)
        tmp = Path(tempfile.mkdtemp(prefix=".put-", dir=self.root))
        try:
            self.layers.flatten(list(layers), tmp / "rootfs")
            (tmp / "config.json").write_text(
                json.dumps({"name": normalize(name), **cfg.to_json(), "layers": list(layers)}, indent=1)
            )
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
        return Image(normalize(name), cfg, target / "rootfs", tuple(layers))

    def delete(self, name: str) -> bool:
        """Removes image `name` (a registry's cleanup policy); False when it was not stored.

        Pods already running keep their copy; a new pod of the image fails its pull with ErrImagePull.
        The layers stay in the layer store, as a registry keeps blobs until garbage collection.
        """
        target = self._folder(name)
        with self._lock:
            if not (target / "config.json").is_file():
                return False
            gone = target.with_name(target.name + ".deleted")
            shutil.rmtree(gone, ignore_errors=True)
            target.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
        return True

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
            data = json.loads(cfg_path.read_text())
            cfg = ImageConfig.from_json(data)
            return Image(ref, cfg, folder / "rootfs", tuple(str(x) for x in data.get("layers") or ()))
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
            if not p.name.startswith(".") and (p / "config.json").is_file():
                out.append(urllib.parse.unquote(p.name))
        return out


def _fixed(config: ImageConfig) -> ImageProvider:
    def provide(ref: str) -> Image:
        return Image(ref, config, None)

    return provide
