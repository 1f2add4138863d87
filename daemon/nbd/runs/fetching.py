"""What fetching a run's outputs does to each path: the plan, decided from three snapshots.

Pure. The inputs are the run's outputs (`remote`), the local folder they go to (`local`) and what
the last fetch of this run left there (`fetched`: the entries written then, as written). The rule
is the sync engine's, in one direction:

- a path the run has and the local folder lacks is written;
- a local path identical to the run's is left alone (nothing to do);
- a local path that is still what the last fetch wrote is replaced by the run's newer version;
- any other local path (the user made it, or changed it since it was fetched) is kept, and the
  run's version is written beside it under a conflict name;
- nothing is ever deleted: a file the run no longer has stays local.

Directories are made before what is in them; a local file where the run has a directory (or the
reverse) is a conflict of the whole subtree, which then goes to conflict names.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping

from nbd.sync.reconcile import conflict_name
from nbd.sync.snapshot import Entry, Snapshot

__all__ = ["FetchPlan", "Write", "after_fetch", "plan_fetch"]


@dataclasses.dataclass(frozen=True)
class Write:
    """Write the run's `source` at local `path`, which must hold `expected` (None: nothing) then."""

    source: str
    path: str
    entry: Entry
    expected: Entry | None
    conflict: bool = False


@dataclasses.dataclass(frozen=True)
class FetchPlan:
    mkdirs: tuple[str, ...]
    writes: tuple[Write, ...]
    # Local paths already identical to the run's (recorded as fetched: they are the run's content).
    same: tuple[str, ...]

    @property
    def unchanged(self) -> int:
        return len(self.same)

    @property
    def conflicts(self) -> tuple[Write, ...]:
        return tuple(w for w in self.writes if w.conflict)


def _depth(path: str) -> int:
    return path.count("/")


def plan_fetch(
    remote: Mapping[str, Entry], local: Mapping[str, Entry], fetched: Mapping[str, Entry], stamp: str
) -> FetchPlan:
    """The plan for every path of `remote` (relative paths, '/'-separated); see the module doc."""
    taken: set[str] = set(local) | set(remote)
    mkdirs: list[str] = []
    writes: list[Write] = []
    same: list[str] = []
    # Remote paths under one that conflicts as a whole are moved below its conflict name.
    renamed: dict[str, str] = {}
    for path in sorted(remote, key=lambda p: (_depth(p), p)):
        entry = remote[path]
        parent = posixpath.dirname(path)
        dest = path
        if parent and parent in renamed:
            dest = posixpath.join(renamed[parent], posixpath.basename(path))
            if entry.is_dir:
                renamed[path] = dest
                mkdirs.append(dest)
            else:
                writes.append(Write(path, dest, entry, None, conflict=True))
            continue
        mine = local.get(path)
        if entry.is_dir:
            if mine is None:
                mkdirs.append(path)
            elif not mine.is_dir:
                copy = conflict_name(path, stamp, taken, side="run")
                taken.add(copy)
                renamed[path] = copy
                mkdirs.append(copy)
            continue
        if mine is None:
            writes.append(Write(path, path, entry, None))
        elif mine == entry:
            same.append(path)
        elif not mine.is_dir and fetched.get(path) == mine:
            writes.append(Write(path, path, entry, mine))
        else:
            copy = conflict_name(path, stamp, taken, side="run")
            taken.add(copy)
            writes.append(Write(path, copy, entry, None, conflict=True))
    return FetchPlan(tuple(mkdirs), tuple(writes), tuple(same))


def after_fetch(
    previous: Snapshot, plan: FetchPlan, remote: Mapping[str, Entry], written: Mapping[str, Entry]
) -> Snapshot:
    """The record of what fetches left locally, after `plan` wrote `written` (dest → entry)."""
    record = dict(previous)
    for path in plan.same:
        record[path] = remote[path]
    for w in plan.writes:
        if not w.conflict and w.path in written:
            record[w.path] = written[w.path]
    return record
