"""Three-way reconciliation: the ancestor, the local side and the remote side in, a plan out.

This is the decision core of the sync engine and does no I/O. It walks the union of the three
trees and, per path, decides:

- both sides equal → nothing to do (the ancestor becomes that state when the cycle settles);
- one side unchanged since the ancestor (deeply, for directories) → the other side's subtree is
  copied over it;
- both sides changed, one deleted → modify beats delete: the surviving content is restored to the
  deleting side (for a deleted directory, per child: unchanged children go, changed ones stay);
- both sides changed differently and present → conflict: the remote version is moved aside on the
  remote to `NAME.conflict-remote-<time>.EXT` and copied to the local side; the local version takes
  the original name on both sides.

Safety rules:

- A side whose root is empty while the ancestor is not (a new pod with an empty /content) is
  refilled from the other side instead of propagating deletions: the ancestor is ignored.
- A plan that deletes more files on one side than `DeleteGuard` allows is marked halted; the
  session applies nothing until it is resumed with force.

Every `Change` names the state it expects on its target (`old`), so an applier refuses to touch a
path that changed after the scan; the next cycle re-plans it. The ancestor is never edited here:
`settle` derives it afterwards from what both sides actually hold.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from nbd.status import Conflict, NotSynced, size_text
from nbd.sync.snapshot import DIR, Entry, PathIndex, Snapshot, depth_of, parent_of, without

__all__ = [
    "Change",
    "Move",
    "Plan",
    "DeleteGuard",
    "reconcile",
    "settle",
    "conflict_name",
    "leave_large",
    "seed_ancestor",
]


@dataclass(frozen=True, slots=True)
class Change:
    """Make `path` on the target side hold `new` (None: delete), if it currently holds `old`.

    For a file, the content is read from `source` on the other side, whose digest must be
    `new.digest`. When `old` and `new` are files with the same digest only the executable bit
    changes and nothing is transferred.
    """

    path: str
    old: Entry | None
    new: Entry | None
    source: str = ""

    @property
    def action(self) -> str:
        if self.new is None:
            return "delete"
        return "create" if self.old is None else "modify"

    @property
    def needs_content(self) -> bool:
        if self.new is None or self.new.kind != "file":
            return False
        return not (self.old is not None and self.old.kind == "file" and self.old.digest == self.new.digest)


@dataclass(frozen=True, slots=True)
class Move:
    """Rename `path` to `dest` on one side (a conflict copy), if `path` holds `expected`."""

    path: str
    dest: str
    expected: Entry


@dataclass(frozen=True, slots=True)
class DeleteGuard:
    """A plan deleting more than `fraction` of the ancestor's files and more than `minimum` files
    on one side halts the session instead of being applied."""

    fraction: float = 0.5
    minimum: int = 20


@dataclass
class Plan:
    """The decisions of one cycle, in the order an applier must follow.

    Apply `remote_moves` first, then `to_local`, then `to_remote`; within one side apply deletions
    deepest first, then creations and modifications shallowest first (`ordered`).
    """

    to_local: list[Change] = field(default_factory=list)
    to_remote: list[Change] = field(default_factory=list)
    remote_moves: list[Move] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    refilled: str = ""  # "local" or "remote" when that side was refilled from the other
    halt_reason: str = ""

    @property
    def empty(self) -> bool:
        return not (self.to_local or self.to_remote or self.remote_moves)

    @staticmethod
    def ordered(changes: list[Change]) -> list[Change]:
        deletes = sorted((c for c in changes if c.new is None), key=lambda c: (-depth_of(c.path), c.path))
        writes = sorted((c for c in changes if c.new is not None), key=lambda c: (depth_of(c.path), c.path))
        return deletes + writes


def conflict_name(path: str, stamp: str, taken: Mapping[str, object] | set[str], side: str = "remote") -> str:
    """`dir/NAME.conflict-<side>-<stamp>.EXT`, with a numeric suffix if that name is taken."""
    head, name = posixpath.split(path)
    stem, ext = posixpath.splitext(name)
    if not stem:  # a dotfile like ".env" has no extension
        stem, ext = name, ""
    n = 1
    while True:
        suffix = "" if n == 1 else f"-{n}"
        candidate = posixpath.join(head, f"{stem}.conflict-{side}-{stamp}{suffix}{ext}")
        if candidate not in taken:
            return candidate
        n += 1


class _Reconciler:
    def __init__(self, ancestor: Snapshot, local: Snapshot, remote: Snapshot, stamp: str) -> None:
        self.A, self.L, self.R = ancestor, local, remote
        self.iA, self.iL, self.iR = PathIndex(ancestor), PathIndex(local), PathIndex(remote)
        self.stamp = stamp
        self.plan = Plan()
        self.taken: set[str] = set(ancestor) | set(local) | set(remote)
        children: dict[str, set[str]] = {}
        for snap in (ancestor, local, remote):
            for path in snap:
                children.setdefault(parent_of(path), set()).add(path)
        self.children = children

    def walk(self, directory: str) -> None:
        for path in sorted(self.children.get(directory, ())):
            self.node(path)

    def changed(self, path: str, side: PathIndex) -> bool:
        """Whether `side`'s subtree at `path` differs from the ancestor's."""
        return self.iA.subtree(path) != side.subtree(path)

    def node(self, path: str) -> None:
        a, l, r = self.A.get(path), self.L.get(path), self.R.get(path)
        if l is not None and r is not None and l.is_dir and r.is_dir:
            self.walk(path)
            return
        if l == r:
            return
        local_changed = self.changed(path, self.iL)
        remote_changed = self.changed(path, self.iR)
        if not local_changed:
            self.replace(path, self.iL, self.iR, self.plan.to_local)
            return
        if not remote_changed:
            self.replace(path, self.iR, self.iL, self.plan.to_remote)
            return
        # Both sides changed. Modify beats delete.
        if l is None:
            if r is not None and r.is_dir and a is not None and a.is_dir:
                self.deleted_dir(
                    path, deleter=self.plan.to_local, keeper=self.plan.to_remote, keeper_index=self.iR
                )
            else:
                self.replace(path, self.iL, self.iR, self.plan.to_local)
            return
        if r is None:
            if l.is_dir and a is not None and a.is_dir:
                self.deleted_dir(
                    path, deleter=self.plan.to_remote, keeper=self.plan.to_local, keeper_index=self.iL
                )
            else:
                self.replace(path, self.iR, self.iL, self.plan.to_remote)
            return
        self.conflict(path, l, r)

    def deleted_dir(
        self, path: str, deleter: list[Change], keeper: list[Change], keeper_index: PathIndex
    ) -> None:
        """One side deleted directory `path`, the other changed something inside it: decide per
        child, then keep the directory on both sides iff anything inside survives."""
        before = len(keeper)
        self.walk(path)
        removed = {c.path for c in keeper[before:] if c.new is None}
        survivors = [p for p in keeper_index.descendants(path) if p not in removed]
        if survivors:
            deleter.append(Change(path, None, DIR))
        else:
            keeper.append(Change(path, DIR, None))

    def replace(self, path: str, target: PathIndex, source: PathIndex, out: list[Change]) -> None:
        """Make the target's subtree at `path` equal to the source's."""
        tsub, ssub = target.subtree(path), source.subtree(path)
        for q, t in tsub.items():
            s = ssub.get(q)
            if s is None or s.kind != t.kind:
                out.append(Change(q, t, None))
                if s is not None:
                    out.append(Change(q, None, s, q if s.kind == "file" else ""))
            elif t.kind != "dir" and t != s:
                out.append(Change(q, t, s, q if s.kind == "file" else ""))
        for q, s in ssub.items():
            if q not in tsub:
                out.append(Change(q, None, s, q if s.kind == "file" else ""))

    def conflict(self, path: str, l: Entry, r: Entry) -> None:
        copy = conflict_name(path, self.stamp, self.taken)
        self.taken.add(copy)
        self.plan.remote_moves.append(Move(path, copy, r))
        for q, s in self.iR.subtree(path).items():
            moved = copy + q[len(path) :]
            self.plan.to_local.append(Change(moved, None, s, moved if s.kind == "file" else ""))
        for q, s in self.iL.subtree(path).items():
            self.plan.to_remote.append(Change(q, None, s, q if s.kind == "file" else ""))
        what = {"file": "file", "dir": "directory", "symlink": "symbolic link"}
        message = (
            f"{path} changed on both sides: the local {what[l.kind]} kept the name, "
            f"the remote {what[r.kind]} was kept as {copy}"
        )
        self.plan.conflicts.append(Conflict(path, copy, message))


def leave_large(
    ancestor: Snapshot,
    local: Snapshot,
    remote: Snapshot,
    local_large: Mapping[str, int],
    remote_large: Mapping[str, int],
    limit: int,
) -> tuple[Snapshot, Snapshot, Snapshot, list[NotSynced]]:
    """The three trees without the files a side holds above the size limit, and those files.

    A scan leaves such a file out of its snapshot (it is never read), so the other side must not
    read its absence as a deletion: its path leaves all three trees, like an ignored path. Nothing
    at that path is then copied, deleted or moved on either side, and the ancestor's entry stays
    as it is (a later cycle that sees the file under the limit again reconciles it as usual).
    """
    listed = [
        NotSynced(path, size, f"too large ({size_text(size)} > {size_text(limit)})", side)
        for side, large in (("local", local_large), ("remote", remote_large))
        for path, size in large.items()
    ]
    listed.sort(key=lambda n: (n.path, n.side))
    roots = set(local_large) | set(remote_large)
    if roots:
        ancestor, local, remote = without(ancestor, roots), without(local, roots), without(remote, roots)
    return ancestor, local, remote, listed


def seed_ancestor(context: Mapping[str, Entry], remote: Mapping[str, Entry]) -> Snapshot:
    """An ancestor for a sync that has none, from the files of the build context its image holds.

    `context` is what the local directory held when it was packaged (path → entry, as a scan
    sees it); `remote` is the pod's scan now. A context entry becomes the ancestor of a path only
    where the pod holds exactly that entry: the local directory had that content (so it is an
    ancestor of the local version) and the pod still has it (so "unchanged in the pod" is true).
    Then a local edit since the packaging is pushed, a local deletion deletes the pod's copy, and
    a path the image's build changed (pod ≠ context) or created (only in the pod) has no ancestor
    and is reconciled as it would be without one: nothing is deleted, differences are kept on
    both sides. A directory is seeded only when each of its parents is, so a seeded subtree never
    hangs below a path without an ancestor.
    """
    out: Snapshot = {}
    for path in sorted(context, key=depth_of):
        entry = context[path]
        parent = parent_of(path)
        if remote.get(path) == entry and (not parent or parent in out):
            out[path] = entry
    return out


def _files(snapshot: Snapshot) -> int:
    return sum(1 for e in snapshot.values() if not e.is_dir)


def reconcile(
    ancestor: Snapshot,
    local: Snapshot,
    remote: Snapshot,
    *,
    stamp: str,
    guard: DeleteGuard | None = DeleteGuard(),
    refill: bool = True,
    ancestor_files: int | None = None,
) -> Plan:
    """Decide what to change on each side so that both converge without losing any version.

    Args:
        ancestor: The last state both sides agreed on.
        local: The local side now.
        remote: The remote side now.
        stamp: The time used in conflict copy names, e.g. "20261125T201530Z".
        guard: The mass-deletion limit; None disables it (a forced resume).
        refill: Apply the empty-side refill rule. A caller reconciling only part of the trees
            (changed subtrees) passes False: emptiness is only meaningful for whole trees.
        ancestor_files: The whole ancestor's file count, for the guard, when the trees passed
            are only part of it.
    """
    refilled = ""
    if refill and ancestor and local and not remote:
        refilled, ancestor = "remote", {}
    elif refill and ancestor and remote and not local:
        refilled, ancestor = "local", {}
    rec = _Reconciler(ancestor, local, remote, stamp)
    rec.walk("")
    plan = rec.plan
    plan.refilled = refilled
    if guard is not None:
        files = _files(ancestor) if ancestor_files is None or refilled else ancestor_files
        limit = max(guard.minimum, guard.fraction * files)
        for side, changes in (("local", plan.to_local), ("remote", plan.to_remote)):
            deletes = sum(1 for c in changes if c.new is None and c.old is not None and not c.old.is_dir)
            if deletes > limit:
                plan.halt_reason = (
                    f"this cycle would delete {deletes} of {files} files on the {side} side; "
                    f"sync halted to protect them: check both sides, then resume with force to proceed"
                )
                break
    return plan


def settle(
    ancestor: Mapping[str, Entry], local: Mapping[str, Entry], remote: Mapping[str, Entry]
) -> Snapshot:
    """The new ancestor: every path both sides now agree on takes that state; a path where they
    still differ (a refused or failed change) keeps its old ancestor state so the next cycle
    re-plans it."""
    out: Snapshot = {}
    for path in set(ancestor) | set(local) | set(remote):
        l, r = local.get(path), remote.get(path)
        if l == r:
            if l is not None:
                out[path] = l
        else:
            a = ancestor.get(path)
            if a is not None:
                out[path] = a
    return out
