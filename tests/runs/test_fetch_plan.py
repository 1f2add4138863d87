"""The fetch plan: the run's outputs come in, and no local edit is ever overwritten or deleted."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbd.runs.fetching import Write, after_fetch, plan_fetch
from nbd.sync.snapshot import DIR, Entry


def f(content: str, executable: bool = False) -> Entry:
    return Entry("file", digest=f"sha-{content}", size=len(content), executable=executable)


STAMP = "20261203-100000"


@pytest.mark.parametrize(
    ("remote", "local", "fetched", "mkdirs", "writes", "same"),
    [
        # New outputs are written; their folders made first, parents before children.
        (
            {"m": DIR, "m/a": DIR, "m/a/w.pt": f("1"), "log.txt": f("l")},
            {},
            {},
            ("m", "m/a"),
            (Write("log.txt", "log.txt", f("l"), None), Write("m/a/w.pt", "m/a/w.pt", f("1"), None)),
            (),
        ),
        # Already identical: nothing to do.
        ({"x": f("1")}, {"x": f("1")}, {}, (), (), ("x",)),
        # Still what the last fetch wrote: the run's newer version replaces it.
        ({"x": f("2")}, {"x": f("1")}, {"x": f("1")}, (), (Write("x", "x", f("2"), f("1")),), ()),
        # Changed locally since it was fetched: kept, the run's version beside it.
        (
            {"x.txt": f("2")},
            {"x.txt": f("mine")},
            {"x.txt": f("1")},
            (),
            (Write("x.txt", f"x.conflict-run-{STAMP}.txt", f("2"), None, conflict=True),),
            (),
        ),
        # Made locally and never fetched: kept the same way.
        (
            {"x": f("2")},
            {"x": f("mine")},
            {},
            (),
            (Write("x", f"x.conflict-run-{STAMP}", f("2"), None, conflict=True),),
            (),
        ),
        # A local file where the run has a folder: the folder comes in under a conflict name.
        (
            {"d": DIR, "d/w": f("1")},
            {"d": f("mine")},
            {},
            (f"d.conflict-run-{STAMP}",),
            (Write("d/w", f"d.conflict-run-{STAMP}/w", f("1"), None, conflict=True),),
            (),
        ),
        # A local folder where the run has a file.
        (
            {"d": f("1")},
            {"d": DIR},
            {"d": f("0")},
            (),
            (Write("d", f"d.conflict-run-{STAMP}", f("1"), None, conflict=True),),
            (),
        ),
        # The executable bit is content: a chmod since the fetch is a local change.
        (
            {"run.sh": f("s")},
            {"run.sh": f("s", executable=True)},
            {"run.sh": f("s")},
            (),
            (Write("run.sh", f"run.conflict-run-{STAMP}.sh", f("s"), None, conflict=True),),
            (),
        ),
        # Local files the run does not have are left alone (never deleted).
        ({}, {"mine.txt": f("m")}, {"old": f("o")}, (), (), ()),
    ],
)
def test_plan(
    remote: dict[str, Entry],
    local: dict[str, Entry],
    fetched: dict[str, Entry],
    mkdirs: tuple[str, ...],
    writes: tuple[Write, ...],
    same: tuple[str, ...],
) -> None:
    plan = plan_fetch(remote, local, fetched, STAMP)
    assert plan.mkdirs == mkdirs
    assert tuple(sorted(plan.writes, key=lambda w: w.path)) == tuple(sorted(writes, key=lambda w: w.path))
    assert plan.same == same


def test_a_taken_conflict_name_gets_a_number() -> None:
    taken = f"x.conflict-run-{STAMP}.txt"
    plan = plan_fetch({"x.txt": f("2")}, {"x.txt": f("mine"), taken: f("old")}, {}, STAMP)
    assert [w.path for w in plan.writes] == [f"x.conflict-run-{STAMP}-2.txt"]


def test_the_record_keeps_what_was_fetched_and_never_a_conflict_copy() -> None:
    remote = {"a": f("1"), "b": f("2"), "c": f("3")}
    local = {"b": f("2"), "c": f("mine")}
    plan = plan_fetch(remote, local, {}, STAMP)
    written = {w.path: w.entry for w in plan.writes}
    record = after_fetch({"old": f("o")}, plan, remote, written)
    assert record == {"old": f("o"), "a": f("1"), "b": f("2")}


names = st.sampled_from(["a", "b", "c.txt", "d"])
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
contents = st.sampled_from(["0", "1", "2", "mine"])


def tree(draw: st.DrawFn) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for path in draw(st.lists(paths, max_size=8)):
        parts = path.split("/")
        # A path whose parent is a file cannot exist: keep trees well formed.
        if any(out.get("/".join(parts[:i]), DIR) != DIR for i in range(1, len(parts))):
            continue
        if path in out:
            continue
        for i in range(1, len(parts)):
            out["/".join(parts[:i])] = DIR
        out[path] = f(draw(contents)) if draw(st.booleans()) else DIR
    return out


trees = st.composite(tree)


@settings(max_examples=300, deadline=None)
@given(remote=trees(), local=trees(), fetched=trees())
def test_no_local_edit_is_overwritten_and_every_output_lands(
    remote: dict[str, Entry], local: dict[str, Entry], fetched: dict[str, Entry]
) -> None:
    plan = plan_fetch(remote, local, fetched, STAMP)
    targets = [w.path for w in plan.writes] + list(plan.mkdirs)
    # Every destination is new, except a local file that is exactly what the last fetch wrote.
    assert len(targets) == len(set(targets))
    for w in plan.writes:
        if w.path in local:
            assert w.expected == local[w.path] == fetched.get(w.path) and not w.conflict
            assert not local[w.path].is_dir
        else:
            assert w.expected is None
    for d in plan.mkdirs:
        assert d not in local or local[d].is_dir
    # Every file of the run lands somewhere: written, already there, or beside a local edit.
    landed = {w.source for w in plan.writes} | set(plan.same)
    assert {p for p, e in remote.items() if not e.is_dir} == landed
    # A folder is made before what goes in it.
    made: set[str] = set(local)
    for d in plan.mkdirs:
        parent = posixpath.dirname(d)
        assert not parent or parent in made or parent in {p for p in plan.mkdirs}
        made.add(d)
