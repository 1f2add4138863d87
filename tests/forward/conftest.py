"""Fixtures of the forward tests: the in-process fake API server and a client for it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeapi import FakeApi  # noqa: E402

from nbd.kube import KubeClient, load_target  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def kube(fake: FakeApi, tmp_path: Path) -> AsyncIterator[KubeClient]:
    target = await load_target(str(fake.kubeconfig(tmp_path)), None, None)
    client = KubeClient(target)
    try:
        yield client
    finally:
        await client.aclose()
