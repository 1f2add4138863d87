"""`.dockerignore` semantics, exactly as Docker's builders apply them, as a pure matcher.

Why this exists: what goes into the image must be what `docker build` would have sent from the same
directory, so a project that builds locally builds the same way in the cluster. The rules follow
moby/patternmatcher (how each pattern matches one path) and BuildKit's fsutil walker (how the
patterns combine along a directory walk):

- reading: a line starting with `#` is a comment; lines are trimmed; blank lines are skipped; a
  leading `!` marks an exception (re-inclusion); the rest is cleaned with Go's `filepath.Clean` and a
  leading `/` is dropped (so `/foo` and `foo` are the same pattern, relative to the context root);
- one pattern against one path: `*` is any run of characters except `/`, `?` one character except
  `/`, `**` any number of directories (zero included), `[...]` a character class, `\\` escapes the
  next character; a pattern also matches everything beneath a path it matches;
- combining: patterns are applied in order and the last one that matches decides (an exclusion
  pattern excludes, an exception re-includes). Along a walk, what a parent directory matched is
  inherited by its children (BuildKit's `MatchesUsingParentResults`).

Nothing here does I/O; `nbd.context.walk` drives the matcher over a real directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "IgnorePatternError",
    "Pattern",
    "PatternMatcher",
    "MatchInfo",
    "go_clean",
    "parse_dockerignore",
]

_UTF8_BOM: Final = "\ufeff"
# Characters that mean something in a regular expression but nothing in a Go filepath pattern.
_REGEX_ESCAPE: Final = frozenset(".+()|{}$")
_WILDCARDS: Final = frozenset("*?[\\")


class IgnorePatternError(ValueError):
    """A pattern Docker would refuse (e.g. an unclosed `[` or a lone `!`)."""


def go_clean(path: str) -> str:
    """Go's `path/filepath.Clean` for `/`-separated paths (lexical, no filesystem access).

    Unlike `posixpath.normpath` it maps "" to ".", collapses a leading "//" and drops ".." above
    the root of an absolute path.
    """
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def parse_dockerignore(text: str) -> list[str]:
    """The patterns of a `.dockerignore` file, normalised as Docker's reader does.

    Exceptions keep their leading `!`. The result feeds `PatternMatcher`.
    """
    patterns: list[str] = []
    for number, raw in enumerate(text.splitlines()):
        line = raw.removeprefix(_UTF8_BOM) if number == 0 else raw
        # A comment is recognised before trimming: " # x" is a pattern, as in Docker.
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _check_syntax(pattern: str) -> None:
    """Rejects what Go's `filepath.Match` calls a bad pattern (unclosed class, dangling escape in a class)."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            first = True
            while True:
                if i >= n:
                    raise IgnorePatternError(f"syntax error in pattern {pattern!r}: unclosed '['")
                if pattern[i] == "]":
                    if first:
                        raise IgnorePatternError(f"syntax error in pattern {pattern!r}: empty '[]'")
                    break
                if pattern[i] == "\\":
                    i += 1
                    if i >= n:
                        raise IgnorePatternError(f"syntax error in pattern {pattern!r}: dangling '\\'")
                first = False
                i += 1
        elif ch == "]":
            pass
        i += 1


_EXACT, _PREFIX, _SUFFIX, _REGEXP = range(4)


@dataclass
class Pattern:
    """One compiled pattern.

    Attributes:
        text: The cleaned pattern without its `!`.
        exclusion: True for an exception (`!pattern`): a match re-includes the path.
    """

    text: str
    exclusion: bool
    _kind: int = field(default=_EXACT, repr=False)
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    @property
    def has_wildcards(self) -> bool:
        return any(ch in _WILDCARDS for ch in self.text)

    def matches(self, path: str) -> bool:
        """Whether this pattern matches `path` itself (parents are the matcher's business)."""
        kind = self._kind
        if kind == _EXACT:
            return path == self.text
        if kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            # "**/foo" matches "foo" at the root.
            return suffix.startswith("/") and path == suffix[1:]
        assert self._regex is not None
        return self._regex.fullmatch(path) is not None


