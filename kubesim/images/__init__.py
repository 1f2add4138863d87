"""Images of the kubesim node: a store of image folders plus pluggable providers.

Usage (the registration API other parts of kubesim plug into):

    from kubesim.images import ImageStore, ImageConfig, Image

    store = ImageStore(state_dir / "images")          # the kubelet owns one (kubelet.images)
    # 1. Put a concrete image: config + a copy of a rootfs folder (atomic replace).
    store.put("example.com/team/app:v1",
              ImageConfig(entrypoint=["python3", "-m", "app"], cmd=[], env=["A=1"], workdir="/app"),
              rootfs_dir="/path/to/rootfs")           # its /app is in each container of it
    # 2. Register a provider for a family of names, resolved lazily at container start:
    store.register_provider("moby/buildkit:*",
                            lambda ref: Image(ref, ImageConfig(entrypoint=["my-builder"]), None))
    store.get("busybox")                              # -> Image | None (None: ErrImagePull)

Names are normalised like a registry client does (`busybox` = `docker.io/library/busybox:latest`;
patterns without a tag match any tag). Resolution order: put images, then providers in
registration order, then built-ins `busybox`, `alpine`, `python` (any tag, empty rootfs, commands
run with this machine's userland). An image's rootfs entries other than system directories
(bin, etc, usr, ...) are mounted at `/<entry>` in each container instance's own mount namespace,
from an overlay of the image's layers with a fresh upper directory (kubesim/kubelet/containerfs.py).
"""

from kubesim.images.names import InvalidReference, matches, normalize
from kubesim.images.store import BUILTIN_IMAGES, Image, ImageConfig, ImageProvider, ImageStore

__all__ = [
    "BUILTIN_IMAGES",
    "Image",
    "ImageConfig",
    "ImageProvider",
    "ImageStore",
    "InvalidReference",
    "matches",
    "normalize",
]
