"""Local modification times for the files a notebook pod got from its image.

The build context is a deterministic archive: every member has mtime 0, so that touching a file
does not change the context's MD5 (and cause an upload and a build). Files copied into the image
from it therefore show "1970" (JupyterLab: "56y ago") in the pod's `/content`, and the sync, which
compares contents, has no reason to write them. Once the sync has settled with a pod, this sets
the times of those files to the local ones.

Only metadata changes, and only where it is safe to: a file (or directory) is given the local
time when its pod time is still within a day of the epoch, which only the archive produces (a
file written in the pod since has a current time and is left alone), and a file also needs the
local size. Contents are never touched, so no edit on either side can be lost by this step.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator

__all__ = ["ARCHIVE_EPOCH_LIMIT", "local_times", "restore_script", "encode"]

# A pod time below this (seconds) comes from the archive, never from a write in the pod.
ARCHIVE_EPOCH_LIMIT = 86_400

# Runs in the pod with the image's python3 (any 3.x): reads JSON lines of [rel, size, mtime_ns]
# (size -1 for a directory) on stdin, sets the time of each path under ROOT that still has an
# archive time, and prints how many it set. Paths are checked to stay under ROOT.
_SCRIPT = r"""
import json, os, stat, sys
root = os.path.realpath(sys.argv[1])
limit = int(sys.argv[2])
done = 0
for line in sys.stdin:
    try:
        rel, size, mtime = json.loads(line)
    except ValueError:
        continue
    path = os.path.normpath(os.path.join(root, rel))
    if path != root and not path.startswith(root + os.sep):
        continue
    try:
        st = os.lstat(path)
    except OSError:
        continue
    if st.st_mtime >= limit:
        continue
    if size < 0:
        if not stat.S_ISDIR(st.st_mode):
            continue
    elif not stat.S_ISREG(st.st_mode) or st.st_size != size:
        continue
    try:
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
        done += 1
    except (OSError, NotImplementedError):
        pass
print(done)
"""


def restore_script(root: str) -> list[str]:
    """The command that applies the times under `root` in the pod."""
    return ["python3", "-c", _SCRIPT, root, str(ARCHIVE_EPOCH_LIMIT)]


def local_times(directory: str, include: Callable[[str, bool], bool]) -> Iterator[tuple[str, int, int]]:
    """(relative path, size or -1 for a directory, mtime_ns) of what the sync would carry.

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
                yield rel, -1, st.st_mtime_ns
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = prefix + name
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and include(rel, False):
                yield rel, st.st_size, st.st_mtime_ns


def encode(entries: Iterator[tuple[str, int, int]]) -> bytes:
    """The script's stdin for `entries`."""
    return b"".join(json.dumps([rel, size, mtime]).encode() + b"\n" for rel, size, mtime in entries)
