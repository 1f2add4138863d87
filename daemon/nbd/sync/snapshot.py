"""What one side of a sync looks like at one instant, as plain data.

A `Snapshot` maps a relative path ("a/b.txt", "/"-separated, never empty, never starting with "/";
the rule is `nbd.sync.agent.paths`, which the agent enforces and the remote endpoint checks) to an
`Entry`. The root itself is not in a snapshot: it always exists as a directory on both sides.
Entries compare by content identity only (kind, digest, size, executable bit, link target); the
scanner's cache keys (mtime, inode) never reach this module, so two scans of unchanged content are
equal. This module does no I/O and is shared by the reconciler, the session and the tests. What a
cycle reports about paths (`Conflict`, `Problem`) is `nbd.status`'s vocabulary.
"""

from __future__ import annotations

import bisect
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Entry",
    "Kind",
    "Snapshot",
    "PathIndex",
    "symlink_escapes",
    "without",
    "is_under",
    "parent_of",
    "depth_of",
    "minimal_roots",
    "restrict",
    "drop_subtrees",
]

Kind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One node's content identity.

    Invariants: a "file" has a hex digest (sha256 of its bytes) and a size; a "symlink" has a
    target; a "dir" has neither. Equality is content equality.
    """

    kind: Kind
    digest: str = ""
    size: int = 0
    executable: bool = False
    target: str = ""

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


DIR = Entry("dir")

Snapshot = dict[str, Entry]


def symlink_escapes(path: str, target: str) -> bool:
    """True when the symlink at `path` pointing to `target` leads outside the root (lexically)."""
    if not target or target.startswith("/") or "\x00" in target:
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return joined == ".." or joined.startswith("../")


def parent_of(path: str) -> str:
    """The parent's relative path; "" for a top-level entry."""
    i = path.rfind("/")
    return "" if i < 0 else path[:i]


def depth_of(path: str) -> int:
    return path.count("/")


def is_under(path: str, prefix: str) -> bool:
    """True when `path` is `prefix` or inside it."""
    return path == prefix or path.startswith(prefix + "/")


def without(snapshot: Mapping[str, Entry], roots: Iterable[str]) -> Snapshot:
    """A copy of `snapshot` without `roots` and everything under them."""
    roots = set(roots)
    if not roots:
        return dict(snapshot)
    out: Snapshot = {}
    for path, entry in snapshot.items():
        cut = False
        probe = path
        while True:
            if probe in roots:
                cut = True
                break
            i = probe.rfind("/")
            if i < 0:
                break
            probe = probe[:i]
        if not cut:
            out[path] = entry
    return out


def minimal_roots(paths: Iterable[str]) -> list[str]:
    """The smallest set of paths whose subtrees cover all of `paths`."""
    roots: list[str] = []
    for p in sorted(set(paths)):
        if not roots or not is_under(p, roots[-1]):
            roots.append(p)
    return roots


def _in_roots(roots: list[str]) -> tuple[set[str], tuple[str, ...]]:
    return set(roots), tuple(r + "/" for r in roots)


def restrict(snapshot: Mapping[str, Entry], roots: list[str]) -> Snapshot:
    """The subtrees of `snapshot` at `roots`, plus the directories leading to them (a C-speed
    scan: `str.startswith` with a tuple)."""
    exact, prefixes = _in_roots(roots)
    out = {p: e for p, e in snapshot.items() if p in exact or p.startswith(prefixes)}
    for r in roots:
        parent = parent_of(r)
        while parent:
            e = snapshot.get(parent)
            if e is not None:
                out[parent] = e
            parent = parent_of(parent)
    return out


def drop_subtrees(snapshot: dict[str, Entry], roots: list[str]) -> None:
    """Remove `roots` and everything under them from `snapshot`, in place."""
    if not roots:
        return
    exact, prefixes = _in_roots(roots)
    for p in [p for p in snapshot if p in exact or p.startswith(prefixes)]:
        del snapshot[p]


class PathIndex:
    """Sorted keys of a snapshot for subtree range queries.

    Sorting puts every descendant of "a" between "a/" and "a0" ('0' follows '/'), whatever other
    names like "a-b" or "a.txt" sort next to it.
    """

    def __init__(self, snapshot: Mapping[str, Entry]) -> None:
        self.snapshot = snapshot
        self.keys = sorted(snapshot)

    def descendants(self, path: str) -> Iterator[str]:
        """Paths strictly under `path` ("" is the root), in sorted order."""
        if path == "":
            yield from self.keys
            return
        lo = bisect.bisect_left(self.keys, path + "/")
        hi = bisect.bisect_left(self.keys, path + "0")
        yield from self.keys[lo:hi]

    def subtree(self, path: str) -> dict[str, Entry]:
        """`path` itself (when present) and its descendants."""
        out: dict[str, Entry] = {}
        entry = self.snapshot.get(path)
        if entry is not None:
            out[path] = entry
            if entry.is_dir:
                for key in self.descendants(path):
                    out[key] = self.snapshot[key]
        return out
