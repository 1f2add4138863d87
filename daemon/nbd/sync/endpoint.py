"""What the session needs from one side of a sync, whichever side it is.

The local directory (`LocalEndpoint`) and the pod's directory served by the agent
(`RemoteEndpoint`) implement the same `Endpoint` protocol, so the applier moves content between
them without knowing which is which. Both speak the agent's wire forms for entries and operations,
converted here to the core's `Entry`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbd.errors import FailedPrecondition
from nbd.status import Problem, from_epoch
from nbd.sync.snapshot import Entry

__all__ = [
    "Endpoint",
    "ScanResult",
    "PutItem",
    "SyncRefused",
    "entry_from_wire",
    "expected_wire",
    "ChangeCallback",
]

# Called with changed relative paths, or None meaning "rescan everything".
ChangeCallback = Callable[[list[str] | None], None]


class SyncRefused(FailedPrecondition):
    """One path could not be changed (it changed meanwhile, a path was unsafe, an I/O error)."""

    default_reason = "SyncRefused"


@dataclass
class ScanResult:
    """A scan of a whole side (`paths` None) or of some subtrees (`absent` lists vanished paths)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rules: dict[str, str] = field(default_factory=dict)
    # Files left out for being above the size limit: path -> size in bytes.
    large: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PutItem:
    """A small file written in one piece: `path` must hold `expected` before, `new` after."""

    path: str
    expected: Entry | None
    new: Entry
    data: bytes


def entry_from_wire(w: list[Any]) -> tuple[str, Entry]:
    """[path, kind, size, executable, digest, target] → (path, Entry)."""
    path, kind, size, executable, digest, target = w
    if kind not in ("file", "dir", "symlink"):
        raise ValueError(f"unknown entry kind {kind!r}")
    return str(path), Entry(kind, str(digest), int(size), bool(executable), str(target))


def expected_wire(entry: Entry | None) -> list[Any] | None:
    """The form the agent's `expect` checks: [kind, digest, executable, target] or None."""
    if entry is None:
        return None
    return [entry.kind, entry.digest, entry.executable, entry.target]


def scan_from_wire(res: dict[str, Any], now: float) -> ScanResult:
    out = ScanResult()
    intern = sys.intern  # both sides' snapshots and the ancestor share one string per path
    for w in res.get("entries", []):
        path, entry = entry_from_wire(w)
        out.entries[intern(path)] = entry
    out.absent = [str(p) for p in res.get("absent", [])]
    at = from_epoch(now)
    out.problems = [Problem(str(p), str(m), at) for p, m in res.get("problems", [])]
    out.rules = {str(k): str(v) for k, v in res.get("rules", {}).items()}
    out.large = {intern(str(p)): int(size) for p, size in res.get("large", [])}
    return out


class Endpoint(Protocol):
    """One side of a sync. Every method raises `SyncRefused` for a per-path failure."""

    name: str

    async def start(self, on_change: ChangeCallback) -> None:
        """Connect, clean stale temp files, configure, and start reporting changes."""

    async def close(self) -> None: ...

    async def scan(self, paths: list[str] | None = None) -> ScanResult: ...

    def read(self, path: str, digest: str) -> AsyncIterator[bytes]:
        """The file's content; fails at the end when it no longer hashes to `digest`."""

    async def read_many(self, files: list[tuple[str, str]]) -> list[bytes | str]:
        """Several small files: bytes, or an error message per file."""

    async def write(
        self, path: str, expected: Entry | None, new: Entry, chunks: AsyncIterator[bytes]
    ) -> Entry: ...

    async def put_many(self, items: list[PutItem]) -> list[Entry | str]: ...

    async def stage_many(self, items: list[PutItem]) -> list[int | str]:
        """Stage small files as sealed temp files (nothing visible changes): a handle per file,
        or why it was refused. `commit_many` makes them visible."""

    async def commit_many(self, handles: list[int]) -> list[Entry | str]:
        """One durability sync for all staged files, then each rename (re-checking the target)."""

    async def ops(self, ops: list[dict[str, Any]]) -> list[Entry | None | str]:
        """Metadata operations (mkdir, delete, move, symlink, chmod) in order; a str is an error."""
