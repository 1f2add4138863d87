"""The agent's request loop: frames in on stdin, one reply per request out on stdout.

Every request carries an integer `id` and gets exactly one final reply with the same `id` and
`ok` true/false (false with `error`, and `refused` when the agent refused rather than failed); a
`read` also streams `{"id", "chunk": true, "z": 0|1}` frames before its reply, and `write_begin` /
`write_chunk` get no reply of their own (their outcome is `write_end`'s). Unsolicited
`{"op": "changed", "paths": [...]}` or `{"op": "changed", "all": true}` frames report watched
changes. Logs go to stderr only. A failure is reported and the loop goes on: a bug in one
request must not end the session.

Python 3.8 syntax, stdlib only (it runs in the pod, see the package docstring).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

from .frames import (
    PROTOCOL_VERSION,
    ChunkPacker,
    frame_parts,
    pack_json,
    pack_parts,
    read_frame,
    split_parts,
    unpack_chunk,
    unpack_parts,
)
from .paths import Refused, failure_message
from .tree import Tree
from .watcher import Watcher


class Server(object):
    """Serves one tree over a pair of file descriptors (stdin and stdout)."""

    def __init__(self, root: str, out_fd: int = 1, in_fd: int = 0) -> None:
        self.tree = Tree(root)
        self.out_fd = out_fd
        self.inp = os.fdopen(in_fd, "rb", buffering=1 << 18, closefd=False)
        for fd in (in_fd, out_fd):  # larger pipes: fewer, larger reads and writes
            try:
                import fcntl

                fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
            except (ImportError, OSError):
                pass
        self.lock = threading.Lock()
        self.watcher: Optional[Watcher] = None
        self.begin_errors: Dict[int, str] = {}
        # File chunks are hashed and written by a second thread while the next frame is read
        # (both release the GIL); every other operation waits until that queue is drained.
        self.disk: "queue.Queue[Tuple[int, bytes, bool]]" = queue.Queue(maxsize=8)
        self.chunk_errors: Dict[int, str] = {}
        threading.Thread(target=self._disk_writer, name="disk", daemon=True).start()
        # Orphan guard: with `idle_exit` set (by `configure`), an agent left waiting that long for
        # its daemon's next frame exits. On a real cluster an exec'd process outlives a client that
        # vanished without closing stdin; the daemon pings far more often than this.
        self.idle_exit = 0.0
        self.waiting_since: Optional[float] = None

    def _disk_writer(self) -> None:
        while True:
            handle, data, z = self.disk.get()
            try:
                if handle in self.tree.writes and handle not in self.chunk_errors:
                    self.tree.write_chunk(handle, unpack_chunk(data, z))
            except (Refused, OSError, zlib.error) as e:
                self.chunk_errors[handle] = (
                    str(e)
                    if isinstance(e, Refused)
                    else "write failed: %s" % (getattr(e, "strerror", None) or e)
                )
            finally:
                self.disk.task_done()

    def send(self, header: Dict[str, Any], body: bytes = b"") -> None:
        with self.lock:
            for data in frame_parts(header, body):
                view = memoryview(data)
                while view:
                    n = os.write(self.out_fd, view)
                    view = view[n:]

    def _watchdog(self) -> None:
        while True:
            time.sleep(min(5.0, self.idle_exit / 4))
            since = self.waiting_since
            if since is not None and time.monotonic() - since > self.idle_exit:
                # Only between frames: every write already finished (temp file, then rename), so
                # leaving here loses nothing; the daemon starts a new agent when it comes back.
                sys.stderr.write(
                    "nbd-agent: no word from the daemon for %ds; exiting\n" % int(time.monotonic() - since)
                )
                sys.stderr.flush()
                os._exit(3)

    def on_change(self, paths: Optional[List[str]]) -> None:
        if paths is None:
            self.send({"op": "changed", "all": True})
        elif paths:
            self.send({"op": "changed", "paths": paths})

    def serve(self) -> None:
        self.send(
            {
                "op": "hello",
                "version": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "root": self.tree.root,
            }
        )
        while True:
            self.waiting_since = time.monotonic()
            try:
                header, body = read_frame(self.inp)
            except EOFError:
                return
            self.waiting_since = None
            rid = header.get("id", 0)
            try:
                reply = self.handle(header, body)
                if reply is not None:
                    reply_header, reply_body = reply
                    reply_header["id"] = rid
                    reply_header["ok"] = True
                    self.send(reply_header, reply_body)
            except (Refused, OSError) as e:
                msg = failure_message(e, header.get("path", ""))
                self.send({"id": rid, "ok": False, "error": msg, "refused": isinstance(e, Refused)})
            except Exception as e:  # a bug must not kill the session: report and go on
                self.send({"id": rid, "ok": False, "error": "agent error: %r" % (e,)})

    def handle(self, h: Dict[str, Any], body: bytes) -> Optional[Tuple[Dict[str, Any], bytes]]:
        op = h.get("op")
        t = self.tree
        if op != "write_chunk":
            self.disk.join()
        if op == "configure":
            t.max_file_size = int(h.get("max_file_size", 0))
            cleaned = t.clean_temp_files() if h.get("clean") else 0
            idle_exit = float(h.get("idle_exit", 0) or 0)
            if idle_exit > 0 and self.idle_exit == 0:
                self.idle_exit = idle_exit
                threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
            return {"cleaned": cleaned}, b""
        if op == "scan":
            res = t.scan(h.get("paths"))
            return {"z": 1}, pack_json(res)
        if op == "watch":
            if self.watcher is None:
                self.watcher = Watcher(
                    t, self.on_change, float(h.get("quiet", 0.01)), float(h.get("max_delay", 0.05))
                )
                mode = self.watcher.start()
            else:
                mode = self.watcher.mode
            return {"mode": mode}, b""
        if op == "read":
            rid = h.get("id", 0)
            packer = ChunkPacker(bool(h.get("compress", True)))
            for chunk in t.read_chunks(h["path"], h.get("digest", "")):
                data, z = packer.pack(chunk)
                self.send({"id": rid, "chunk": True, "z": z}, data)
            return {}, b""
        if op == "read_many":
            # Small files in one reply: body is the concatenation, sizes in the header.
            sizes, errors, parts = [], [], []
            with t.batch_scope():
                for path, digest in h["files"]:
                    try:
                        data = b"".join(t.read_chunks(path, digest))
                        parts.append(data)
                        sizes.append(len(data))
                        errors.append("")
                    except (Refused, OSError) as e:
                        sizes.append(0)
                        errors.append(failure_message(e, path))
            if not h.get("zl"):  # a daemon that does not take per-file compression
                return {"sizes": sizes, "errors": errors, "z": 0}, b"".join(parts)
            blob, zl = pack_parts(parts)
            return {"sizes": sizes, "errors": errors, "zl": zl}, blob
        if op in ("put_many", "stage_many"):
            files = h["files"]
            sizes = [item[4] for item in files]
            # Per file: its bytes, or a str saying why they are unusable.
            datas: List[Any] = list(
                unpack_parts(body, sizes, h["zl"])
                if h.get("zl") is not None
                else split_parts(unpack_chunk(body, h.get("z")), sizes)
            )
            batch = []
            handles = h.get("handles")
            refused: Dict[int, str] = {}
            for i, item in enumerate(files):
                path, expected, executable, digest, size = item
                handle = int(handles[i]) if handles else -(i + 1)
                if isinstance(datas[i], str):
                    refused[i] = "%s: %s" % (path, datas[i])
                    continue
                batch.append((handle, path, expected, bool(executable), digest, datas[i]))
            if refused:
                with t.batch_scope():
                    done = iter(
                        t.stage_many(batch)
                        if op == "stage_many"
                        else t.put_many(batch, bool(h.get("fsync", True)))
                    )
                return {
                    "results": [refused[i] if i in refused else next(done) for i in range(len(files))]
                }, b""
            with t.batch_scope():
                if op == "stage_many":
                    return {"results": t.stage_many(batch)}, b""
                return {"results": t.put_many(batch, bool(h.get("fsync", True)))}, b""
        if op == "commit_many":
            with t.batch_scope():
                return {
                    "results": t.commit_many([int(x) for x in h["handles"]], bool(h.get("fsync", True)))
                }, b""
        if op == "write_begin":
            # No reply: a refusal is remembered and reported by the matching write_end.
            try:
                t.write_begin(
                    int(h["handle"]),
                    h["path"],
                    h.get("expected"),
                    bool(h.get("executable")),
                    h.get("digest", ""),
                )
            except (Refused, OSError) as e:
                self.begin_errors[int(h["handle"])] = str(e)
            return None
        if op == "write_chunk":
            self.disk.put((int(h["handle"]), body, bool(h.get("z"))))
            return None
        if op == "write_end":
            handle = int(h["handle"])
            begin_error = self.begin_errors.pop(handle, None)
            chunk_error = self.chunk_errors.pop(handle, None)
            if chunk_error is not None:
                t.write_abort(handle)
                raise Refused(chunk_error)
            if handle not in t.writes:
                raise Refused(begin_error or "%s: write was refused" % h.get("path", ""))
            if h.get("abort"):
                t.write_abort(handle)
                return {}, b""
            return {"entry": t.write_end(handle, bool(h.get("fsync", True)))}, b""
        if op == "batch":
            # Metadata operations in order; each gets [true, entry|null] or [false, error].
            out: List[Any] = []
            for item in h["ops"]:
                try:
                    out.append([True, t.run_op(item)])
                except (Refused, OSError) as e:
                    out.append([False, failure_message(e, item.get("path", ""))])
            return {"results": out}, b""
        if op == "ping":
            return {}, b""
        raise Refused("unknown operation %r" % (op,))


def main(argv: List[str]) -> int:
    """Serve the directory `argv[1]` on stdin/stdout until stdin ends."""
    if len(argv) < 2:
        sys.stderr.write("usage: python3 nbd-agent.pyz ROOT\n")
        return 2
    root = argv[1]
    if not os.path.isdir(root):
        sys.stderr.write("nbd-agent: %s is not a directory\n" % root)
        return 2
    server = Server(root)
    profile = os.environ.get("NBD_AGENT_PROFILE")  # a path: write cProfile stats there at exit
    if profile:
        import cProfile

        cProfile.runctx("server.serve()", globals(), {"server": server}, profile)
    else:
        server.serve()
    return 0
