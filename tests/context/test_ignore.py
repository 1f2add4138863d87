"""The .dockerignore matcher against Docker's documented examples and moby's edge cases."""

from __future__ import annotations

import pytest

from nbd.context.ignore import IgnorePatternError, PatternMatcher, go_clean, parse_dockerignore


def excluded_paths(dockerignore: str, paths: list[str]) -> set[str]:
    """Walk-order evaluation, as BuildKit does: each path inherits what its parent matched."""
    matcher = PatternMatcher(parse_dockerignore(dockerignore))
    infos = {}
    out: set[str] = set()
    for path in sorted(paths, key=lambda p: p.count("/")):
        parent = path.rpartition("/")[0]
        from nbd.context.ignore import EMPTY_MATCH_INFO

        excluded, info = matcher.matches_using_parent_results(path, infos.get(parent, EMPTY_MATCH_INFO))
        infos[path] = info
        if excluded:
            out.add(path)
    return out


# (dockerignore, all paths, paths that must be excluded) — docs.docker.com, "dockerignore file".
DOCKER_DOC_EXAMPLES = [
    pytest.param(
        "# comment\n*/temp*\n*/*/temp*\ntemp?\n",
        [
            "somedir",
            "somedir/temporary.txt",
            "somedir/temp",
            "somedir/subdir",
            "somedir/subdir/temporary.txt",
            "tempa",
            "tempb",
            "temp",
            "tempab",
            "temporary.txt",
            "a/b/c",
            "a/b/c/temp1",
        ],
        {"somedir/temporary.txt", "somedir/temp", "somedir/subdir/temporary.txt", "tempa", "tempb"},
        id="comment,*/temp*,*/*/temp*,temp?",
    ),
    pytest.param(
        "**/*.go\n",
        ["main.go", "cmd", "cmd/x.go", "cmd/a/b/y.go", "go.mod", "cmd/readme"],
        {"main.go", "cmd/x.go", "cmd/a/b/y.go"},
        id="**/*.go",
    ),
    pytest.param(
        "*.md\n!README.md\n",
        ["README.md", "CHANGES.md", "docs", "docs/guide.md", "docs/README.md"],
        {"CHANGES.md"},
        id="*.md,!README.md (subdirectories untouched)",
    ),
    pytest.param(
        "*.md\n!README*.md\nREADME-secret.md\n",
        ["README.md", "README-dev.md", "README-secret.md", "notes.md"],
        {"README-secret.md", "notes.md"},
        id="*.md,!README*.md,README-secret.md",
    ),
    pytest.param(
        "*.md\nREADME-secret.md\n!README*.md\n",
        ["README.md", "README-dev.md", "README-secret.md", "notes.md"],
        {"notes.md"},
        id="*.md,README-secret.md,!README*.md (last match wins)",
    ),
    pytest.param(
        "/foo/bar/\n",
        ["foo", "foo/bar", "foo/bar/x", "foo/baz"],
        {"foo/bar", "foo/bar/x"},
        id="leading and trailing slashes stripped",
    ),
    pytest.param(
        "foo/../bar\n./baz\n",
        ["foo", "bar", "baz", "foo/bar"],
        {"bar", "baz"},
        id="cleaned like filepath.Clean",
    ),
]


@pytest.mark.parametrize(("dockerignore", "paths", "expected"), DOCKER_DOC_EXAMPLES)
def test_docker_documented_examples(dockerignore: str, paths: list[str], expected: set[str]) -> None:
    assert excluded_paths(dockerignore, paths) == expected


