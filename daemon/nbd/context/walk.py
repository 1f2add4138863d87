"""The walk: what of a directory goes into the build context, as a sorted list of entries.

This is the planning half of packaging. It reads only directory listings, `lstat` results, symlink
targets and the ignore file, never file contents, so it is also the whole cost of the "unchanged
directory" check. The resulting `ContextPlan` is plain data; `nbd.context.pack` turns it into bytes.

Rules (Docker's, see `nbd.context.ignore`):
- `.dockerignore` at the root (or `<Dockerfile>.dockerignore` beside the Dockerfile, which BuildKit
  prefers) decides what is left out; an excluded directory is not entered unless an exception could
  re-include something below it, in which case it is entered and appears in the archive only when
  something below it is included;
- the Dockerfile and the ignore file in use are always included, as the builder receives them;
- symlinks are recorded as links, never followed (a target outside the directory is noted);
  sockets, FIFOs and devices are skipped with a warning;
- an unreadable directory that is not excluded is an error naming it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import BadIgnoreFile, ContextError, MissingDockerfile, UnreadableFile
from .ignore import EMPTY_MATCH_INFO, IgnorePatternError, MatchInfo, PatternMatcher, parse_dockerignore

__all__ = [
    "Entry",
    "ContextPlan",
    "FILE",
    "DIR",
    "SYMLINK",
    "plan_context",
    "walk_context",
    "sort_plan",
    "ignore_file_for",
]

FILE = 0
DIR = 1
SYMLINK = 2

_ROOT_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# Below the root a directory swapped for a symlink since the listing is not followed.
_DIR_FLAGS = _ROOT_FLAGS | getattr(os, "O_NOFOLLOW", 0)


class Entry(NamedTuple):
    """One member of the context.

    `path` is relative to the root, `/`-separated, without a trailing slash. `size` is 0 for
    directories and symlinks; `link` is the symlink target ("" otherwise). `mode` is the full
    st_mode of a file (0 for directories and symlinks, whose archived modes are fixed); `mtime_ns`
    (0 unless a file) and `ino` serve only the unchanged-directory check, never the archive.
    """

    path: str
    kind: int
    size: int
    mode: int
    mtime_ns: int
    ino: int
    link: str


@dataclass
class ContextPlan:
    """The result of a walk: everything needed to write the archive, nothing read yet.

    Attributes:
        root: The absolute, resolved context directory.
        dockerfile: The Dockerfile path relative to root.
        ignore_file: The ignore file in use, relative to root ("" when there is none).
        ignore_text: Its contents ("" when there is none).
        entries: Members in archive order (bytewise by tar name).
        warnings: One line per skipped special file or symlink pointing outside the directory, for
            a person to read.
        links_outside: The relative paths of the symlinks whose target is outside the directory
            (each also has a warning); the cluster's build cannot unpack such a link.
        started_ns: time.time_ns() when the walk began (for the manifest's racy-timestamp rule).
        sorted: Whether `entries` are in archive order yet (`sort_plan`).
    """

    root: str
    dockerfile: str
    ignore_file: str
    ignore_text: str
    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)
    links_outside: list[str] = field(default_factory=list)
    started_ns: int = 0
    sorted: bool = False

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind == FILE)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def ignore_file_for(root: str, dockerfile: str) -> str:
    """The ignore file BuildKit would use: `<Dockerfile>.dockerignore` if present, else `.dockerignore`."""
    specific = dockerfile + ".dockerignore"
    if os.path.isfile(os.path.join(root, specific)):
        return specific
    return ".dockerignore"


def _tar_key(entry: Entry) -> bytes:
    name = os.fsencode(entry.path)
    return name + b"/" if entry.kind == DIR else name


def _check_dockerfile(root: str, dockerfile: str) -> str:
    cleaned = os.path.normpath(dockerfile).replace(os.sep, "/")
    if os.path.isabs(dockerfile) or cleaned == ".." or cleaned.startswith("../"):
        raise ContextError(
            f"the Dockerfile {dockerfile!r} must be a path inside {root}; move it into the directory",
            path=dockerfile,
            reason="DockerfileOutsideContext",
        )
    full = os.path.join(root, cleaned)
    if not os.path.isfile(full):
        name = "a Dockerfile" if cleaned == "Dockerfile" else f"a {cleaned}"
        raise MissingDockerfile(
            f"{root} has no {cleaned}; add {name} or launch a prebuilt image with --image",
            path=full,
        )
    return cleaned


def plan_context(root: str | os.PathLike[str], dockerfile: str = "Dockerfile") -> ContextPlan:
    """Walks `root` and returns what goes into the build context (pure result, no contents read).

    Raises:
        ContextError: root is not a directory, or a directory that is not excluded cannot be read.
        MissingDockerfile: there is no Dockerfile (checked before anything else).
        BadIgnoreFile: the ignore file has a pattern Docker would refuse.
    """
    plan = walk_context(root, dockerfile)
    sort_plan(plan)
    return plan


def sort_plan(plan: ContextPlan) -> None:
    """Puts the entries in archive order: bytewise by tar name (directories end with "/")."""
    if not plan.sorted:
        plan.entries.sort(key=_tar_key)
        plan.sorted = True


def walk_context(root: str | os.PathLike[str], dockerfile: str = "Dockerfile") -> ContextPlan:
    """`plan_context` without the final sort: entries in walk order (enough for the manifest digest).

    Raises:
        ContextError: root is not a directory, or a directory that is not excluded cannot be read.
        MissingDockerfile: there is no Dockerfile (checked before anything else).
        BadIgnoreFile: the ignore file has a pattern Docker would refuse.
    """
    started_ns = time.time_ns()
    root_s = os.path.realpath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise ContextError(f"{root_s} is not a directory; pass the project directory with -d", path=root_s)
    dockerfile = _check_dockerfile(root_s, dockerfile)
    ignore_file = ignore_file_for(root_s, dockerfile)
    ignore_text = ""
    try:
        with open(os.path.join(root_s, ignore_file), "rb") as f:
            ignore_text = f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        ignore_file = ""
    except OSError as e:
        raise UnreadableFile(
            f"cannot read {os.path.join(root_s, ignore_file)}: {e.strerror}; fix its permissions",
            path=os.path.join(root_s, ignore_file),
        ) from e
    try:
        matcher = PatternMatcher(parse_dockerignore(ignore_text))
    except IgnorePatternError as e:
        raise BadIgnoreFile(
            f"{os.path.join(root_s, ignore_file)}: {e}; fix the pattern",
            path=os.path.join(root_s, ignore_file),
        ) from e

    # Always sent, whatever the patterns say; their parents must be entered to reach them.
    forced = {dockerfile} | ({ignore_file} if ignore_file else set())
    forced_parents: set[str] = set()
    for path in forced:
        parts = path.split("/")[:-1]
        forced_parents.update("/".join(parts[: k + 1]) for k in range(len(parts)))

    entries: list[Entry] = []
    warnings: list[str] = []
    links_outside: list[str] = []
    # Excluded directories that were entered anyway; one is emitted once something below it is.
    held: dict[str, Entry] = {}
    emitted_held: set[str] = set()
    use_matcher = bool(matcher)
    append = entries.append
    # Entries are built without the NamedTuple's Python-level __new__ (one frame less per entry).
    new_entry = tuple.__new__
    root_prefix = root_s + "/" if root_s != "/" else "/"

    # Each stack item: (relative dir, its MatchInfo, whether it is an excluded directory held back).
    stack: list[tuple[str, MatchInfo, bool]] = [("", EMPTY_MATCH_INFO, False)]
    while stack:
        rel_dir, dir_info, dir_held = stack.pop()
        abs_dir = root_prefix + rel_dir if rel_dir else root_s
        # Listing through a directory descriptor makes every lstat/readlink below resolve one
        # name (fstatat) instead of the whole path again.
        try:
            dir_fd = os.open(abs_dir, _DIR_FLAGS if rel_dir else _ROOT_FLAGS)
            try:
                listing = os.scandir(dir_fd)
            except BaseException:
                os.close(dir_fd)
                raise
        except OSError as e:
            if dir_held:
                continue  # excluded anyway: an unreadable excluded directory is no error (as BuildKit)
            raise UnreadableFile(
                f"cannot read directory {abs_dir}: {e.strerror}; fix its permissions or add it to .dockerignore",
                path=abs_dir,
            ) from e
        try:
            with listing:
                for de in listing:
                    rel = rel_dir + "/" + de.name if rel_dir else de.name
                    info = EMPTY_MATCH_INFO
                    if use_matcher:
                        excluded, info = matcher.matches_using_parent_results(rel, dir_info)
                        if excluded and rel not in forced:
                            if de.is_dir(follow_symlinks=False) and (
                                rel in forced_parents or matcher.may_reinclude_below(rel)
                            ):
                                held[rel] = Entry(rel, DIR, 0, 0, 0, de.inode(), "")
                                stack.append((rel, info, True))
                            continue
                    # Only regular files need an lstat: the archive stores directories and
                    # symlinks with fixed modes and no times (d_type answers what they are).
                    try:
                        if de.is_file(follow_symlinks=False):
                            st = de.stat(follow_symlinks=False)
                            append(
                                new_entry(
                                    Entry, (rel, FILE, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ino, "")
                                )
                            )
                        elif de.is_dir(follow_symlinks=False):
                            append(new_entry(Entry, (rel, DIR, 0, 0, 0, de.inode(), "")))
                            stack.append((rel, info, False))
                        elif de.is_symlink():
                            target = os.readlink(de.name, dir_fd=dir_fd)
                            append(new_entry(Entry, (rel, SYMLINK, 0, 0, 0, de.inode(), target)))
                            if _points_outside(rel, target):
                                links_outside.append(rel)
                                warnings.append(
                                    f"{rel}: symlink to {target} points outside the directory; stored as a link"
                                )
                        else:
                            st = de.stat(follow_symlinks=False)
                            warnings.append(
                                f"{rel}: {_kind_name(st.st_mode)} skipped (only files, directories and symlinks are sent)"
                            )
                            continue
                    except FileNotFoundError:
                        continue  # removed since the listing
                    if dir_held:
                        _emit_parents(rel, held, emitted_held, append)
        finally:
            os.close(dir_fd)

    return ContextPlan(
        root=root_s,
        dockerfile=dockerfile,
        ignore_file=ignore_file,
        ignore_text=ignore_text,
        entries=entries,
        warnings=warnings,
        links_outside=links_outside,
        started_ns=started_ns,
    )


def _emit_parents(
    rel: str, held: dict[str, Entry], emitted: set[str], append: Callable[[Entry], None]
) -> None:
    """Emits the held (excluded but entered) ancestors of an included path, outermost first."""
    parent = rel.rpartition("/")[0]
    chain: list[str] = []
    while parent and parent in held and parent not in emitted:
        chain.append(parent)
        parent = parent.rpartition("/")[0]
    for path in reversed(chain):
        emitted.add(path)
        append(held[path])


def _points_outside(rel: str, target: str) -> bool:
    if os.path.isabs(target):
        return True
    depth = rel.count("/")
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part and part != ".":
            depth += 1
    return False


def _kind_name(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"
