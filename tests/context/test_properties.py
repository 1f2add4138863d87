"""Property tests: the walk (with its directory pruning) includes exactly what the matcher says."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbd.context import plan_context
from nbd.context.ignore import EMPTY_MATCH_INFO, PatternMatcher, parse_dockerignore

NAMES = ["a", "b", "ab", "x.md", "README.md", "tmp", "ü"]
COMPONENTS = ["a", "b", "*", "?", "**", "a*", "*.md", "[ab]", "README*", "tmp", "x.md", "ü"]

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join)
patterns = st.builds(
    lambda neg, lead, parts, trail: (
        ("!" if neg else "") + ("/" if lead else "") + "/".join(parts) + ("/" if trail else "")
    ),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3),
    st.booleans(),
)


def make_tree(root: Path, files: list[str]) -> set[str]:
    """Creates the files (a path that is a prefix of another becomes a directory); returns all paths."""
    files = sorted(set(files))
    dirs = {"/".join(f.split("/")[:k]) for f in files for k in range(1, f.count("/") + 1)}
    created: set[str] = set(dirs)
    for d in sorted(dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        if f in dirs:
            continue
        (root / f).write_text(f)
        created.add(f)
    return created


def reference(all_paths: set[str], matcher: PatternMatcher, forced: set[str]) -> set[str]:
    """No pruning: every path evaluated top-down; included paths pull in their ancestors."""
    infos = {"": EMPTY_MATCH_INFO}
    included: set[str] = set()
    for p in sorted(all_paths, key=lambda s: (s.count("/"), s)):
        excluded, infos[p] = matcher.matches_using_parent_results(p, infos[p.rpartition("/")[0]])
        if not excluded or p in forced:
            included.add(p)
    for p in list(included):
        parts = p.split("/")
        included.update("/".join(parts[:k]) for k in range(1, len(parts)))
    return included


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(paths, min_size=1, max_size=12), st.data())
def test_walk_includes_exactly_what_the_matcher_includes(files: list[str], data: st.DataObject) -> None:
    # Half the patterns name paths of the tree (or their parents), so that excluded directories
    # with exceptions below them, the case where the walk must not prune, come up often.
    prefixes = sorted({"/".join(f.split("/")[:k]) for f in files for k in range(1, f.count("/") + 2)})
    literal = st.builds(lambda neg, p: ("!" if neg else "") + p, st.booleans(), st.sampled_from(prefixes))
    pats = data.draw(st.lists(st.one_of(patterns, literal), max_size=5))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        all_paths = make_tree(root, files)
        (root / "Dockerfile").write_text("FROM x\n")
        (root / ".dockerignore").write_text("\n".join(pats) + "\n")
        all_paths |= {"Dockerfile", ".dockerignore"}
        plan = plan_context(root)
        got = {e.path for e in plan.entries}
        matcher = PatternMatcher(parse_dockerignore("\n".join(pats)))
        assert got == reference(all_paths, matcher, {"Dockerfile", ".dockerignore"})
        # Archive order: bytewise by tar name (directories carry a trailing slash).
        keys = [os.fsencode(e.path) + (b"/" if e.kind == 1 else b"") for e in plan.entries]
        assert keys == sorted(keys)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(paths, min_size=1, max_size=20),
    st.lists(patterns.filter(lambda p: not p.startswith("!")), max_size=5),
)
def test_without_exceptions_a_path_is_excluded_iff_it_or_a_parent_matches(
    files: list[str], pats: list[str]
) -> None:
    matcher = PatternMatcher(parse_dockerignore("\n".join(pats)))
    infos = {"": EMPTY_MATCH_INFO}
    all_paths = {"/".join(f.split("/")[:k]) for f in files for k in range(1, f.count("/") + 2)}
    for p in sorted(all_paths, key=lambda s: (s.count("/"), s)):
        excluded, infos[p] = matcher.matches_using_parent_results(p, infos[p.rpartition("/")[0]])
        assert excluded == matcher.matches_or_parent_matches(p)
        if excluded:
            # Everything below an excluded path is excluded too.
            for q in all_paths:
                if q.startswith(p + "/"):
                    assert matcher.matches_or_parent_matches(q)
