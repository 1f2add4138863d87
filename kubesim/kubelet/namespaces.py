"""Pod sandboxes and container namespaces: the processes that hold a pod's and a container's namespaces.

A pod's sandbox is a "pause" process, `unshare --mount --net --uts --ipc --propagation private sh
-c SCRIPT`: the script brings `lo` up, sets the hostname to the pod name, prints `ready` and
waits. Only `lo` exists in the pod's network namespace, so two pods can both listen on
127.0.0.1:8888.

Each container instance gets a mount namespace of its own, as a real runtime gives each container
its own root filesystem: a holder process joins the pause's network, UTS and IPC namespaces,
unshares a mount namespace, mounts the instance's overlay of its image (a fresh upper directory),
bind-mounts the image's entries from it and the container's volumes at their container paths,
prints `ready` and waits. The container and the commands exec'd into it join the holder with
`nsenter -t HOLDER -m -n -u -i --wdns=WORKDIR -- argv`. When the instance ends, every process
left in its mount namespace is killed with it (a runtime kills the container's cgroup), so nothing
outlives the instance, and its overlay goes with the namespace.

Sockets into a pod's network namespace (port-forward, probes, the host-port relays) are created by
a dedicated thread that enters the namespace with setns(2) (Python 3.11 has no os.setns: ctypes),
creates the socket, and returns to the host namespace; a socket keeps the namespace it was created
in, so it is then used from the event loop like any other.

When namespaces are not available (not root, `unshare` fails), `Sandbox.start` returns with
`isolated == False` and `reason` set: the caller must say so (Warning event `NoIsolation`).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import shlex
import signal
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "ContainerNamespace",
    "Mount",
    "Overlay",
    "Tmpfs",
    "Sandbox",
    "open_in_netns",
    "namespaces_available",
    "set_pdeathsig",
]

log = logging.getLogger("kubesim.kubelet.namespaces")

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)
# One thread does every setns: it always returns to the host namespace before the next job.
_netns_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kubesim-netns")

T = TypeVar("T")


def set_pdeathsig() -> None:
    """preexec_fn: the child gets SIGKILL when kubesim dies, so no pod process outlives it."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def _run_in_netns(pid: int, fn: Callable[[], T]) -> T:
    home = os.open(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                return fn()
            finally:
                # Invariant: the worker thread never stays in a pod's namespace.
                _setns(home)
        finally:
            os.close(target)
    finally:
        os.close(home)


async def open_in_netns(pid: int | None, fn: Callable[[], T]) -> T:
    """Run `fn` (which creates sockets) inside the network namespace of `pid` (None: the host's)."""
    if pid is None:
        return fn()
    return await asyncio.get_running_loop().run_in_executor(_netns_executor, _run_in_netns, pid, fn)


_available: bool | None = None


def namespaces_available() -> tuple[bool, str]:
    """Whether pods can get private namespaces here, and why not."""
    global _available
    if os.geteuid() != 0:
        return False, "kubesim is not running as root: pods share the host's network and mount namespaces"
    import shutil
    import subprocess

    for tool in ("unshare", "nsenter", "mount", "ip"):
        if shutil.which(tool) is None:
            return False, f"{tool!r} is not installed: pods share the host's namespaces"
    if _available is None:
        r = subprocess.run(
            ["unshare", "--mount", "--net", "--uts", "--ipc", "--propagation", "private", "true"],
            capture_output=True,
            text=True,
        )
        _available = r.returncode == 0
        if not _available:
            return False, f"unshare failed ({r.stderr.strip()}): pods share the host's namespaces"
    return (True, "") if _available else (False, "unshare failed: pods share the host's namespaces")


@dataclass(frozen=True)
class Mount:
    """`source` (a host path) bind-mounted at `target` (a container path) in the pod's mount ns."""

    source: str
    target: str
    read_only: bool = False
    is_file: bool = False


@dataclass(frozen=True)
class Tmpfs:
    """A memory-backed filesystem of `size` bytes (None: the kernel's default, half the RAM) at
    `target`, a host path, mounted in the pod sandbox's mount namespace: every container of the pod
    shares it (a container's namespace is a copy of the sandbox's), and it goes with the sandbox.
    Writes beyond `size` fail with ENOSPC, as on a node."""

    target: str
    size: int | None
    mode: int = 0o1777
    gid: int | None = None


@dataclass(frozen=True)
class Overlay:
    """An overlay mount at `merged` (a host path, mounted in one container's namespace only).

    `lower` are the read-only directories, top first, relative to `base` (short paths keep the
    mount options under the kernel's page limit); `upper` takes every write and `work` is
    overlayfs's scratch directory, on the same filesystem as `upper`.
    """

    base: str
    lower: tuple[str, ...]
    upper: str
    work: str
    merged: str


def _under(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top + "/") or top == "/"


def mount_order(mounts: list[Mount]) -> list[Mount]:
    """The order in which the bind mounts are made.

    Invariants: a mount comes after every mount whose target is an ancestor of its target (else
    it would be hidden), and before every mount whose target is an ancestor of its source (else
    its source would be hidden, e.g. an emptyDir at /tmp while kubesim's state dir is under /tmp).
    When both cannot hold, shallow targets win.
    """
    remaining = sorted(mounts, key=lambda m: (m.target.rstrip("/").count("/"), m.target))
    ordered: list[Mount] = []
    while remaining:
        for m in remaining:
            blocked = any(
                o is not m and _under(m.target, o.target) and o.target != m.target for o in remaining
            )
            if not blocked:
                # Mounts whose sources this one would hide go first, when they may.
                shadowed = [
                    o
                    for o in remaining
                    if o is not m
                    and _under(o.source, m.target)
                    and not any(
                        p is not o and _under(o.target, p.target) and p.target != o.target for p in remaining
                    )
                ]
                pick = shadowed[0] if shadowed else m
                ordered.append(pick)
                remaining.remove(pick)
                break
        else:  # cannot happen: the shallowest target is never blocked
            ordered.extend(remaining)
            break
    return ordered


def _tmpfs_lines(tmpfs: list[Tmpfs]) -> list[str]:
    lines = []
    for t in tmpfs:
        options = [f"mode={t.mode:o}"]
        if t.size is not None:
            options.append(f"size={t.size}")
        if t.gid is not None:
            options.append(f"gid={t.gid}")
        lines.append(f"mkdir -p {shlex.quote(t.target)}")
        lines.append(f"mount -t tmpfs -o {','.join(options)} tmpfs {shlex.quote(t.target)}")
    return lines


def _script(
    hostname: str, mounts: list[Mount], host_network: bool = False, tmpfs: list[Tmpfs] | None = None
) -> str:
    lines = ["set -e"]
    if not host_network:
        lines += ["ip link set lo up", f"hostname {shlex.quote(hostname[:63])} 2>/dev/null || true"]
    lines += _tmpfs_lines(tmpfs or [])
    lines += _mount_lines(mounts)
    lines += ["echo ready", "read _ || true"]
    return "\n".join(lines)


def _container_script(overlay: Overlay | None, mounts: list[Mount]) -> str:
    lines = ["set -e"]
    if overlay is not None:
        q = shlex.quote
        options = f"lowerdir={':'.join(overlay.lower)},upperdir={overlay.upper},workdir={overlay.work}"
        lines += [
            f"cd {q(overlay.base)}",
            f"mount -t overlay overlay -o {q(options)} {q(overlay.merged)}",
            "cd /",
        ]
    lines += _mount_lines(mounts)
    lines += ["echo ready", "read _ || true"]
    return "\n".join(lines)


def _mount_lines(mounts: list[Mount]) -> list[str]:
    lines = []
    for m in mount_order(mounts):
        src, dst = shlex.quote(m.source), shlex.quote(m.target)
        if m.is_file:
            lines.append(f"mkdir -p {shlex.quote(os.path.dirname(m.target) or '/')}")
            lines.append(f"[ -e {dst} ] || : > {dst}")
        else:
            lines.append(f"mkdir -p {dst}")
        lines.append(f"mount --bind {src} {dst}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
    return lines


class Sandbox:
    """One pod's namespaces (or, without isolation, the host's)."""

    def __init__(self, hostname: str, host_network: bool = False) -> None:
        self.hostname = hostname
        # hostNetwork pods keep a private mount namespace but use the host's network (and name).
        self.host_network = host_network
        self.pid: int | None = None
        self.isolated = False
        self.reason = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, mounts: list[Mount], tmpfs: list[Tmpfs] | None = None) -> None:
        """Create the namespaces and mounts (`tmpfs`: the pod's memory-backed filesystems); raises
        RuntimeError when the mounts fail."""
        ok, why = namespaces_available()
        if not ok:
            self.reason = why
            return
        spaces = ["--mount", "--ipc"] if self.host_network else ["--mount", "--net", "--uts", "--ipc"]
        proc = await asyncio.create_subprocess_exec(
            "unshare",
            *spaces,
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _script(self.hostname, mounts, self.host_network, tmpfs),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=set_pdeathsig,
        )
        assert proc.stdout is not None and proc.stderr is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            await proc.wait()
            raise RuntimeError(f"pod sandbox setup failed: {err or 'pause process exited'}")
        self._proc = proc
        self.pid = proc.pid
        self.isolated = True

    def enter(self, workdir: str) -> list[str]:
        """The argv prefix that runs a command inside the sandbox with cwd `workdir`."""
        if self.pid is None:
            return []
        spaces = ["-m", "-i"] if self.host_network else ["-m", "-n", "-u", "-i"]
        return ["nsenter", "-t", str(self.pid), *spaces, f"--wdns={workdir or '/'}", "--"]

    @property
    def netns_pid(self) -> int | None:
        """The process whose network namespace pod sockets are made in (None: the host's)."""
        return None if self.host_network else self.pid

    async def connect(
        self, port: int, host: str = "127.0.0.1"
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a TCP connection to `host:port` inside the pod's network namespace."""
        sock = await open_in_netns(self.netns_pid, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            return await asyncio.open_connection(sock=sock, limit=2**20)
        except BaseException:
            sock.close()
            raise

    async def listen(self, port: int) -> socket.socket:
        """A listening socket on 127.0.0.1:`port` inside the pod's network namespace."""

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                s.listen(128)
                s.setblocking(False)
            except BaseException:
                s.close()
                raise
            return s

        return await open_in_netns(self.netns_pid, make)

    def members(self) -> list[int]:
        """Pids of every process in the pod's namespaces (mount ns for hostNetwork pods), pause included.

        A hostNetwork pod's containers have mount namespaces of their own: see `ContainerNamespace`.
        """
        return _members(self.pid, "mnt" if self.host_network else "net")

    def kill_members(self, sig: int = signal.SIGKILL) -> int:
        """Signal every process left in the pod (orphans of exec'd commands included) but the pause."""
        return _kill(self.members(), self.pid, sig)

    async def stop(self) -> None:
        """Kill whatever still runs in the pod, then the pause process: the namespaces go with it."""
        self.kill_members()
        proc, self._proc = self._proc, None
        await _end(proc, "pause")


class ContainerNamespace:
    """One container instance's mount namespace, held by a process in its pod's sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, overlay: Overlay | None, mounts: list[Mount]) -> None:
        """Make the namespace and its mounts; raises RuntimeError (with mount's words) when they fail."""
        assert self.sandbox.pid is not None, "the pod's sandbox is not isolated"
        # The sandbox's mount namespace is the starting point (its tmpfs mounts: /dev/shm, memory
        # emptyDirs); the container's own is a private copy of it.
        spaces = ["-m", "-i"] if self.sandbox.host_network else ["-m", "-n", "-u", "-i"]
        proc = await asyncio.create_subprocess_exec(
            "nsenter",
            "-t",
            str(self.sandbox.pid),
            *spaces,
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _container_script(overlay, mounts),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=set_pdeathsig,
        )
        assert proc.stdout is not None and proc.stderr is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            await proc.wait()
            raise RuntimeError(err or "the container's mount namespace could not be made")
        self._proc = proc
        self.pid = proc.pid

    def enter(self, workdir: str) -> list[str]:
        """The argv prefix that runs a command in the container with cwd `workdir`."""
        assert self.pid is not None
        spaces = ["-m", "-i"] if self.sandbox.host_network else ["-m", "-n", "-u", "-i"]
        return ["nsenter", "-t", str(self.pid), *spaces, f"--wdns={workdir or '/'}", "--"]

    @property
    def root(self) -> str | None:
        """The container's `/` as this process reaches it (None once the namespace is gone)."""
        return f"/proc/{self.pid}/root" if self.pid is not None else None

    def members(self) -> list[int]:
        """Pids of every process in the container's mount namespace, the holder included."""
        return _members(self.pid, "mnt")

    async def stop(self) -> None:
        """Kill every process of the instance (exec'd ones too), then the holder: the mounts go."""
        _kill(self.members(), self.pid, signal.SIGKILL)
        proc, self._proc = self._proc, None
        self.pid = None
        await _end(proc, "container namespace holder")


def _members(pid: int | None, kind: str) -> list[int]:
    """Pids of the processes sharing namespace `kind` ("net", "mnt") with `pid`, itself included."""
    if pid is None:
        return []
    try:
        ino = os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return []
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/{kind}").st_ino == ino:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _kill(pids: list[int], keep: int | None, sig: int) -> int:
    n = 0
    for pid in pids:
        if pid == keep:
            continue
        try:
            os.kill(pid, sig)
            n += 1
        except OSError:
            pass
    return n


async def _end(proc: asyncio.subprocess.Process | None, what: str) -> None:
    if proc is None:
        return
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except (TimeoutError, ProcessLookupError):
        log.warning("%s %s did not exit", what, proc.pid)


def connection_refused(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.ENETUNREACH)
