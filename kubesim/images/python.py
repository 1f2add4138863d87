"""The built-in `python:*` images: a Python environment of their own, made from this machine's.

A real `python:3.11-slim` carries its interpreter and an empty site-packages; what a Dockerfile
`pip install`s lands in that image alone. kubesim cannot ship other interpreters, so the image's
one layer is a virtual environment at `/kubesim-python`, created (with pip, through ensurepip,
offline) from the base interpreter kubesim itself runs on, and first on the image's PATH. Every
image built `FROM python:*` therefore installs into its own copy of that environment: packages
of one image are visible neither to another image nor to the host, and a pod started from the
image runs its `python3`, `pip` and console scripts (`jupyter`, ...).

The layer is made once per layer store and interpreter, in a mount namespace where the layer's
directory is mounted at `/kubesim-python`, so the environment's scripts name their real path.
Without root (no mount namespaces), `python:*` falls back to an empty image that runs this
machine's `python3`, as kubesim did before; builds that RUN anything then fail saying why.
"""

from __future__ import annotations

import fcntl
import os
import sys

from kubesim.images.image import ImageConfig
from kubesim.images.layers import LayerStore, cache_key
from kubesim.images.rootfs import Step, StepUnavailable, run_step

__all__ = ["ENV_DIR", "base_layer", "python_config", "python_config_fallback"]

ENV_DIR = "/kubesim-python"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _open_to_everyone(path: str) -> bool:
    """Whether any user can run `path`: it and every folder above it are world-executable.

    A container that runs as a non-root user (a Dockerfile `USER`, `runAsUser`) must reach the
    environment's interpreter, as it reaches `/usr/local/bin/python3` in a real image.
    """
    try:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            if not os.stat(parent).st_mode & 0o001:
                return False
            parent = os.path.dirname(parent)
    except OSError:
        return False
    return True


def _base_interpreter() -> str:
    """The interpreter a virtual environment is made from (not kubesim's own venv).

    kubesim's own interpreter, unless a non-root user could not run it (one under a private
    home such as /root): then this machine's system interpreter of the same minor version."""
    base = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    if _open_to_everyone(base):
        return base
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (f"/usr/local/bin/{minor}", f"/usr/bin/{minor}"):
        real = os.path.realpath(candidate)
        if os.path.isfile(real) and _open_to_everyone(real):
            return real
    return base


def python_config() -> ImageConfig:
    version = ".".join(str(v) for v in sys.version_info[:3])
    return ImageConfig(
        cmd=["python3"],
        env=[
            f"PATH={ENV_DIR}/bin:{SYSTEM_PATH}",
            "LANG=C.UTF-8",
            f"PYTHON_VERSION={version}",
        ],
    )


def base_layer(layers: LayerStore) -> str:
    """The id of the layer holding the environment, made on first use (raises StepUnavailable)."""
    interpreter = _base_interpreter()
    layer_id = cache_key("python-venv", interpreter, sys.version)
    if layers.exists(layer_id):
        return layer_id
    with open(layers.root / ".python-base.lock", "w") as lock:
        # One maker at a time, across threads and processes sharing the layer store.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if layers.exists(layer_id):
            return layer_id
        upper = layers.scratch(".python-")
        (upper / ENV_DIR.lstrip("/")).mkdir()
        lines: list[str] = []
        code = run_step(
            layers, Step(argv=[interpreter, "-m", "venv", ENV_DIR], lower=[], upper=upper), lines.append
        )
        if code != 0:
            raise StepUnavailable(f"making the python base layer failed: {' / '.join(lines[-5:])}")
        layers.commit(upper, layer_id, f"python -m venv {ENV_DIR} ({interpreter})")
    return layer_id


def python_config_fallback() -> ImageConfig:
    return ImageConfig(cmd=["python3"])
