"""The reconcile core, without I/O: table-driven cases and property tests over random histories.

`simulate` applies a plan to in-memory trees with the same rules as the real applier (expected
states checked, parents must exist, directories removed only when empty, content read from the
other side's source path with the expected digest), so the properties hold for what the engine
would really do.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbd.sync.agent.paths import path_problem
from nbd.sync.reconcile import Change, DeleteGuard, Plan, conflict_name, reconcile, settle
from nbd.sync.snapshot import DIR, Entry, PathIndex, Snapshot, parent_of, symlink_escapes, without

STAMP = "20261125T201530Z"


def F(content: str, executable: bool = False) -> Entry:
    return Entry("file", "d" + content, len(content), executable)


def L(target: str) -> Entry:
    return Entry("symlink", target=target)


def _apply_side(changes: list[Change], target: Snapshot, source: Snapshot) -> list[Change]:
    failed = []
    for c in Plan.ordered(changes):
        cur = target.get(c.path)
        if cur != c.old:
            failed.append(c)
            continue
        parent = parent_of(c.path)
        if c.new is None:
            if cur is not None and cur.is_dir and any(True for _ in PathIndex(target).descendants(c.path)):
                failed.append(c)
                continue
            del target[c.path]
            continue
        if parent and target.get(parent) != DIR:
            failed.append(c)
            continue
        if c.needs_content and source.get(c.source) != c.new:
            # The source must hold exactly that content (kind and digest; the mode travels along).
            s = source.get(c.source)
            if s is None or s.kind != "file" or s.digest != c.new.digest:
                failed.append(c)
                continue
        target[c.path] = c.new
    return failed


def simulate(plan: Plan, local: Snapshot, remote: Snapshot) -> tuple[Snapshot, Snapshot, list[Change]]:
    lo, re = dict(local), dict(remote)
    for m in plan.remote_moves:
        if re.get(m.path) != m.expected or m.dest in re:
            continue
        sub = PathIndex(re).subtree(m.path)
        for p in sub:
            del re[p]
        for p, e in sub.items():
            re[m.dest + p[len(m.path) :]] = e
    failed = _apply_side(plan.to_local, lo, re)
    failed += _apply_side(plan.to_remote, re, lo)
    return lo, re, failed


def cycle(
    ancestor: Snapshot, local: Snapshot, remote: Snapshot, guard: DeleteGuard | None = None
) -> tuple[Snapshot, Snapshot, Snapshot, Plan]:
    plan = reconcile(ancestor, local, remote, stamp=STAMP, guard=guard)
    lo, re, failed = simulate(plan, local, remote)
    assert failed == [], failed
    return settle(ancestor, lo, re), lo, re, plan


# --------------------------------------------------------------------------------------------
# Table-driven cases

A0: Snapshot = {"a.txt": F("1"), "d": DIR, "d/x": F("x"), "d/y": F("y")}

CASES: list[tuple[str, Snapshot, Snapshot, Snapshot, Callable[[Snapshot, Snapshot, Plan], None]]] = []


def case(
    name: str, ancestor: Snapshot, local: Snapshot, remote: Snapshot
) -> Callable[[Callable[[Snapshot, Snapshot, Plan], None]], None]:
    def register(check: Callable[[Snapshot, Snapshot, Plan], None]) -> None:
        CASES.append((name, ancestor, local, remote, check))

    return register


@case("local create propagates", {}, {"n": F("1")}, {})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re == {"n": F("1")} and not plan.conflicts


@case("remote modify propagates", A0, A0, {**A0, "a.txt": F("2")})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert lo["a.txt"] == F("2") and [c.action for c in plan.to_local] == ["modify"]


@case("local delete propagates", A0, {k: v for k, v in A0.items() if k != "a.txt"}, A0)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert "a.txt" not in re


@case("same change on both sides is a no-op", A0, {**A0, "a.txt": F("2")}, {**A0, "a.txt": F("2")})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert plan.empty and lo["a.txt"] == F("2")


@case("conflict keeps both, local wins the name", A0, {**A0, "a.txt": F("L")}, {**A0, "a.txt": F("R")})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    copy = f"a.conflict-remote-{STAMP}.txt"
    assert lo["a.txt"] == re["a.txt"] == F("L")
    assert lo[copy] == re[copy] == F("R")
    assert [(c.path, c.copy_path) for c in plan.conflicts] == [("a.txt", copy)]


@case("both created differently without ancestor is a conflict", {}, {"n.ipynb": F("L")}, {"n.ipynb": F("R")})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert lo["n.ipynb"] == F("L") and lo[f"n.conflict-remote-{STAMP}.ipynb"] == F("R")


@case(
    "modify beats delete (local deleted, remote modified)",
    A0,
    {k: v for k, v in A0.items() if k != "a.txt"},
    {**A0, "a.txt": F("2")},
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert lo["a.txt"] == re["a.txt"] == F("2") and not plan.conflicts


@case(
    "modify beats delete (remote deleted, local modified)",
    A0,
    {**A0, "a.txt": F("2")},
    {k: v for k, v in A0.items() if k != "a.txt"},
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re["a.txt"] == F("2")


@case(
    "deleted dir: unchanged children go, a modified child stays",
    A0,
    {"a.txt": F("1")},
    {**A0, "d/y": F("y2"), "d/z": F("z")},
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert lo == re == {"a.txt": F("1"), "d": DIR, "d/y": F("y2"), "d/z": F("z")}


@case("deleted dir with nothing new goes on both sides", A0, {"a.txt": F("1")}, A0)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re == {"a.txt": F("1")}


@case(
    "dir replaced by a file, other side untouched: dir contents go", A0, {"a.txt": F("1"), "d": F("file")}, A0
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re == {"a.txt": F("1"), "d": F("file")}


@case(
    "dir replaced by a file locally, remote added inside: remote dir kept aside",
    A0,
    {"a.txt": F("1"), "d": F("file")},
    {**A0, "d/new": F("n")},
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    copy = f"d.conflict-remote-{STAMP}"
    assert lo == re
    assert lo["d"] == F("file") and lo[copy + "/new"] == F("n") and lo[copy + "/x"] == F("x")


@case(
    "dir replaced by a file remotely, local modified inside: local dir wins the name",
    A0,
    {**A0, "d/x": F("x2")},
    {"a.txt": F("1"), "d": F("file")},
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert (
        lo == re and lo["d"] == DIR and lo["d/x"] == F("x2") and lo[f"d.conflict-remote-{STAMP}"] == F("file")
    )


@case(
    "file replaced by a dir on one side propagates",
    A0,
    A0,
    {**{k: v for k, v in A0.items() if k != "a.txt"}, "a.txt": DIR, "a.txt/in": F("i")},
)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert lo["a.txt"] == DIR and lo["a.txt/in"] == F("i")


@case("executable bit change propagates without content", A0, {**A0, "a.txt": F("1", True)}, A0)
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re["a.txt"].executable and not plan.to_remote[0].needs_content


@case("symlink change propagates", {"l": L("a")}, {"l": L("b")}, {"l": L("a")})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re["l"] == L("b")


@case("empty remote (new pod) is refilled, not propagated as deletions", A0, A0, {})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert re == A0 and lo == A0 and plan.refilled == "remote"


@case("empty local is refilled from the pod", A0, {}, {**A0, "new": F("n")})
def _(lo: Snapshot, re: Snapshot, plan: Plan) -> None:
    assert lo == {**A0, "new": F("n")} and plan.refilled == "local"


@pytest.mark.parametrize("name,ancestor,local,remote,check", CASES, ids=[c[0] for c in CASES])
def test_case(
    name: str,
    ancestor: Snapshot,
    local: Snapshot,
    remote: Snapshot,
    check: Callable[[Snapshot, Snapshot, Plan], None],
) -> None:
    new_ancestor, lo, re, plan = cycle(ancestor, local, remote)
    check(lo, re, plan)
    assert lo == re, "both sides converge"
    again = reconcile(new_ancestor, lo, re, stamp=STAMP)
    assert again.empty, "a second cycle is a no-op"


def test_delete_guard_halts_mass_deletion() -> None:
    ancestor = {f"f{i}": F(str(i)) for i in range(100)}
    local = {f"f{i}": F(str(i)) for i in range(30)}
    plan = reconcile(ancestor, local, ancestor, stamp=STAMP, guard=DeleteGuard(0.5, 20))
    assert "delete 70 of 100 files on the remote side" in plan.halt_reason
    forced = reconcile(ancestor, local, ancestor, stamp=STAMP, guard=None)
    assert not forced.halt_reason and len(forced.to_remote) == 70


def test_delete_guard_lets_small_deletions_through() -> None:
    ancestor = {f"f{i}": F(str(i)) for i in range(10)}
    plan = reconcile(ancestor, {}, {"f0": F("0")} | {}, stamp=STAMP, guard=DeleteGuard(0.5, 20))
    assert not plan.halt_reason


def test_changes_carry_expected_state() -> None:
    plan = reconcile(A0, A0, {**A0, "a.txt": F("2")}, stamp=STAMP)
    (change,) = plan.to_local
    assert change.old == F("1") and change.new == F("2") and change.source == "a.txt"


def test_refused_change_keeps_ancestor_for_replanning() -> None:
    plan = reconcile(A0, A0, {**A0, "a.txt": F("2")}, stamp=STAMP)
    # The local file changed after the scan: the applier refuses, nothing lands.
    local_now = {**A0, "a.txt": F("3")}
    lo, re, failed = simulate(plan, local_now, {**A0, "a.txt": F("2")})
    assert len(failed) == 1
    new_ancestor = settle(A0, lo, re)
    assert new_ancestor["a.txt"] == F("1")
    # The next cycle sees both changed: a conflict, nothing lost.
    _, lo2, re2, plan2 = cycle(new_ancestor, lo, re)
    assert plan2.conflicts and lo2 == re2


@pytest.mark.parametrize(
    "path,name",
    [
        ("a/notebook.ipynb", f"a/notebook.conflict-remote-{STAMP}.ipynb"),
        (".env", f".env.conflict-remote-{STAMP}"),
        ("Makefile", f"Makefile.conflict-remote-{STAMP}"),
        ("x.tar.gz", f"x.tar.conflict-remote-{STAMP}.gz"),
    ],
)
def test_conflict_name(path: str, name: str) -> None:
    assert conflict_name(path, STAMP, set()) == name


def test_conflict_name_avoids_taken_names() -> None:
    first = conflict_name("a.txt", STAMP, set())
    assert conflict_name("a.txt", STAMP, {first}) == f"a.conflict-remote-{STAMP}-2.txt"


@pytest.mark.parametrize(
    "path,ok",
    [
        ("a", True),
        ("a/b.c", True),
        ("", False),
        ("/etc/passwd", False),
        ("../x", False),
        ("a/../b", False),
        ("a//b", False),
        ("./a", False),
        ("a/", False),
        ("a\x00b", False),
    ],
)
def test_path_problem(path: str, ok: bool) -> None:
    assert (path_problem(path) is None) == ok


@pytest.mark.parametrize(
    "path,target,escapes",
    [
        ("l", "a", False),
        ("d/l", "../a", False),
        ("d/l", "../../a", True),
        ("l", "/etc/passwd", True),
        ("l", "..", True),
        ("d/e/l", "../../x/y", False),
        ("l", "", True),
    ],
)
def test_symlink_escapes(path: str, target: str, escapes: bool) -> None:
    assert symlink_escapes(path, target) == escapes


def test_without_removes_subtrees() -> None:
    assert without(A0, {"d"}) == {"a.txt": F("1")}


# --------------------------------------------------------------------------------------------
# Property tests over random histories

NAMES = ["a", "b", "c.txt"]
CONTENTS = ["1", "2", "3"]

path_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
op_st = st.one_of(
    st.tuples(st.just("write"), path_st, st.sampled_from(CONTENTS), st.booleans()),
    st.tuples(st.just("mkdir"), path_st, st.just(""), st.just(False)),
    st.tuples(st.just("delete"), path_st, st.just(""), st.just(False)),
    st.tuples(st.just("link"), path_st, st.sampled_from(NAMES), st.just(False)),
)


def mutate(tree: Snapshot, ops: list[tuple[str, str, str, bool]]) -> Snapshot:
    """Apply file-system-like operations; an impossible one (a parent is a file) is skipped."""
    t = dict(tree)
    for op, path, arg, flag in ops:
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if op == "delete":
            t = without(t, {path})
            continue
        if any(p in t and not t[p].is_dir for p in parents):
            continue
        for p in parents:
            t[p] = DIR
        if op == "mkdir":
            if path not in t:
                t[path] = DIR
            continue
        t = without(t, {path})  # the new node replaces whatever was there
        t[path] = F(arg, flag) if op == "write" else L(arg)
    return t


history = st.lists(op_st, max_size=8)


def versions(snapshot: Snapshot, ancestor: Snapshot) -> set[tuple[str, str]]:
    """Content a side holds that the ancestor did not have at that path (unseen by the other)."""
    out = set()
    for p, e in snapshot.items():
        if e.kind == "file" and ancestor.get(p) != e:
            out.add(("file", e.digest))
        if e.kind == "symlink" and ancestor.get(p) != e:
            out.add(("symlink", e.target))
    return out


def contents(snapshot: Snapshot) -> set[tuple[str, str]]:
    return {
        ("file", e.digest) if e.kind == "file" else ("symlink", e.target)
        for e in snapshot.values()
        if not e.is_dir
    }


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=history, local_ops=history, remote_ops=history)
def test_properties_over_random_histories(base: list, local_ops: list, remote_ops: list) -> None:  # type: ignore[type-arg]
    ancestor = mutate({}, base)
    local, remote = mutate(ancestor, local_ops), mutate(ancestor, remote_ops)
    new_ancestor, lo, re, plan = cycle(ancestor, local, remote)
    # Both sides converge (conflict copies included).
    assert lo == re
    # No version that existed at the cycle is lost: new content on either side survives somewhere.
    kept = contents(lo)
    for v in versions(local, ancestor) | versions(remote, ancestor):
        assert v in kept, v
    # A side without changes ends up exactly like the other side was.
    if local == ancestor and remote:
        assert lo == remote
    if remote == ancestor and local:
        assert re == local
    # A second cycle is a no-op and the ancestor is the agreed state.
    assert new_ancestor == lo
    assert reconcile(new_ancestor, lo, re, stamp=STAMP).empty


@settings(max_examples=200, deadline=None)
@given(base=history, rounds=st.lists(st.tuples(history, history), min_size=1, max_size=4))
def test_properties_over_several_cycles(base: list, rounds: list) -> None:  # type: ignore[type-arg]
    ancestor = mutate({}, base)
    local = remote = ancestor
    for i, (local_ops, remote_ops) in enumerate(rounds):
        local, remote = mutate(local, local_ops), mutate(remote, remote_ops)
        before = versions(local, ancestor) | versions(remote, ancestor)
        plan = reconcile(ancestor, local, remote, stamp=f"{STAMP}{i}", guard=None)
        local, remote, failed = simulate(plan, local, remote)
        assert not failed
        ancestor = settle(ancestor, local, remote)
        assert local == remote
        assert before <= contents(local)


def _diff_roots(ancestor: Snapshot, *sides: Snapshot) -> list[str]:
    from nbd.sync.snapshot import minimal_roots

    changed = set()
    for side in sides:
        for p in set(ancestor) | set(side):
            if ancestor.get(p) != side.get(p):
                changed.add(p)
    return minimal_roots(changed)


@settings(max_examples=400, deadline=None)
@given(base=history, local_ops=history, remote_ops=history)
def test_reconciling_only_changed_subtrees_plans_the_same(
    base: list, local_ops: list, remote_ops: list
) -> None:  # type: ignore[type-arg]
    """The session reconciles only the subtrees its watchers reported; outside them both sides
    equal the ancestor, so the plan must be the one a full reconcile makes."""
    from nbd.sync.snapshot import restrict

    ancestor = mutate({}, base)
    local, remote = mutate(ancestor, local_ops), mutate(ancestor, remote_ops)
    if ancestor and (not local or not remote):
        return  # the refill rule needs whole trees: the session reconciles everything then
    full = reconcile(ancestor, local, remote, stamp=STAMP, guard=None)
    roots = _diff_roots(ancestor, local, remote)
    scoped = reconcile(
        restrict(ancestor, roots),
        restrict(local, roots),
        restrict(remote, roots),
        stamp=STAMP,
        guard=None,
        refill=False,
    )
    assert sorted(map(repr, full.to_local)) == sorted(map(repr, scoped.to_local))
    assert sorted(map(repr, full.to_remote)) == sorted(map(repr, scoped.to_remote))
    assert full.remote_moves == scoped.remote_moves
    assert [c.path for c in full.conflicts] == [c.path for c in scoped.conflicts]


def test_scoped_guard_counts_the_whole_ancestor() -> None:
    ancestor = (
        {f"f{i}": F(str(i)) for i in range(100)} | {"d": DIR} | {f"d/x{i}": F(f"x{i}") for i in range(30)}
    )
    local = {k: v for k, v in ancestor.items() if not k.startswith("d")}
    from nbd.sync.snapshot import restrict

    plan = reconcile(
        restrict(ancestor, ["d"]),
        restrict(local, ["d"]),
        restrict(ancestor, ["d"]),
        stamp=STAMP,
        refill=False,
        ancestor_files=130,
        guard=DeleteGuard(0.5, 20),
    )
    assert not plan.halt_reason and len(plan.to_remote) == 31
    alone = reconcile(
        restrict(ancestor, ["d"]),
        restrict(local, ["d"]),
        restrict(ancestor, ["d"]),
        stamp=STAMP,
        refill=False,
        guard=DeleteGuard(0.5, 20),
    )
    assert alone.halt_reason  # without the whole count, 30 of 30 files would look like a mass deletion
