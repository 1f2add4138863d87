"""The persisted ancestor of one session: a snapshot file plus an append-only journal.

Writing the whole ancestor after every cycle costs O(tree) (a quarter of a second for 50,000
files); a cycle usually changes a handful of paths. So each cycle appends its delta to a journal
(one JSON line, fsynced), and the snapshot is rewritten (temp file + fsync + rename) only when the
journal grows past half the tree, and when the session stops.

Crash safety: the snapshot is replaced atomically; a torn last journal line is ignored. Entries
of the ancestor are independent facts ("both sides agreed on this path"), so losing the tail of a
journal only makes those paths look older: the next cycle may report a conflict it could have
avoided, but never loses a version.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from nbd.errors import FailedPrecondition
from nbd.status import Conflict, from_epoch
from nbd.sync.snapshot import Entry, Snapshot

__all__ = ["AncestorStore"]

STATE_VERSION = 1


def _entry_to_json(e: Entry) -> list[Any]:
    return [e.kind, e.digest, e.size, e.executable, e.target]


def _entry_from_json(v: list[Any]) -> Entry:
    return Entry(v[0], v[1], int(v[2]), bool(v[3]), v[4])


# A conflict's time is stored as epoch seconds (0: unknown), as it always was.
def _conflict_to_json(c: Conflict) -> dict[str, Any]:
    return {
        "path": c.path,
        "copy_path": c.copy_path,
        "message": c.message,
        "time": c.time.timestamp() if c.time is not None else 0.0,
    }


def _conflict_from_json(c: dict[str, Any]) -> Conflict:
    return Conflict(str(c["path"]), str(c["copy_path"]), str(c["message"]), from_epoch(float(c["time"])))


def _key(c: Conflict) -> tuple[str, str]:
    return c.path, c.copy_path


class AncestorStore:
    """Load, journal and compact the ancestor kept at `path` (and `path + ".journal"`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.journal_path = path + ".journal"
        self.journal_entries = 0
        self.resolved: list[Conflict] = []

    def load(self) -> tuple[Snapshot, list[Conflict]]:
        """The persisted ancestor and open conflicts (empty when there is none yet); the resolved
        conflicts are left in `resolved`."""
        ancestor: Snapshot = {}
        conflicts: list[Conflict] = []
        self.resolved = []
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            doc = None
        except (OSError, ValueError) as e:
            raise FailedPrecondition(
                f"the sync state file {self.path} is unreadable ({e}); move it away to start the sync afresh"
            ) from e
        if doc is not None and doc.get("version") == STATE_VERSION:
            # Paths are interned like the scans' (one string per path across all three trees).
            ancestor = {sys.intern(p): _entry_from_json(v) for p, v in doc.get("ancestor", {}).items()}
            conflicts = [_conflict_from_json(c) for c in doc.get("conflicts", [])]
            self.resolved = [_conflict_from_json(c) for c in doc.get("resolved_conflicts", [])]
        try:
            with open(self.journal_path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # a torn last line: everything before it is valid
                    for p, v in record.get("set", {}).items():
                        ancestor[sys.intern(p)] = _entry_from_json(v)
                    for p in record.get("del", []):
                        ancestor.pop(p, None)
                    conflicts += [_conflict_from_json(c) for c in record.get("conflicts", [])]
                    for c in map(_conflict_from_json, record.get("resolved", [])):
                        conflicts = [o for o in conflicts if _key(o) != _key(c)]
                        self.resolved.append(c)
                    self.journal_entries += len(record.get("set", {})) + len(record.get("del", []))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise FailedPrecondition(f"the sync journal {self.journal_path} is unreadable ({e})") from e
        return ancestor, conflicts

    def append(
        self,
        changed: Mapping[str, Entry | None],
        conflicts: list[Conflict],
        resolved: Sequence[Conflict] = (),
    ) -> None:
        """Journal one cycle's delta (None: the path left the ancestor), its new conflicts and the
        conflicts the user resolved."""
        if not changed and not conflicts and not resolved:
            return
        record: dict[str, Any] = {
            "set": {p: _entry_to_json(e) for p, e in changed.items() if e is not None},
            "del": [p for p, e in changed.items() if e is None],
            "conflicts": [_conflict_to_json(c) for c in conflicts],
        }
        if resolved:
            record["resolved"] = [_conflict_to_json(c) for c in resolved]
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.journal_entries += len(changed)

    def needs_compaction(self, tree_size: int, pending: int = 0) -> bool:
        """Whether the journal (plus `pending` entries about to be added) outgrew the tree."""
        return self.journal_entries + pending > max(1000, tree_size // 2)

    def save(
        self, ancestor: Mapping[str, Entry], conflicts: list[Conflict], resolved: Sequence[Conflict] = ()
    ) -> None:
        """Rewrite the snapshot atomically and empty the journal."""
        doc = {
            "version": STATE_VERSION,
            "ancestor": {p: _entry_to_json(e) for p, e in ancestor.items()},
            "conflicts": [_conflict_to_json(c) for c in conflicts],
            "resolved_conflicts": [_conflict_to_json(c) for c in resolved],
        }
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # Only after the snapshot holds everything may the journal go.
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            pass
        self.journal_entries = 0
