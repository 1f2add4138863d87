"""Applying a plan: moving content between the two endpoints, path by path.

A failed path becomes a `Problem` and the rest of the plan goes on; nothing here aborts a cycle
except a lost agent connection (`AgentLost`), which the session answers by reconnecting. The
caller's snapshots are patched with what each side really holds afterwards (the entry each write
returned, or the absence after a delete), so the ancestor can be settled from facts, not hopes.

Order, which the plan's safety relies on: remote conflict moves first; then each side's deletions
(deepest first), directory creations (shallowest first), then links, mode changes and files.
Small files are staged in batches (one round trip for many files, several in flight, each file a
sealed temp file beside its target), then transitioned together: one durability sync, then the
renames, each re-checking that its target is still what the plan expected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from nbd.status import Problem, utcnow
from nbd.sync.endpoint import Endpoint, PutItem, SyncRefused, expected_wire
from nbd.sync.reconcile import Change, Plan
from nbd.sync.snapshot import Entry, PathIndex, Snapshot

__all__ = ["Applied", "apply_plan", "SMALL_FILE"]

SMALL_FILE = 256 * 1024
BATCH_BYTES = 4 * 1024 * 1024
BATCH_FILES = 512
PARALLEL_BATCHES = 4
COMMIT_FILES = 4096


@dataclass
class Applied:
    """What a plan did: per-direction counts, the changes that landed, the paths that failed."""

    done_to_local: list[Change] = field(default_factory=list)
    done_to_remote: list[Change] = field(default_factory=list)
    bytes_to_local: int = 0
    bytes_to_remote: int = 0
    problems: list[Problem] = field(default_factory=list)


def _patch(snapshot: Snapshot, path: str, entry: Entry | None) -> None:
    if entry is None:
        snapshot.pop(path, None)
    else:
        snapshot[path] = entry


def _patch_move(snapshot: Snapshot, src: str, dest: str) -> None:
    moved = PathIndex(snapshot).subtree(src)
    for p in moved:
        del snapshot[p]
    for p, e in moved.items():
        snapshot[dest + p[len(src) :]] = e


ChangeReporter = Callable[[str, Change, int], None]


class _Side:
    def __init__(
        self,
        source: Endpoint,
        target: Endpoint,
        snapshot: Snapshot,
        direction: str,
        applied: Applied,
        report: ChangeReporter,
    ) -> None:
        self.source, self.target, self.snapshot = source, target, snapshot
        self.direction = direction
        self.applied = applied
        self.report = report

    def ok(self, change: Change, entry: Entry | None, nbytes: int = 0) -> None:
        _patch(self.snapshot, change.path, entry)
        if self.direction == "to_local":
            self.applied.done_to_local.append(change)
            self.applied.bytes_to_local += nbytes
        else:
            self.applied.done_to_remote.append(change)
            self.applied.bytes_to_remote += nbytes
        self.report(self.direction, change, nbytes)

    def fail(self, change: Change, message: str) -> None:
        self.applied.problems.append(Problem(change.path, message, utcnow()))

    async def run(self, changes: list[Change]) -> None:
        ordered = Plan.ordered(changes)
        meta_first = [c for c in ordered if c.new is None or c.new.kind == "dir"]
        rest = [c for c in ordered if not (c.new is None or c.new.kind == "dir")]
        await self.metadata(meta_first)
        links_modes = [c for c in rest if not c.needs_content]
        files = [c for c in rest if c.needs_content]
        await self.metadata(links_modes)
        small = [c for c in files if c.new is not None and c.new.size <= SMALL_FILE]
        large = [c for c in files if c.new is not None and c.new.size > SMALL_FILE]
        batches: list[list[Change]] = []
        cur: list[Change] = []
        size = 0
        for c in small:
            assert c.new is not None
            if cur and (len(cur) >= BATCH_FILES or size + c.new.size > BATCH_BYTES):
                batches.append(cur)
                cur, size = [], 0
            cur.append(c)
            size += c.new.size
        if cur:
            batches.append(cur)
        # Stage: small files land as sealed temp files, several batches in flight at once.
        gate = asyncio.Semaphore(PARALLEL_BATCHES)
        staged: list[tuple[Change, int, int]] = []

        async def one(batch: list[Change]) -> None:
            async with gate:
                staged.extend(await self.stage(batch))

        await asyncio.gather(*(one(b) for b in batches))
        # Transition: one durability sync, then every rename (each target re-checked).
        staged.sort(key=lambda s: s[0].path)
        for i in range(0, len(staged), COMMIT_FILES):
            part = staged[i : i + COMMIT_FILES]
            results = await self.target.commit_many([handle for _, handle, _ in part])
            for (c, _, nbytes), r in zip(part, results):
                if isinstance(r, str):
                    self.fail(c, r)
                else:
                    self.ok(c, r, nbytes)
        for c in large:
            await self.large(c)

    async def metadata(self, changes: list[Change]) -> None:
        if not changes:
            return
        ops: list[dict[str, Any]] = []
        for c in changes:
            if c.new is None:
                assert c.old is not None
                ops.append({"op": "delete", "path": c.path, "expected": expected_wire(c.old)})
            elif c.new.kind == "dir":
                ops.append({"op": "mkdir", "path": c.path})
            elif c.new.kind == "symlink":
                ops.append(
                    {
                        "op": "symlink",
                        "path": c.path,
                        "expected": expected_wire(c.old),
                        "target": c.new.target,
                    }
                )
            else:  # a mode change only
                ops.append(
                    {
                        "op": "chmod",
                        "path": c.path,
                        "expected": expected_wire(c.old),
                        "executable": c.new.executable,
                    }
                )
        results = await self.target.ops(ops)
        for c, r in zip(changes, results):
            if isinstance(r, str):
                self.fail(c, r)
            else:
                self.ok(c, r)

    async def stage(self, changes: list[Change]) -> list[tuple[Change, int, int]]:
        """Read a batch from the source and stage it on the target: (change, handle, bytes)."""
        datas = await self.source.read_many([(c.source, c.new.digest) for c in changes if c.new is not None])
        items: list[PutItem] = []
        sent: list[Change] = []
        for c, d in zip(changes, datas):
            assert c.new is not None
            if isinstance(d, str):
                self.fail(c, d)
                continue
            items.append(PutItem(c.path, c.old, c.new, d))
            sent.append(c)
        if not items:
            return []
        out: list[tuple[Change, int, int]] = []
        for c, item, r in zip(sent, items, await self.target.stage_many(items)):
            if isinstance(r, str):
                self.fail(c, r)
            else:
                out.append((c, r, len(item.data)))
        return out

    async def batch(self, changes: list[Change]) -> None:
        datas = await self.source.read_many([(c.source, c.new.digest) for c in changes if c.new is not None])
        items: list[PutItem] = []
        sent: list[Change] = []
        for c, d in zip(changes, datas):
            assert c.new is not None
            if isinstance(d, str):
                self.fail(c, d)
                continue
            items.append(PutItem(c.path, c.old, c.new, d))
            sent.append(c)
        if not items:
            return
        results = await self.target.put_many(items)
        for c, item, r in zip(sent, items, results):
            if isinstance(r, str):
                self.fail(c, r)
            else:
                self.ok(c, r, len(item.data))

    async def large(self, change: Change) -> None:
        assert change.new is not None
        counted = 0

        async def counting(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal counted
            async for chunk in chunks:
                counted += len(chunk)
                yield chunk

        try:
            entry = await self.target.write(
                change.path,
                change.old,
                change.new,
                counting(self.source.read(change.source, change.new.digest)),
            )
        except SyncRefused as e:
            self.fail(change, str(e))
            return
        self.ok(change, entry, counted)


async def apply_plan(
    plan: Plan,
    local: Endpoint,
    remote: Endpoint,
    local_snapshot: Snapshot,
    remote_snapshot: Snapshot,
    report: ChangeReporter = lambda direction, change, nbytes: None,
) -> Applied:
    """Apply `plan`, patching both snapshots in place with the resulting states."""
    applied = Applied()
    if plan.remote_moves:
        ops = [
            {"op": "move", "path": m.path, "dest": m.dest, "expected": expected_wire(m.expected)}
            for m in plan.remote_moves
        ]
        results = await remote.ops(ops)
        for m, r in zip(plan.remote_moves, results):
            if isinstance(r, str):
                applied.problems.append(
                    Problem(m.path, f"could not keep the remote version aside: {r}", utcnow())
                )
            else:
                _patch_move(remote_snapshot, m.path, m.dest)
    await _Side(remote, local, local_snapshot, "to_local", applied, report).run(plan.to_local)
    await _Side(local, remote, remote_snapshot, "to_remote", applied, report).run(plan.to_remote)
    return applied
