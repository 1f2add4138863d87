"""What changed in the tree, as it happens: recursive inotify (through ctypes), else polling.

The agent reports changes unsolicited (`{"op": "changed", ...}` frames), so the daemon rescans
only what changed instead of the whole pod directory. Events are coalesced: a report waits for a
short calm, a file still being written is held back until it is closed, and a burst of events (the
agent's own writes during a sync) is read in batches. Where inotify is missing, or runs out of
watches, the tree is polled as well.

Python 3.8 syntax, stdlib only (it runs in the pod, see the package docstring).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .paths import TEMP_PREFIX
from .tree import Tree

BURST = 0.01
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)


class Watcher(object):
    """Recursive inotify (through ctypes) or, where inotify is unavailable, polling.

    Calls `report(paths)` with changed relative paths, or `report(None)` meaning "rescan
    everything", after `quiet` seconds without a new event (at most `max_delay` after the first).
    """

    def __init__(
        self,
        tree: Tree,
        report: Callable[[Optional[List[str]]], None],
        quiet: float = 0.01,
        max_delay: float = 0.05,
        poll_interval: float = 1.0,
        hold: float = 2.0,
    ) -> None:
        self.tree = tree
        self.hold = hold
        self.report = report
        self.quiet = quiet
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self.fd = -1
        self.wd_to_path: Dict[int, str] = {}
        self.path_to_wd: Dict[str, int] = {}
        self.libc: Any = None
        self.mode = "none"
        self.polling = False
        self.stopped = False  # ends the polling thread (tests; the agent itself just exits)

    def start(self) -> str:
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(0o2000000)  # IN_CLOEXEC
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            self.libc, self.fd = libc, fd
            self.mode = "inotify"
            self.add_tree("")
            t = threading.Thread(target=self._run_inotify, name="inotify", daemon=True)
        except Exception as e:  # no inotify: fall back to polling
            sys.stderr.write("nbd-agent: inotify unavailable (%s); polling\n" % e)
            self.mode = "poll"
            t = threading.Thread(target=self._run_poll, name="poll", daemon=True)
        t.start()
        return self.mode

    def add_watch(self, rel: str) -> None:
        full = os.path.join(self.tree.root, rel) if rel else self.tree.root
        wd = self.libc.inotify_add_watch(self.fd, full.encode("utf-8", "surrogateescape"), WATCH_MASK)
        if wd >= 0:
            old = self.wd_to_path.get(wd)
            if old is not None:
                self.path_to_wd.pop(old, None)
            self.wd_to_path[wd] = rel
            self.path_to_wd[rel] = wd
        elif not self.polling:
            # Out of inotify watches (fs.inotify.max_user_watches): directories without a watch
            # would go unseen, so poll as well.
            import ctypes

            sys.stderr.write(
                "nbd-agent: inotify_add_watch failed (errno %d); polling as well\n" % ctypes.get_errno()
            )
            self.polling = True
            self.mode = "inotify+poll"
            threading.Thread(target=self._run_poll, name="poll", daemon=True).start()

    def add_tree(self, top: str) -> None:
        stack = [top]
        while stack:
            rel = stack.pop()
            self.add_watch(rel)
            full = os.path.join(self.tree.root, rel) if rel else self.tree.root
            try:
                with os.scandir(full) as it:
                    for d in it:
                        if d.is_dir(follow_symlinks=False):
                            child = rel + "/" + d.name if rel else d.name
                            if not self.tree.rules.ignored(child, True):
                                stack.append(child)
            except OSError:
                pass

    def drop_tree(self, top: str) -> None:
        for rel in [p for p in self.path_to_wd if p == top or p.startswith(top + "/")]:
            wd = self.path_to_wd.pop(rel)
            self.wd_to_path.pop(wd, None)
            self.libc.inotify_rm_watch(self.fd, wd)

    def _run_inotify(self) -> None:
        """Coalesce events; report after `quiet` seconds of calm (at most `max_delay` after the
        first). A regular file that was created or modified but not yet closed after writing is
        held back (a save in progress, e.g. Jupyter writing in place) until it is closed, or
        `hold` seconds passed (a file kept open, like a log)."""
        import select

        pending: Set[str] = set()
        held: Dict[str, float] = {}
        rescan_all = False
        first = 0.0
        last_wake = 0.0
        while True:
            now = time.monotonic()
            deadlines = []
            if pending or rescan_all:
                deadlines.append(max(0.0, min(self.quiet, first + self.max_delay - now)))
            if held:
                deadlines.append(max(0.0, min(held.values()) + self.hold - now))
            timeout = min(deadlines) if deadlines else None
            r, _, _ = select.select([self.fd], [], [], timeout)
            if not r:
                now = time.monotonic()
                for rel in [p for p, t0 in held.items() if now - t0 >= self.hold]:
                    del held[rel]
                    pending.add(rel)
                    first = first or now
                if rescan_all:
                    self.report(None)
                elif pending:
                    self.report(sorted(pending))
                pending.clear()
                rescan_all = False
                first = 0.0
                continue
            # In a burst (the agent's own writes during a sync: ~6 events per file), waking for
            # every few events costs more than the events: each wake takes the GIL from the thread
            # doing the writes. Waking again within BURST of the last wake, wait BURST first and
            # read everything that queued meanwhile. A lone edit is not delayed.
            woke = time.monotonic()
            if woke - last_wake < BURST:
                time.sleep(BURST)
            last_wake = woke
            data = os.read(self.fd, 1 << 18)
            if not pending and not rescan_all:
                first = time.monotonic()
            off = 0
            while off + 16 <= len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, off)
                name = data[off + 16 : off + 16 + length].rstrip(b"\x00").decode("utf-8", "surrogateescape")
                off += 16 + length
                if mask & IN_Q_OVERFLOW:
                    rescan_all = True
                    continue
                base = self.wd_to_path.get(wd)
                if base is None or mask & IN_IGNORED or not name or name.startswith(TEMP_PREFIX):
                    continue
                rel = base + "/" + name if base else name
                is_dir = bool(mask & IN_ISDIR)
                if self.tree.rules.ignored_path(rel, is_dir):
                    continue
                if is_dir:
                    pending.add(rel)
                    if mask & (IN_CREATE | IN_MOVED_TO):
                        self.add_tree(rel)
                    elif mask & IN_MOVED_FROM:
                        self.drop_tree(rel)
                    continue
                if mask & (IN_CREATE | IN_MODIFY) and not mask & IN_CLOSE_WRITE:
                    if mask & IN_CREATE and not self._is_regular(rel):
                        pending.add(rel)  # a symlink or a hard link: no close will follow
                    else:
                        held.setdefault(rel, time.monotonic())
                    continue
                held.pop(rel, None)
                pending.add(rel)
            if not pending and not rescan_all:
                first = 0.0

    def _is_regular(self, rel: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(os.path.join(self.tree.root, rel)).st_mode)
        except OSError:
            return False

    def _signature(self) -> Dict[str, Tuple[int, int, int]]:
        sig = {}
        for dirpath, dirnames, filenames in os.walk(self.tree.root):
            rel_dir = os.path.relpath(dirpath, self.tree.root)
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for d in dirnames:
                rel = rel_dir + "/" + d if rel_dir else d
                if not self.tree.rules.ignored(rel, True):
                    keep.append(d)
            dirnames[:] = keep
            for name in filenames + dirnames:
                rel = rel_dir + "/" + name if rel_dir else name
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                    sig[rel] = (st.st_size, st.st_mtime_ns, st.st_mode)
                except OSError:
                    pass
        return sig

    def _run_poll(self) -> None:
        before = self._signature()
        while not self.stopped:
            time.sleep(self.poll_interval)
            now = self._signature()
            if now != before:
                changed = [p for p in set(now) | set(before) if now.get(p) != before.get(p)]
                self.report(sorted(changed))
                before = now
