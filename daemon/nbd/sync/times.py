"""Local modification times for the files a notebook pod got from its image.

The build context is a deterministic archive: every member has mtime 0, so that touching a file
does not change the context's MD5 (and cause an upload and a build). Files copied into the image
from it therefore show "1970" (JupyterLab: "56y ago") in the pod's `/content`, and the sync, which
compares contents, has no reason to write them. Once the sync has settled with a pod, this sets
the times of those files to the local ones. (A layer cache hit can also bring the times of
whichever build first made the layer: BuildKit's COPY cache key ignores times, and so does ours.)

Only metadata changes, and only where it is true: a file is given the local time when its bytes in
the pod are the local bytes (same size, same SHA-256, checked in the pod), so a file edited on
either side and not yet synced keeps its own time; a directory present on both sides gets the
local directory's time. Contents are never touched, so no edit on either side can be lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator

__all__ = ["local_times", "restore_script", "encode", "Entry"]

# (relative path, size or -1 for a directory, mtime_ns, SHA-256 hex of the bytes or "" for a directory)
Entry = tuple[str, int, int, str]

# Runs in the pod with the image's python3 (any 3.x): reads JSON lines of [rel, size, mtime_ns,
# sha256] on stdin, sets the time of each path under ROOT whose bytes are those (a directory: that
# exists), and prints how many it set. Paths are checked to stay under ROOT.
_SCRIPT = r"""
import hashlib, json, os, stat, sys
root = os.path.realpath(sys.argv[1])
done = 0
for line in sys.stdin:
    try:
        rel, size, mtime, digest = json.loads(line)
    except ValueError:
        continue
    path = os.path.normpath(os.path.join(root, rel))
    if path == root or not path.startswith(root + os.sep):
        continue
    try:
        st = os.lstat(path)
        if size < 0:
            if not stat.S_ISDIR(st.st_mode):
                continue
        else:
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != digest:
                continue
        if st.st_mtime_ns != mtime:
            os.utime(path, ns=(st.st_atime_ns, mtime), follow_symlinks=False)
            done += 1
    except (OSError, NotImplementedError):
        pass
print(done)
"""


def restore_script(root: str) -> list[str]:
    """The command that applies the times under `root` in the pod."""
    return ["python3", "-c", _SCRIPT, root]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_times(directory: str, include: Callable[[str, bool], bool]) -> Iterator[Entry]:
    """An `Entry` for each file and directory the sync would carry.

    `include(rel, is_dir)` says whether the sync considers a path (its ignore rules); directories
    it excludes are not descended into. Symbolic links and special files are skipped.
    """
    for dirpath, dirnames, filenames in os.walk(directory):
        rel_dir = os.path.relpath(dirpath, directory)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        kept = []
        for name in sorted(dirnames):
            rel = prefix + name
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and include(rel, True):
                kept.append(name)
                yield rel, -1, st.st_mtime_ns, ""
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = prefix + name
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and include(rel, False):
                try:
                    digest = _sha256(os.path.join(dirpath, name))
                except OSError:
                    continue  # unreadable here: the sync reports it; its time is not ours to set
                yield rel, st.st_size, st.st_mtime_ns, digest


def encode(entries: Iterator[Entry]) -> bytes:
    """The script's stdin for `entries`."""
    return b"".join(json.dumps(list(entry)).encode() + b"\n" for entry in entries)
