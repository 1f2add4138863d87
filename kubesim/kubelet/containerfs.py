"""A container instance's own filesystem: its image as it was built, again at every start.

A real runtime starts each container instance from its image: what a container wrote outside its
volumes is gone when it is restarted (an OOM kill, a failed liveness probe, a crash), and only the
pod's volumes outlive the instance. A kubesim that kept the writes would hide every bug of a
program that stores what it must keep in its container's filesystem.

kubesim has no chroot images (see `kubesim.images.rootfs`): a container sees this machine's
userland with its image's own top-level entries (`/content`, `/kubesim-python`, ...; never the
system directories) mounted over it. For each instance:

* with namespaces, the image's layers (immutable, in the layer store) are the lower directories
  of an overlay mount with a fresh upper directory, made in the instance's own mount namespace;
  each entry is bind-mounted from it. Starting an instance costs a mount, not a copy, and a write
  lands in the upper directory, which is removed with the instance;
* without namespaces (kubesim not root), the entries are copied into the instance's folder,
  where working directories are mapped (nothing can be mounted there);
* a working directory that is neither in the image, in a volume nor a non-empty directory of
  this machine is a fresh empty folder of the instance (the runtime creates it in the container);
* the container's volumeMounts come first: a volume at `/content` hides the image's `/content`.

Instance folders are `<pod folder>/containers/<container>/<instance>/`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubesim.images import Image
from kubesim.images.layers import LayerStore
from kubesim.images.rootfs import SYSTEM_DIRS
from kubesim.kubelet.namespaces import Mount, Overlay

__all__ = ["InstanceFS", "effective_workdir", "host_path", "instance_fs", "private_workdir"]


@dataclass(frozen=True)
class InstanceFS:
    """How one container instance's filesystem is made, and where its paths are on this machine.

    Attributes:
        dir: The instance's folder (removed when the instance ends).
        overlay: The overlay of the image's layers (None: no image entries, or no namespaces).
        mounts: What the instance's mount namespace gets, volumes included.
        view: Container path → host path of the instance's files as they were at its start: the
            image's entries map to the image's flattened rootfs (or the copies), volumes to their
            folders (for start checks, and as the working directory without namespaces).
    """

    dir: Path
    overlay: Overlay | None
    mounts: list[Mount]
    view: list[Mount]


def effective_workdir(container: dict[str, Any], image: Image | None) -> str:
    return container.get("workingDir") or (image.config.workdir if image else "") or "/"


def _entries(image: Image | None) -> list[str]:
    """The image's top-level entries a container gets (the rest is this machine's)."""
    if image is None or image.rootfs is None or not image.rootfs.is_dir():
        return []
    return [e for e in sorted(os.listdir(image.rootfs)) if e not in SYSTEM_DIRS]


def _lower(image: Image, layers: LayerStore) -> tuple[str, tuple[str, ...]]:
    """The overlay's (base, lower directories): the image's layers, else its flattened rootfs."""
    assert image.rootfs is not None
    if image.layers and all(layers.exists(layer) for layer in image.layers):
        # Whiteouts and opaque directories in the layers are overlayfs's own format.
        return str(layers.root), tuple(
            os.path.relpath(layers.fs(layer), layers.root) for layer in reversed(image.layers)
        )
    return str(image.rootfs), (".",)


def instance_fs(
    image: Image | None,
    container: dict[str, Any],
    volumes: list[Mount],
    folder: Path,
    layers: LayerStore,
    *,
    isolated: bool,
) -> InstanceFS:
    """Prepares the folder of a new container instance and says how its filesystem is mounted.

    `volumes` are the container's volume mounts (`kubesim.kubelet.volumes.volume_mounts`).
    `folder` must not hold an earlier instance's files: each instance starts from its image.
    Raises OSError when the folder cannot be made.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounts: dict[str, Mount] = {m.target: m for m in volumes}
    view: dict[str, Mount] = dict(mounts)
    entries = [e for e in _entries(image) if "/" + e not in mounts]
    overlay: Overlay | None = None
    if entries and image is not None and image.rootfs is not None:
        if isolated:
            base, lower = _lower(image, layers)
            merged = folder / "merged"
            for d in ("upper", "work", "merged"):
                (folder / d).mkdir(exist_ok=True)
            overlay = Overlay(base, lower, str(folder / "upper"), str(folder / "work"), str(merged))
            for entry in entries:
                src = image.rootfs / entry
                is_file = not src.is_dir()
                mounts["/" + entry] = Mount(str(merged / entry), "/" + entry, False, is_file)
                view["/" + entry] = Mount(str(src), "/" + entry, False, is_file)
        else:
            for entry in entries:
                src, dst = image.rootfs / entry, folder / "fs" / entry
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir() and not src.is_symlink():
                    shutil.copytree(src, dst, symlinks=True)
                else:
                    shutil.copy2(src, dst, follow_symlinks=False)
                mounts["/" + entry] = view["/" + entry] = Mount(
                    str(dst), "/" + entry, False, not dst.is_dir()
                )
    wd = os.path.normpath(effective_workdir(container, image))
    covered = any(wd == t or wd.startswith(t.rstrip("/") + "/") for t in mounts)
    if wd != "/" and not covered and private_workdir(wd):
        dst = folder / "fs" / wd.lstrip("/")
        dst.mkdir(parents=True, exist_ok=True)
        mounts[wd] = view[wd] = Mount(str(dst), wd)
    # A volume below a folder the image does not have (a claim at /content/outputs in an image
    # without /content): a runtime makes the mount point inside the container's own root. Here
    # the container's root is this machine's, so the folder above the mount point gets a private
    # folder of the instance first; otherwise `mkdir -p` of the mount point would land on the host
    # and be seen by every later container.
    for target in [t for t in list(mounts) if t.count("/") > 1]:
        top = "/" + target.strip("/").split("/")[0]
        if top in mounts or top.lstrip("/") in SYSTEM_DIRS or not private_workdir(top):
            continue
        dst = folder / "fs" / top.lstrip("/")
        dst.mkdir(parents=True, exist_ok=True)
        mounts[top] = view[top] = Mount(str(dst), top)
    return InstanceFS(folder, overlay, list(mounts.values()), list(view.values()))


def private_workdir(path: str) -> bool:
    """Whether a working directory gets a private folder of the container instance.

    Yes when it does not exist on the host, or when it is outside the system directories and
    empty on the host (an empty `/content` is a mount point an earlier pod left, not data).
    A non-empty host directory (e.g. a checkout) is used as it is.
    """
    if not os.path.exists(path):
        return True
    top = path.strip("/").split("/")[0]
    if top in SYSTEM_DIRS:
        return False
    try:
        return os.path.isdir(path) and not os.listdir(path)
    except OSError:
        return False


def host_path(container_path: str, mounts: list[Mount]) -> str:
    """Where `container_path` lives on the host given the container's mounts (or view)."""
    p = os.path.normpath(container_path)
    best: Mount | None = None
    for m in mounts:
        t = m.target.rstrip("/") or "/"
        if p == t or p.startswith(t + "/"):
            if best is None or len(t) > len(best.target):
                best = m
    if best is None:
        return p
    rest = p[len(best.target.rstrip("/")) :].lstrip("/")
    return os.path.join(best.source, rest) if rest else best.source
