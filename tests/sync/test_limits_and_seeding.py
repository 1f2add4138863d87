"""The two pure decisions around a reconcile: files above the size limit leave all three trees
(`leave_large`), and a sync without an ancestor is seeded from its build context's files where the
pod still holds them (`seed_ancestor`). Table-driven cases, then properties over random trees with
the real reconciler and the applier model of test_reconcile."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbd.status import NotSynced, size_text
from nbd.sync.reconcile import leave_large, reconcile, seed_ancestor
from nbd.sync.snapshot import DIR, Entry, Snapshot, is_under

from .test_reconcile import STAMP, F, history, mutate, simulate

MiB = 1 << 20


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1 KiB"),
        (100 * MiB, "100 MiB"),
        (int(1.2 * 1024 * MiB), "1.2 GiB"),
    ],
)
def test_size_text(n: int, text: str) -> None:
    assert size_text(n) == text


# --------------------------------------------------------------------------------------------
# leave_large: (ancestor, local scan, remote scan, local large, remote large) → plan

LIMIT = 100 * MiB
BIG = int(1.2 * 1024 * MiB)
LARGE_CASES: list[
    tuple[str, Snapshot, Snapshot, Snapshot, dict[str, int], dict[str, int], dict[str, Any]]
] = [
    (
        "a large file only in the pod is not copied",
        {},
        {"d": DIR},
        {"d": DIR},
        {},
        {"d/ckpt.pt": BIG},
        {"to_local": [], "to_remote": []},
    ),
    (
        "an older small local version is not pushed over the pod's large one",
        {"d": DIR, "d/ckpt.pt": F("old")},
        {"d": DIR, "d/ckpt.pt": F("old")},
        {"d": DIR},
        {},
        {"d/ckpt.pt": BIG},
        {"to_local": [], "to_remote": []},
    ),
    (
        "an edited small local version is not pushed either",
        {"d": DIR, "d/ckpt.pt": F("old")},
        {"d": DIR, "d/ckpt.pt": F("new")},
        {"d": DIR},
        {},
        {"d/ckpt.pt": BIG},
        {"to_local": [], "to_remote": []},
    ),
    (
        "the pod's large file does not read as a deletion of the local file",
        {"ckpt.pt": F("old")},
        {"ckpt.pt": F("old"), "a": F("a")},
        {"a": F("a")},
        {},
        {"ckpt.pt": BIG},
        {"to_local": [], "to_remote": []},
    ),
    (
        "other paths sync as usual",
        {},
        {"n.txt": F("n")},
        {"m.txt": F("m")},
        {},
        {"ckpt.pt": BIG},
        {"to_local": ["m.txt"], "to_remote": ["n.txt"]},
    ),
    (
        "a large local file is not pushed and its pod version is left alone",
        {"data.bin": F("v1")},
        {},
        {"data.bin": F("v1")},
        {"data.bin": BIG},
        {},
        {"to_local": [], "to_remote": []},
    ),
]


@pytest.mark.parametrize(
    "ancestor, local, remote, local_large, remote_large, expected",
    [c[1:] for c in LARGE_CASES],
    ids=[c[0] for c in LARGE_CASES],
)
def test_leave_large(
    ancestor: Snapshot,
    local: Snapshot,
    remote: Snapshot,
    local_large: dict[str, int],
    remote_large: dict[str, int],
    expected: dict[str, Any],
) -> None:
    a, lo, re, listed = leave_large(ancestor, local, remote, local_large, remote_large, LIMIT)
    plan = reconcile(a, lo, re, stamp=STAMP)
    assert sorted(c.path for c in plan.to_local) == expected["to_local"]
    assert sorted(c.path for c in plan.to_remote) == expected["to_remote"]
    assert not plan.conflicts and not plan.remote_moves
    large = {
        **{p: ("local", s) for p, s in local_large.items()},
        **{p: ("remote", s) for p, s in remote_large.items()},
    }
    assert listed == [
        NotSynced(p, s, f"too large ({size_text(s)} > 100 MiB)", side)
        for p, (side, s) in sorted(large.items())
    ]
    # The ancestor's entry at a large path is not part of the reconcile, so settle keeps it.
    for p in large:
        assert p not in a


def test_leave_large_lists_a_path_large_on_both_sides_twice() -> None:
    _, _, _, listed = leave_large({}, {}, {}, {"x": BIG}, {"x": BIG + 1}, LIMIT)
    assert [(n.path, n.side) for n in listed] == [("x", "local"), ("x", "remote")]
    assert listed[0].reason == "too large (1.2 GiB > 100 MiB)"


# A hypothesis property: whatever the three trees, no file above the limit on either side is ever
# deleted, overwritten or copied by a cycle, nor is the other side's version at its path.

LARGE_CONTENTS = ["L1", "L2"]


def _scanned(full: Snapshot, large: set[str]) -> Snapshot:
    """What a scan reports of a side: its large files are left out (their parents stay)."""
    return {p: e for p, e in full.items() if p not in large}


def _large_files(full: Snapshot) -> set[str]:
    return {p for p, e in full.items() if e.kind == "file" and e.digest.startswith("dL")}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=history,
    local_ops=history,
    remote_ops=history,
    large_local=st.lists(
        st.tuples(st.sampled_from(["a", "b", "a/b", "c.txt"]), st.sampled_from(LARGE_CONTENTS))
    ),
    large_remote=st.lists(
        st.tuples(st.sampled_from(["a", "b", "a/c.txt", "c.txt"]), st.sampled_from(LARGE_CONTENTS))
    ),
)
def test_no_file_above_the_limit_is_touched(
    base: list,
    local_ops: list,
    remote_ops: list,
    large_local: list,
    large_remote: list,  # type: ignore[type-arg]
) -> None:
    ancestor = mutate({}, base)
    local = mutate(ancestor, local_ops + [("write", p, c, False) for p, c in large_local])
    remote = mutate(ancestor, remote_ops + [("write", p, c, False) for p, c in large_remote])
    big_l, big_r = _large_files(local), _large_files(remote)
    a, lo, re, _ = leave_large(
        {p: e for p, e in ancestor.items() if p not in big_l | big_r},
        _scanned(local, big_l),
        _scanned(remote, big_r),
        dict.fromkeys(big_l, BIG),
        dict.fromkeys(big_r, BIG),
        LIMIT,
    )
    plan = reconcile(a, lo, re, stamp=STAMP, guard=None)
    touched = [c.path for c in plan.to_local + plan.to_remote] + [m.path for m in plan.remote_moves]
    for p in big_l | big_r:
        assert p not in touched, (p, plan)
    # Applied to the real trees (the applier removes only empty directories), every file above
    # the limit and the other side's version at its path are where they were, or moved with a
    # directory set aside as a conflict copy.
    lo_after, re_after, _ = simulate(plan, local, remote)
    for p in big_l | big_r:
        for before, after, moves in ((local, lo_after, []), (remote, re_after, plan.remote_moves)):
            if p not in before:
                continue
            kept = after.get(p) == before[p] or any(
                is_under(p, m.path) and after.get(m.dest + p[len(m.path) :]) == before[p] for m in moves
            )
            assert kept, (p, before[p], plan)
        if p in big_r and p not in local:
            assert lo_after.get(p) is None or not lo_after[p].digest.startswith("dL")


# --------------------------------------------------------------------------------------------
# seed_ancestor: (context files, pod) → ancestor

CTX: Snapshot = {
    "hello.ipynb": F("h1"),
    "train.py": F("t1"),
    "d": DIR,
    "d/a.txt": F("a1"),
    "run.sh": F("r1", True),
}
SEED_CASES: list[tuple[str, Snapshot, Snapshot]] = [
    ("the pod as the context: everything seeded", dict(CTX), dict(CTX)),
    (
        "a file the build changed is not seeded",
        {**CTX, "train.py": F("t-built")},
        {k: v for k, v in CTX.items() if k != "train.py"},
    ),
    ("a file only in the pod is not seeded", {**CTX, "made.txt": F("m")}, dict(CTX)),
    (
        "a file the build removed is not seeded",
        {k: v for k, v in CTX.items() if k != "train.py"},
        {k: v for k, v in CTX.items() if k != "train.py"},
    ),
    (
        "an executable bit the build changed is not seeded",
        {**CTX, "run.sh": F("r1")},
        {k: v for k, v in CTX.items() if k != "run.sh"},
    ),
    (
        "a directory the build replaced by a file: nothing below it",
        {**{k: v for k, v in CTX.items() if not k.startswith("d")}, "d": F("x")},
        {k: v for k, v in CTX.items() if not k.startswith("d")},
    ),
]


@pytest.mark.parametrize("pod, expected", [c[1:] for c in SEED_CASES], ids=[c[0] for c in SEED_CASES])
def test_seed_ancestor(pod: Snapshot, expected: Snapshot) -> None:
    assert seed_ancestor(CTX, pod) == expected


def test_seeded_sync_pushes_local_edits_and_deletions_and_keeps_build_changes() -> None:
    pod = {**CTX, "train.py": F("t-built"), "made.txt": F("m")}
    local = {**CTX, "hello.ipynb": F("h2"), "train.py": F("t2")}
    del local["d/a.txt"]
    plan = reconcile(seed_ancestor(CTX, pod), local, pod, stamp=STAMP)
    assert sorted((c.path, c.action) for c in plan.to_remote) == [
        ("d/a.txt", "delete"),
        ("hello.ipynb", "modify"),
        ("train.py", "create"),  # the local version takes the name, the pod's is kept aside
    ]
    assert [c.path for c in plan.conflicts] == ["train.py"]
    assert sorted(c.path for c in plan.to_local) == ["made.txt", plan.conflicts[0].copy_path]


# A hypothesis property: seeding never overwrites or deletes a local file (so never one that
# differs from the context's entry), and never deletes or overwrites a pod file that differs from
# the context's entry at its path.

ctx_history = st.lists(
    st.tuples(
        st.sampled_from(["write", "mkdir", "link"]),
        st.lists(st.sampled_from(["a", "b", "c.txt"]), min_size=1, max_size=3).map("/".join),
        st.sampled_from(["1", "2", "3"]),
        st.booleans(),
    ),
    max_size=8,
)


def _changed_paths(plan: Any, side: str) -> dict[str, Entry | None]:
    changes = plan.to_local if side == "local" else plan.to_remote
    out: dict[str, Entry | None] = {c.path: c.old for c in changes if c.old is not None}
    if side == "remote":
        out.update({m.path: m.expected for m in plan.remote_moves})
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(context_ops=ctx_history, local_ops=history, pod_ops=history)
def test_seeding_never_loses_a_version_the_context_does_not_hold(
    context_ops: list,
    local_ops: list,
    pod_ops: list,  # type: ignore[type-arg]
) -> None:
    context = mutate({}, context_ops)
    local, pod = mutate(context, local_ops), mutate(context, pod_ops)
    seeded = seed_ancestor(context, pod)
    plan = reconcile(seeded, local, pod, stamp=STAMP)
    if plan.halt_reason:
        return
    # No local file is replaced or deleted: where a seed applies the pod holds the context's
    # version, so only the local side can have changed since; elsewhere there is no ancestor.
    # (The property asked of seeding, no local version other than the context's is lost, follows.)
    for p, old in _changed_paths(plan, "local").items():
        assert old is not None and old.is_dir, (p, old, plan)
    # Pod entries that are replaced, deleted or moved aside: a move keeps the content (it is a
    # conflict copy); a change replaces or deletes only what the context holds (or a directory).
    moved = {m.path for m in plan.remote_moves}
    for c in plan.to_remote:
        if c.old is None or c.old.is_dir:
            continue
        if any(is_under(c.path, m) for m in moved):
            continue
        assert c.old == context.get(c.path), (c, plan)
    # And nothing is lost: every file version of either side that the context does not hold at
    # its path survives somewhere after the cycle.
    lo, re, failed = simulate(plan, local, pod)
    assert not failed
    survived = {e.digest for e in list(lo.values()) + list(re.values()) if e.kind == "file"}
    for side in (local, pod):
        for p, e in side.items():
            if e.kind == "file" and e != context.get(p):
                assert e.digest in survived, (p, e, plan)


def test_a_seeded_sync_keeps_the_delete_guard() -> None:
    """Local deletions since the build become deletions in the pod only within the guard."""
    context: Snapshot = {f"f{i:02d}": F(str(i)) for i in range(40)}
    local = {p: e for p, e in context.items() if p >= "f30"}
    plan = reconcile(seed_ancestor(context, context), local, context, stamp=STAMP)
    assert "delete 30 of 40 files on the remote side" in plan.halt_reason
    small = {p: e for p, e in context.items() if p != "f00"}
    plan = reconcile(seed_ancestor(context, context), small, context, stamp=STAMP)
    assert not plan.halt_reason and [(c.path, c.action) for c in plan.to_remote] == [("f00", "delete")]
