"""One synchronised directory as the agent sees it: scanned, read and changed under guard.

`Tree` serves both sides: the agent's server runs one in the pod, and the daemon's
`LocalEndpoint` runs one over the local directory, so both sides scan, ignore, validate and write
with the same code.

Invariants `Tree` keeps whatever it is asked:
- every path is a valid sync path (`paths.check_path`), and no parent component is a symlink or a
  non-directory (checked with lstat at the time of the operation): nothing is ever written
  through a link;
- a write lands through a temp file in the same directory, made durable, then renamed
  (`durability`); it is refused when the target's current state is not the one the caller
  expects;
- a delete is refused when the target is not what the caller expects; directories are only ever
  removed when empty.

Entries travel in their wire form, `[path, kind, size, executable, digest, target]`; an
expectation is `[kind, digest, executable, target]`, or None for "absent".

Python 3.8 syntax, stdlib only (it runs in the pod, see the package docstring).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from .durability import Incoming, file_mode, syncfs, temp_path
from .ignore import RULE_FILES, IgnoreRules
from .paths import TEMP_PREFIX, Refused, check_path, failure_message

CHUNK = 1 << 20

# Wire form of an entry: [path, kind, size, executable, digest, target].
WireEntry = List[Any]


def _digest_file(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        while True:
            b = os.read(fd, CHUNK)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> int:
    """(size, mtime_ns, inode) packed exactly into one integer: a file whose key is unchanged
    is not read again. One int instead of a tuple of three saves memory on large trees."""
    mask = (1 << 64) - 1
    return ((st.st_size & mask) << 128) | ((st.st_ino & mask) << 64) | (st.st_mtime_ns & mask)


def _is_exec(mode: int) -> bool:
    return bool(mode & 0o100)


class _BatchScope(object):
    def __init__(self, tree: "Tree") -> None:
        self.tree = tree

    def __enter__(self) -> None:
        self.tree.checked_parents = set()

    def __exit__(self, *exc: Any) -> None:
        self.tree.checked_parents = None


class Tree:
    """One synchronised directory: scanning, reading and guarded writing below `root`."""

    def __init__(self, root: str, max_file_size: int = 0) -> None:
        self.root = os.path.abspath(root)
        self.max_file_size = max_file_size
        # path -> (stat key, digest): a file whose stat key is unchanged is not read again.
        self.cache: Dict[str, Tuple[int, str]] = {}
        self.rules = IgnoreRules()
        self.writes: Dict[int, Incoming] = {}
        self.checked_parents: Optional[Set[str]] = None
        # [path, size] of the files the last scan left out for being above `max_file_size`.
        self.large: List[List[Any]] = []
        umask = os.umask(0o022)
        os.umask(umask)
        self.umask = umask

    # -- paths

    def abspath(self, rel: str) -> str:
        """The absolute path for `rel`, after checking that no parent component is a symlink or a
        non-directory (lstat at call time; within one batch request, a parent checked once is
        trusted for the rest of that request — see `batch_scope`)."""
        parts = check_path(rel)
        checked = self.checked_parents
        if checked is not None and len(parts) > 1:
            parent = "/".join(parts[:-1])
            if parent in checked:
                return os.path.join(self.root, rel)
        cur = self.root
        for part in parts[:-1]:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                raise Refused("parent directory %r does not exist" % cur[len(self.root) + 1 :]) from None
            if stat.S_ISLNK(st.st_mode):
                raise Refused("refusing to go through the symbolic link %r" % cur[len(self.root) + 1 :])
            if not stat.S_ISDIR(st.st_mode):
                raise Refused("%r is not a directory" % cur[len(self.root) + 1 :])
        if checked is not None and len(parts) > 1:
            checked.add("/".join(parts[:-1]))
        return os.path.join(cur, parts[-1])

    def batch_scope(self) -> "_BatchScope":
        """Within this context, a parent directory verified once is not re-checked: one request
        of many files in a few directories costs a few lstat calls, not several per file. The
        window in which a parent could be swapped for a link is the request's duration."""
        return _BatchScope(self)

    # -- scanning

    def entry_of(
        self, rel: str, full: str, st: os.stat_result, problems: List[List[str]]
    ) -> Optional[WireEntry]:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return [rel, "dir", 0, False, "", ""]
        if stat.S_ISLNK(mode):
            try:
                return [rel, "symlink", 0, False, "", os.readlink(full)]
            except OSError as e:
                problems.append([rel, "cannot read symbolic link: %s" % e.strerror])
                return None
        if stat.S_ISREG(mode):
            if self.max_file_size and st.st_size > self.max_file_size:
                # Not a problem: a file left on its side by rule, reported with its size.
                self.large.append([rel, st.st_size])
                return None
            key = _stat_key(st)
            cached = self.cache.get(rel)
            if cached is not None and cached[0] == key:
                digest = cached[1]
            else:
                try:
                    digest = _digest_file(full)
                except OSError as e:
                    problems.append([rel, "cannot read file: %s" % (e.strerror or e)])
                    return None
                self.cache[rel] = (key, digest)
            return [rel, "file", st.st_size, _is_exec(mode), digest, ""]
        problems.append([rel, "not a regular file, directory or symbolic link; not synced"])
        return None

    def scan(self, paths: Optional[List[str]] = None) -> Dict[str, Any]:
        """Scan the whole tree, or only the subtrees at `paths` (absent ones are reported absent).

        Returns {"entries": [...], "absent": [...], "problems": [[path, message]], "large": [[path,
        size]], "rules": {path: text}}; a file above `max_file_size` is in "large" only. Ignored
        paths are pruned with the rules known so far (rule files are read as the walk meets them,
        like git).
        """
        entries: List[WireEntry] = []
        problems: List[List[str]] = []
        absent: List[str] = []
        self.large = []
        if paths is None:
            self.rules = IgnoreRules()
            self._walk("", entries, problems)
            live = set(e[0] for e in entries)
            for k in list(self.cache):
                if k not in live:
                    del self.cache[k]
        else:
            for rel in sorted(set(paths)):
                try:
                    full = self.abspath(rel)
                    st = os.lstat(full)
                except (Refused, FileNotFoundError, NotADirectoryError):
                    absent.append(rel)
                    continue
                except OSError as e:
                    problems.append([rel, "cannot stat: %s" % e.strerror])
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if self.rules.ignored_path(rel, is_dir):
                    absent.append(rel)
                    continue
                we = self.entry_of(rel, full, st, problems)
                if we is None:
                    absent.append(rel)
                    continue
                entries.append(we)
                if is_dir:
                    self._walk(rel, entries, problems)
        return {
            "entries": entries,
            "absent": absent,
            "problems": problems,
            "large": self.large,
            "rules": dict(self.rules.sources),
        }

    def _walk(self, top: str, entries: List[WireEntry], problems: List[List[str]]) -> None:
        stack = [top]
        while stack:
            rel_dir = stack.pop()
            full_dir = os.path.join(self.root, rel_dir) if rel_dir else self.root
            try:
                with os.scandir(full_dir) as it:
                    items = sorted(it, key=lambda d: d.name)
            except OSError as e:
                problems.append([rel_dir or ".", "cannot list directory: %s" % e.strerror])
                continue
            for d in items:
                if d.name in RULE_FILES:
                    rel = rel_dir + "/" + d.name if rel_dir else d.name
                    if rel not in self.rules.sources:
                        try:
                            if d.is_file(follow_symlinks=False):
                                with open(d.path, "r", encoding="utf-8", errors="replace") as f:
                                    self.rules.add_file(rel, f.read())
                        except OSError:
                            pass
            subdirs: List[str] = []
            for d in items:
                if d.name.startswith(TEMP_PREFIX):
                    continue
                rel = rel_dir + "/" + d.name if rel_dir else d.name
                try:
                    st = d.stat(follow_symlinks=False)
                except OSError as e:
                    problems.append([rel, "cannot stat: %s" % e.strerror])
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if self.rules.ignored(rel, is_dir):
                    continue
                we = self.entry_of(rel, d.path, st, problems)
                if we is None:
                    continue
                entries.append(we)
                if is_dir:
                    subdirs.append(rel)
            stack.extend(reversed(subdirs))

    def clean_temp_files(self) -> int:
        """Remove `.nbd-tmp-*` files left by an interrupted write anywhere in the tree."""
        n = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        n += 1
                    except OSError:
                        pass
            dirnames[:] = [d for d in dirnames if d not in (".git", "node_modules", ".venv")]
        return n

    # -- state checks

    def current(self, rel: str) -> Optional[WireEntry]:
        full = self.abspath(rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return None
        problems: List[List[str]] = []
        saved, self.max_file_size = self.max_file_size, 0
        try:
            e = self.entry_of(rel, full, st, problems)
        finally:
            self.max_file_size = saved
        if e is None:
            raise Refused(problems[0][1] if problems else "cannot inspect %r" % rel)
        return e

    def expect(self, rel: str, expected: Optional[WireEntry]) -> Optional[WireEntry]:
        """Refuse unless `rel` currently holds `expected` ([kind, digest, executable, target] or
        None for absent); return the current entry."""
        if expected is None:  # only absence matters: never hash what is there
            if os.path.lexists(self.abspath(rel)):
                raise Refused("%s appeared since the last scan" % rel)
            return None
        cur = self.current(rel)
        if cur is None:
            raise Refused("%s disappeared since the last scan" % rel)
        kind, digest, executable, target = expected
        if (
            cur[1] != kind
            or (kind == "file" and cur[4] != digest)
            or (kind == "symlink" and cur[5] != target)
        ):
            raise Refused("%s changed since the last scan" % rel)
        return cur

    # -- reading

    def read_chunks(self, rel: str, digest: str) -> Iterator[bytes]:
        """Yield the file's bytes; raise Refused at the end if they do not hash to `digest`."""
        full = self.abspath(rel)
        h = hashlib.sha256()
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Refused("%s is not a regular file" % rel)
            while True:
                b = os.read(fd, CHUNK)
                if not b:
                    break
                h.update(b)
                yield b
        finally:
            os.close(fd)
        if digest and h.hexdigest() != digest:
            raise Refused("%s changed while it was read" % rel)

    # -- writing (see `durability` for how the bytes land)

    def write_begin(
        self, handle: int, rel: str, expected: Optional[WireEntry], executable: bool, digest: str
    ) -> None:
        self.expect(rel, expected)
        self.writes[handle] = Incoming(
            temp_path(self.abspath(rel), handle), rel, expected, executable, digest
        )

    def write_chunk(self, handle: int, data: bytes) -> None:
        w = self.writes.get(handle)
        if w is None:
            raise Refused("unknown write handle")
        w.write(data)

    def write_abort(self, handle: int) -> None:
        self._discard(handle)

    def _discard(self, handle: int) -> None:
        w = self.writes.pop(handle, None)
        if w is not None:
            w.discard()

    def write_seal(self, handle: int, fsync: bool = True) -> None:
        """Check the received content, set the mode, optionally fsync, close the temp file."""
        w = self.writes.get(handle)
        if w is None:
            raise Refused("unknown write handle")
        rel = w.rel
        try:
            if w.digest and w.hash.hexdigest() != w.digest:
                raise Refused("%s: received content does not match its digest" % rel)
            cur = self.expect(rel, w.expected)
            if cur is not None and cur[1] == "dir":
                raise Refused("%s is a directory" % rel)
            old_mode = os.lstat(self.abspath(rel)).st_mode if cur is not None and cur[1] == "file" else None
            w.seal(file_mode(w.executable, old_mode, self.umask), fsync)
        except BaseException:
            self._discard(handle)
            raise

    def write_commit(self, handle: int) -> WireEntry:
        """Rename the sealed temp file over the target, if the target is still as expected."""
        w = self.writes.get(handle)
        if w is None:
            raise Refused("unknown write handle")
        rel = w.rel
        try:
            cur = self.expect(rel, w.expected)
            if cur is not None and cur[1] == "dir":
                raise Refused("%s is a directory" % rel)
            full = self.abspath(rel)
            os.replace(w.tmp, full)
            self.writes.pop(handle, None)
            st = os.lstat(full)
            digest = w.hash.hexdigest()
            self.cache[rel] = (_stat_key(st), digest)
            return [rel, "file", st.st_size, _is_exec(st.st_mode), digest, ""]
        finally:
            self._discard(handle)

    def write_end(self, handle: int, fsync: bool = True) -> WireEntry:
        self.write_seal(handle, fsync)
        return self.write_commit(handle)

    def put(
        self,
        handle: int,
        rel: str,
        expected: Optional[WireEntry],
        executable: bool,
        digest: str,
        data: bytes,
        fsync: bool = True,
    ) -> WireEntry:
        self.write_begin(handle, rel, expected, executable, digest)
        try:
            self.write_chunk(handle, data)
        except BaseException:
            self.write_abort(handle)
            raise
        return self.write_end(handle, fsync)

    def stage_many(self, items: List[Tuple[int, str, Optional[WireEntry], bool, str, bytes]]) -> List[Any]:
        """Stage small files as sealed temp files beside their targets (nothing visible changes
        yet). Each result is the handle, or a str saying why that file was refused."""
        results: List[Any] = []
        for handle, rel, expected, executable, digest, data in items:
            try:
                self.write_begin(handle, rel, expected, executable, digest)
                try:
                    self.write_chunk(handle, data)
                except BaseException:
                    self.write_abort(handle)
                    raise
                self.write_seal(handle, False)
                results.append(handle)
            except (Refused, OSError) as e:
                results.append(failure_message(e, rel))
        return results

    def commit_many(self, handles: List[int], fsync: bool = True) -> List[Any]:
        """Make staged files durable with one file-system sync, then rename each over its target
        (if the target is still as expected). Each result is the new entry or a refusal."""
        if fsync and handles:
            syncfs(self.root)
        results: List[Any] = []
        for handle in handles:
            w = self.writes.get(handle)
            rel = w.rel if w is not None else "?"
            try:
                results.append(self.write_commit(handle))
            except (Refused, OSError) as e:
                results.append(failure_message(e, rel))
        return results

    def put_many(
        self, items: List[Tuple[int, str, Optional[WireEntry], bool, str, bytes]], fsync: bool = True
    ) -> List[Any]:
        """Stage then commit in one call (one file-system sync for the whole batch)."""
        staged = self.stage_many(items)
        committed = iter(self.commit_many([r for r in staged if not isinstance(r, str)], fsync))
        return [r if isinstance(r, str) else next(committed) for r in staged]

    def chmod(self, rel: str, expected: WireEntry, executable: bool) -> WireEntry:
        self.expect(rel, expected)
        full = self.abspath(rel)
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # never through a link
        try:
            os.fchmod(fd, file_mode(executable, os.fstat(fd).st_mode, self.umask))
        finally:
            os.close(fd)
        cur = self.current(rel)
        assert cur is not None
        return cur

    def mkdir(self, rel: str) -> WireEntry:
        full = self.abspath(rel)
        try:
            os.mkdir(full)
        except FileExistsError:
            st = os.lstat(full)
            if not stat.S_ISDIR(st.st_mode):
                raise Refused("%s exists and is not a directory" % rel) from None
        return [rel, "dir", 0, False, "", ""]

    def symlink(self, handle: int, rel: str, expected: Optional[WireEntry], target: str) -> WireEntry:
        self.expect(rel, expected)
        full = self.abspath(rel)
        tmp = temp_path(full, handle)
        os.symlink(target, tmp)
        try:
            cur = self.expect(rel, expected)
            if cur is not None and cur[1] == "dir":
                raise Refused("%s is a directory" % rel)
            os.replace(tmp, full)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return [rel, "symlink", 0, False, "", target]

    def delete(self, rel: str, expected: WireEntry) -> None:
        cur = self.expect(rel, expected)
        full = self.abspath(rel)
        if cur is not None and cur[1] == "dir":
            try:
                os.rmdir(full)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise Refused("%s is not empty (it holds files not synced); not removed" % rel) from e
                raise
        else:
            os.unlink(full)
        self.cache.pop(rel, None)

    def run_op(self, h: Dict[str, Any]) -> Optional[WireEntry]:
        """One metadata operation given as a dict (the same form on the wire and locally)."""
        op = h.get("op")
        if op == "mkdir":
            return self.mkdir(h["path"])
        if op == "symlink":
            return self.symlink(int(h.get("handle", 0)), h["path"], h.get("expected"), h["target"])
        if op == "chmod":
            return self.chmod(h["path"], h["expected"], bool(h["executable"]))
        if op == "delete":
            self.delete(h["path"], h["expected"])
            return None
        if op == "move":
            self.move(h["path"], h["dest"], h["expected"])
            return None
        raise Refused("unknown operation %r" % (op,))

    def move(self, rel: str, dest: str, expected: WireEntry) -> None:
        self.expect(rel, expected)
        src, dst = self.abspath(rel), self.abspath(dest)
        if os.path.lexists(dst):
            raise Refused("%s already exists" % dest)
        os.rename(src, dst)
