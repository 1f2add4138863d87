"""pytest fixtures for end-to-end tests: the local cluster (kubesim + the in-cluster store + controller).

    def test_launch(local_stack, stack_namespace, daemon_process, tmp_path):
        env = local_stack.env(stack_namespace)      # KUBECONFIG for nbctl / the daemon's client
        ...

`local_stack` is session-scoped: one cluster serves the whole run, and each test isolates itself
with its own namespace (`stack_namespace`, created fresh and deleted after the test), so build
caches, Notebooks and pods never leak between tests. `stack_factory` starts extra clusters with
other options (e.g. GPUs) for the tests that need them.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import Stack, down, up

__all__ = [
    "LocalStack",
    "local_stack",
    "stack_factory",
    "stack_namespace",
    "make_namespace",
    "jupyter_image",
    "push_image",
    "JUPYTER_IMAGE",
]

# A team's prebuilt notebook image: Python with a Jupyter server, as pulled from their registry.
JUPYTER_IMAGE = "registry.example/nbd-tests/jupyter-server:1"
_JUPYTER_DOCKERFILE = (
    "FROM python:3.11-slim\nRUN --mount=type=cache,target=/root/.cache/pip pip install jupyter_server\n"
)

_counter = itertools.count(1)


@dataclasses.dataclass
class LocalStack:
    stack: Stack

    @property
    def kubeconfig(self) -> str:
        return self.stack.kubeconfig

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    def env(self, namespace: str | None = None) -> dict[str, str]:
        """Environment for clients: KUBECONFIG of this cluster (and nothing else changed)."""
        return {"KUBECONFIG": self.kubeconfig}

    def core(self) -> Any:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=self.kubeconfig)
        return client.CoreV1Api(api)

    def batch(self) -> Any:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=self.kubeconfig)
        return client.BatchV1Api(api)

    def custom(self) -> Any:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=self.kubeconfig)
        return client.CustomObjectsApi(api)

    def log(self, part: str) -> str:
        try:
            return Path(self.stack.logs[part]).read_text(errors="replace")
        except (KeyError, OSError):
            return ""


def _start(**options: Any) -> tuple[LocalStack, str]:
    state = tempfile.mkdtemp(prefix="nbd-stack-", dir="/tmp")
    return LocalStack(up(state, **options)), state


# The shared cluster's controller asks an idle-stopping notebook's Jupyter every second (60 s by
# default), so idle stops take seconds in the tests that set one.
SHARED_CONTROLLER_ENV = {"NBD_IDLE_CHECK_SECONDS": "1"}


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    stack, state = _start(controller_extra_env=SHARED_CONTROLLER_ENV)
    yield stack
    down(state)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def stack_factory() -> Iterator[Callable[..., LocalStack]]:
    started: list[str] = []

    def start(**options: Any) -> LocalStack:
        stack, state = _start(**options)
        started.append(state)
        return stack

    yield start
    for state in started:
        down(state)
        shutil.rmtree(state, ignore_errors=True)


def make_namespace(stack: LocalStack, prefix: str = "t") -> str:
    name = f"{prefix}-{os.getpid()}-{next(_counter)}"
    stack.core().create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def stack_namespace(local_stack: LocalStack) -> Iterator[str]:
    name = make_namespace(local_stack)
    yield name
    try:
        local_stack.core().delete_namespace(name)
    except Exception:
        pass


def push_image(stack: LocalStack, ref: str, dockerfile: str) -> str:
    """Builds `dockerfile` into the stack's node image store under `ref`, as a registry push would.

    The build runs in this process with kubesim's builder against the node's store on disk (the
    node reads images from there), sharing the run's layer store, so it is a cache hit after once.
    """
    import io

    from kubesim.images import ImageStore
    from kubesim.images.buildkit import build

    store = ImageStore(Path(stack.stack.state_dir) / "kubesim" / "node" / "images")
    context = Path(tempfile.mkdtemp(prefix="nbd-image-"))
    try:
        (context / "Dockerfile").write_text(dockerfile)
        out = io.StringIO()
        if build(context=context, dockerfile=context / "Dockerfile", target=ref, store=store, out=out) != 0:
            raise AssertionError(f"building the test image {ref} failed:\n{out.getvalue()[-3000:]}")
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return ref


@pytest.fixture(scope="session")
def jupyter_image(local_stack: LocalStack) -> str:
    """The prebuilt Jupyter image in the session's local cluster (python:* has no Jupyter)."""
    return push_image(local_stack, JUPYTER_IMAGE, _JUPYTER_DOCKERFILE)
