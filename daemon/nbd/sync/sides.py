"""What a session knows of one side of the sync: its snapshot, its scan problems, its ignore
rules and the paths its watcher reported since the last scan.

Rescans are incremental: only the subtrees the watcher reported are rescanned and patched into
the snapshot; a report of "everything" (a reconnect, an inotify overflow, a changed ignore file)
rescans the whole side.
"""

from __future__ import annotations

from nbd.status import Problem
from nbd.sync.agent.ignore import is_rule_file
from nbd.sync.endpoint import Endpoint, ScanResult
from nbd.sync.snapshot import Entry, Snapshot, drop_subtrees, is_under, minimal_roots

__all__ = ["Side"]


class Side:
    """What the session knows of one side: its snapshot, its scan problems, its pending changes."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.snapshot: Snapshot = {}
        self.problems: dict[str, Problem] = {}
        # Files above the size limit, left out of the snapshot: path -> size.
        self.large: dict[str, int] = {}
        self.rules: dict[str, str] = {}
        self.pending: set[str] | None = set()  # None: rescan everything
        self.scanned = False
        self.last_scanned: dict[str, Entry] = {}

    def mark(self, paths: list[str] | None) -> None:
        if paths is None or not self.scanned:
            self.pending = None
        elif self.pending is not None:
            self.pending.update(paths)

    @property
    def dirty(self) -> bool:
        return self.pending is None or bool(self.pending)

    async def rescan(self) -> list[str] | None:
        """Rescan what changed; return the subtrees rescanned, or None after a full scan."""
        pending, self.pending = self.pending, set()
        if pending is not None and any(is_rule_file(p) for p in pending):
            pending = None  # ignore rules changed: everything may be in or out now
        if pending is None:
            res = await self.endpoint.scan(None)
            self.snapshot = res.entries
            self.problems = {p.path: p for p in res.problems}
            self.large = dict(res.large)
            self.rules = res.rules
            self.scanned = True
            self.last_scanned = res.entries
            return None
        self.last_scanned = {}
        if not pending:
            return []
        roots = minimal_roots(pending)
        res = await self.endpoint.scan(roots)
        self.apply_partial(roots, res)
        self.last_scanned = res.entries
        return roots

    def share_with(self, other: Side) -> None:
        """Replace just-scanned entries equal to the other side's by the other side's objects:
        two trees in sync then cost the memory of one (50,000 entries are ~10 MB each)."""
        mine, theirs = self.snapshot, other.snapshot
        for path, e in self.last_scanned.items():
            o = theirs.get(path)
            if o is not None and o is not e and o == e:
                mine[path] = o
        self.last_scanned = {}

    def apply_partial(self, roots: list[str], res: ScanResult) -> None:
        drop_subtrees(self.snapshot, roots)
        self.snapshot.update(res.entries)
        for path in list(self.problems):
            if any(is_under(path, r) for r in roots):
                del self.problems[path]
        for p in res.problems:
            self.problems[p.path] = p
        for path in [p for p in self.large if any(is_under(p, r) for r in roots)]:
            del self.large[path]
        self.large.update(res.large)
        self.rules = res.rules