# Single-pattern semantics (moby/patternmatcher), path → excluded?
PATTERN_CASES = [
    ("*", "a", True),
    ("*", "a/b", True),  # the parent matches
    ("a*", "a/b", True),
    ("*/b", "a/b", True),
    ("*/b", "a/c/b", False),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),  # ? never crosses /
    ("a*c", "a/c", False),  # * never crosses /
    ("**", "a/b/c", True),
    ("**/b", "b", True),  # ** matches zero directories
    ("**/b", "a/x/b", True),
    ("**/b", "ab", False),
    ("a/**", "a/b/c", True),
    ("a/**", "ab", False),
    ("a/**/c", "a/c", True),
    ("a/**/c", "a/x/y/c", True),
    ("a/**/c", "a/x/y/cd", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[^a]x", "bx", True),
    ("[^a]x", "ax", False),
    ("\\*x", "*x", False),  # moby quirk: an escape without wildcard is compared verbatim
    ("\\*x*", "*xy", True),
    ("a.b", "axb", False),  # . is literal
    ("a+b", "a+b", True),
    ("(x)", "(x)", True),
    ("foo", "foo/bar/baz", True),
    ("foo", "foobar", False),
    ("dir/", "dir/file", True),
    ("ü*", "über.txt", True),
]


@pytest.mark.parametrize(("pattern", "path", "excluded"), PATTERN_CASES)
def test_single_pattern(pattern: str, path: str, excluded: bool) -> None:
    matcher = PatternMatcher(parse_dockerignore(pattern))
    assert matcher.matches_or_parent_matches(path) is excluded


def test_exception_re_includes_below_an_excluded_directory() -> None:
    paths = ["docs", "docs/a.md", "docs/keep.md", "docs/sub", "docs/sub/keep.md"]
    assert excluded_paths("docs\n!docs/keep.md\n", paths) == {
        "docs",
        "docs/a.md",
        "docs/sub",
        "docs/sub/keep.md",
    }
    assert excluded_paths("docs\n!**/keep.md\n", paths) == {"docs", "docs/a.md", "docs/sub"}


def test_exception_order_matters() -> None:
    paths = ["docs", "docs/keep.md"]
    # An exception before the exclusion is overridden by it.
    assert excluded_paths("!docs/keep.md\ndocs\n", paths) == {"docs", "docs/keep.md"}


def test_parent_results_follow_buildkit_not_the_classic_builder() -> None:
    # BuildKit evaluates "!a" against "a" only if it could change the outcome for "a" (it could
    # not: "a" was not excluded), so "a/b" inherits no match from it and stays excluded. The
    # classic builder's MatchesOrParentMatches would re-include it.
    assert excluded_paths("a/b\n!a\n", ["a", "a/b"]) == {"a/b"}
    assert PatternMatcher(["a/b", "!a"]).matches_or_parent_matches("a/b") is False


@pytest.mark.parametrize(
    ("text", "patterns"),
    [
        ("# c\n\n  \nfoo\n", ["foo"]),
        ("\ufefffoo\n", ["foo"]),
        (" # not a comment\n", ["# not a comment"]),
        ("! foo \n", ["!foo"]),
        ("/\n", ["/"]),
        ("//a//b/\n", ["a/b"]),
        ("!/x\n", ["!x"]),
        ("a/./b/../c\n", ["a/c"]),
        ("..\n", [".."]),
        ("foo\r\nbar\r\n", ["foo", "bar"]),
    ],
)
def test_parse_dockerignore(text: str, patterns: list[str]) -> None:
    assert parse_dockerignore(text) == patterns


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [
        ("", "."),
        ("a//b", "a/b"),
        ("/../a", "/a"),
        ("a/../..", ".."),
        ("./", "."),
        ("//x", "/x"),
        ("a/b/./", "a/b"),
    ],
)
def test_go_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned


@pytest.mark.parametrize("bad", ["!", "[a", "a[", "[]a]", "x/[^"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(IgnorePatternError):
        PatternMatcher([bad])


def test_may_reinclude_below() -> None:
    m = PatternMatcher(["node_modules", "build", "!build/keep", "!x*/y"])
    assert m.may_reinclude_below("build") is True
    # A wildcard exception could reach anywhere: the walk must descend.
    assert m.may_reinclude_below("node_modules") is True
    plain = PatternMatcher(["node_modules", "build", "!build/keep"])
    assert plain.may_reinclude_below("node_modules") is False
    assert plain.may_reinclude_below("build") is True
    assert PatternMatcher(["a"]).may_reinclude_below("a") is False
