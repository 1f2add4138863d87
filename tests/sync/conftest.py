"""Fixtures of the sync tests: a session between two temporary directories, the "remote" one
served by the real agent running as a local child process (the local-subprocess transport)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from polling import until  # noqa: F401  (the sync tests import it from here)

from nbd.sync import SyncEvent, SyncOptions, SyncSession, local_process_factory
from nbd.sync.remote import TransportFactory
from nbd.sync.snapshot import Snapshot


@dataclass
class Pair:
    local: Path
    remote: Path
    state: Path
    cache: Path
    events: list[SyncEvent] = field(default_factory=list)

    def options(self, **kw: Any) -> SyncOptions:
        kw.setdefault("remote_root", str(self.remote))
        kw.setdefault("agent_cache_dir", str(self.cache))
        return SyncOptions(**kw)

    @contextlib.asynccontextmanager
    async def session(
        self,
        factory: TransportFactory = local_process_factory,
        context_files: Snapshot | None = None,
        **kw: Any,
    ) -> AsyncIterator[SyncSession]:
        s = SyncSession(
            str(self.local),
            factory,
            str(self.state),
            self.options(**kw),
            self.events.append,
            context_files=context_files,
        )
        await s.start()
        try:
            yield s
        finally:
            await s.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    p = Pair(tmp_path / "local", tmp_path / "remote", tmp_path / "state" / "sync.json", tmp_path / "cache")
    for d in (p.local, p.remote, p.cache):
        d.mkdir()
    return p


def tree(root: Path) -> dict[str, Any]:
    """A comparable picture of a directory: relative path → bytes, "dir", ("link", target), and
    the executable bit of files."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (full.read_bytes(), os.access(full, os.X_OK))
    return out


def oldest_python() -> str | None:
    """A Python as old as the agent promises to run on (3.8, else 3.9), when this machine has one."""
    import glob

    for version in ("3.8", "3.9"):
        for path in sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python3")) + [
            f"/usr/bin/python{version}"
        ]:
            if os.access(path, os.X_OK):
                return path
    return None


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def parse(source: str | bytes, **kw: object) -> ast.Module:
    """ast.parse, retried: CPython 3.11 can raise a spurious "AST constructor recursion depth
    mismatch" SystemError after a test changed the recursion limit (as hypothesis does)."""
    for _ in range(3):
        try:
            return ast.parse(source, **kw)  # type: ignore[call-overload, no-any-return]
        except SystemError:
            continue
    return ast.parse(source, **kw)  # type: ignore[call-overload, no-any-return]


def recording_factory(sent: list[bytes]) -> TransportFactory:
    """A local agent process whose every write to it is also appended to `sent`."""

    async def factory(argv: list[str]) -> Any:
        t = await local_process_factory(argv)
        real = t.send

        async def send(data: bytes) -> None:
            sent.append(data)
            await real(data)

        t.send = send  # type: ignore[method-assign]
        return t

    return factory
