"""Fixtures of the kube tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The forward tests' fake API server doubles as the kube layer's unit-level server.
sys.path.insert(0, str(Path(__file__).parent.parent / "forward"))
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
