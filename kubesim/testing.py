"""pytest plugin: a running kubesim for tests (`pytest_plugins = ["kubesim.testing"]`).

Fixtures:
- `kubesim_factory` (function scope): `kubesim_factory(tls=False, token=..., gpus=0, kubelet=True,
  history_size=None, bookmark_interval=None, extra_tokens={}, forbidden=[], extra_args=[])` starts a
  kubesim subprocess (`python -m kubesim serve --port 0 ...`) and returns a `KubesimServer`; every
  server it started is stopped at teardown.
- `kubesim_server` (function scope): `kubesim_factory()` with defaults.
- `kubesim_session` (session scope): one default server shared by the session (do not break it).
- `kubesim_inprocess` (function scope): a `Cluster` running on a background thread's event loop in
  this process (no subprocess; `.cluster`, `.store` available); same attributes otherwise.

A `KubesimServer` has `.url`, `.kubeconfig` (Path), `.token`, `.admin` (`KubesimAdmin`),
`.state_dir`, `.ca_file`, `.stop()`, and helpers `.kubectl(*args)` (real kubectl with this
kubeconfig and a private `--cache-dir`) and `.api_client()` (a `kubernetes.client.ApiClient`).

The kubeconfig's token authenticates as user `kubesim-admin` (so `server.admin.forbid("kubesim-admin",
"ns")` makes the kubeconfig itself forbidden in "ns"); extra tokens as the user given with them.
Plain-HTTP servers accept anonymous requests as well as the token (kubectl never sends a bearer
token over plain HTTP); TLS servers require the token or the client certificate
(kubeconfig context `kubesim-cert`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubesim.running import KubesimServer, start_inprocess, start_kubesim, wait_ready

__all__ = ["KubesimServer", "start_kubesim", "start_inprocess", "wait_ready"]


@pytest.fixture
def kubesim_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., KubesimServer]]:
    started: list[KubesimServer] = []

    def factory(**options: Any) -> KubesimServer:
        server = start_kubesim(tmp_path_factory.mktemp("kubesim"), **options)
        started.append(server)
        return server

    yield factory
    for s in reversed(started):
        s.stop()


@pytest.fixture
def kubesim_server(kubesim_factory: Callable[..., KubesimServer]) -> KubesimServer:
    return kubesim_factory()


@pytest.fixture(scope="session")
def kubesim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("kubesim-session"))
    yield server
    server.stop()


@pytest.fixture
def kubesim_inprocess(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_inprocess(tmp_path_factory.mktemp("kubesim-inproc"))
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("KUBESIM_TESTING", "1")
