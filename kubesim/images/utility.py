"""The utility image of nbd's build Jobs, for kubesim.

The build Job's init container runs `python3 -c <nbd_controller/fetch.py>`: any image with python3
will do, and in kubesim every such image runs this machine's python3. This registers the names an
admin may configure as NBD_UTILITY_IMAGE beyond the built-in `python:*`/`busybox:*`/`alpine:*`:
`nbd.dev/utility:*` and `*/nbd/utility:*`-style names are served by the host's userland (sh, tar,
python3), with no rootfs of their own.
"""

from __future__ import annotations

from kubesim.images.store import Image, ImageConfig, ImageStore

__all__ = ["register", "UTILITY_PATTERNS"]

UTILITY_PATTERNS = ("nbd.dev/utility:*", "ghcr.io/nbd-dev/utility:*")


def register(store: ImageStore) -> None:
    """Registers the utility image names into `store`."""

    def utility(ref: str) -> Image:
        return Image(ref, ImageConfig(cmd=["sh"], workdir="/"), None)

    for pattern in UTILITY_PATTERNS:
        store.register_provider(pattern, utility)