def _compile(text: str, exclusion: bool) -> Pattern:
    """Translates a cleaned pattern the way moby/patternmatcher does (including its match kinds)."""
    out: list[str] = []
    kind = _EXACT
    i, n = 0, len(text)
    index = 0
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i >= n:
                    # A trailing "**" accepts everything below.
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        out.append(".*")
                        kind = _REGEXP
                else:
                    out.append("(.*/)?")
                    kind = _REGEXP
                if index == 0:
                    kind = _SUFFIX
            else:
                out.append("[^/]*")
                kind = _REGEXP
        elif ch == "?":
            out.append("[^/]")
            kind = _REGEXP
        elif ch in _REGEX_ESCAPE:
            out.append("\\" + ch)
        elif ch == "\\":
            # Go appends the escape and the next character verbatim; a trailing one stays literal.
            if i < n:
                out.append("\\" + text[i])
                i += 1
            else:
                out.append("\\\\")
        elif ch == "[" or ch == "]":
            out.append(ch)
            kind = _REGEXP
        else:
            # Every other character means the same to Go's and Python's regular expressions.
            out.append(ch)
        index += 1
    regex: re.Pattern[str] | None = None
    if kind == _REGEXP:
        try:
            regex = re.compile("".join(out) + "(/.*)?", re.DOTALL | re.ASCII)
        except re.error as e:
            raise IgnorePatternError(f"syntax error in pattern {text!r}: {e}") from e
    return Pattern(text=text, exclusion=exclusion, _kind=kind, _regex=regex)


@dataclass(frozen=True)
class MatchInfo:
    """What a directory matched, per pattern, for its children to inherit.

    The empty MatchInfo means "no information": the path's parents are then matched one by one.
    """

    parent_matched: tuple[bool, ...] = ()


EMPTY_MATCH_INFO: Final = MatchInfo()


class PatternMatcher:
    """An ordered list of patterns; the last matching pattern decides.

    Raises:
        IgnorePatternError: a pattern is malformed (as Docker would refuse it).
    """

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = go_clean(text)
            exclusion = False
            if text.startswith("!"):
                if len(text) == 1:
                    raise IgnorePatternError('illegal exclusion pattern: "!"')
                exclusion = True
                text = text[1:]
            _check_syntax(text)
            self.patterns.append(_compile(text, exclusion))
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches_or_parent_matches(self, path: str) -> bool:
        """Whether `path` is excluded, checking each pattern against the path and its ancestors."""
        excluded, _ = self.matches_using_parent_results(path, EMPTY_MATCH_INFO)
        return excluded

    def matches_using_parent_results(self, path: str, parent: MatchInfo) -> tuple[bool, MatchInfo]:
        """Whether `path` is excluded, reusing what its parent directory matched.

        Invariant (BuildKit's walker): a pattern the parent matched counts as matched for the child;
        a pattern that was skipped for the parent (it could not change the parent's outcome) is
        checked against the child's own path only.
        """
        inherited = parent.parent_matched
        if inherited and len(inherited) != len(self.patterns):
            raise ValueError("MatchInfo from another matcher")
        matched = False
        record: list[bool] = [False] * len(self.patterns)
        ancestors: list[str] | None = None
        for i, pattern in enumerate(self.patterns):
            match = inherited[i] if inherited else False
            if not match:
                # An exclusion cannot change an unmatched path, an inclusion cannot change a matched one.
                if pattern.exclusion != matched:
                    continue
                match = pattern.matches(path)
                if not match and not inherited:
                    if ancestors is None:
                        ancestors = _ancestors(path)
                    for ancestor in ancestors:
                        if pattern.matches(ancestor):
                            match = True
                            break
            record[i] = match
            if match:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(record))

    def may_reinclude_below(self, directory: str) -> bool:
        """Whether some exception might re-include a path strictly below an excluded `directory`.

        False only when provably nothing below can come back, so the walk may skip the directory;
        True means the walk must descend (the per-path decision stays exact either way).
        """
        prefix = directory + "/"
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            if pattern.has_wildcards:
                return True
            if (pattern.text + "/").startswith(prefix):
                return True
            if pattern.text == directory or directory.startswith(pattern.text + "/"):
                return True
        return False


def _ancestors(path: str) -> list[str]:
    """ "a/b/c" -> ["a", "a/b"] (the root-level path has none)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: k + 1]) for k in range(len(parts))]
