"""Running a build step's command on top of an image's layers, as BuildKit's runc worker does.

kubesim has no chroot images: a container is this machine's userland with the image's own
top-level entries (`/content`, `/kubesim-python`, ...; never the system directories) mounted over
it. A RUN step therefore runs in a private mount namespace where:

* the image so far is an overlay mount: the parent layers are the lower directories and a fresh
  directory is the upper one, so everything the command writes lands in the upper directory, which
  becomes the step's layer (whiteouts and opaque directories included, as overlayfs writes them);
* each non-system top-level entry of that overlay is bind-mounted at `/<entry>`, and its `tmp/` at
  `/tmp`, so `pip` resolves to the image's own Python environment and `/tmp` is the image's;
* the rest of `/` is remounted read-only: a command that writes outside the image's own paths
  (`apt-get install`, `echo > /etc/x`) fails with EROFS instead of changing the host;
* `--mount=type=cache` targets are bind mounts of node-wide cache directories, shared by builds;
* the network is the host's (BuildKit's RUN has network by default), entered with `nsenter` when a
  host network namespace is given, since the build pod itself only has loopback.

Every mount vanishes with the namespace when the command exits.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubesim.images.layers import LayerStore

__all__ = ["Step", "run_step", "StepUnavailable", "SYSTEM_DIRS", "HOST_NETNS_ENV"]

# Top-level entries that are this machine's own, never taken from an image (kubelet/volumes.py
# uses the same list for pods).
SYSTEM_DIRS = frozenset(
    {
        "bin",
        "boot",
        "dev",
        "etc",
        "home",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "media",
        "mnt",
        "opt",
        "proc",
        "root",
        "run",
        "sbin",
        "srv",
        "sys",
        "tmp",
        "usr",
        "var",
    }
)
# The network namespace a RUN step joins (a path like /proc/PID/ns/net); unset: the caller's own.
HOST_NETNS_ENV = "KUBESIM_HOST_NETNS"


class StepUnavailable(RuntimeError):
    """The machine cannot run a step in a mount namespace (not root, no overlayfs, no unshare)."""


@dataclass(frozen=True)
class Step:
    """A command to run over `lower` (layer ids, bottom first), writing into `upper`."""

    argv: Sequence[str]
    lower: Sequence[str]
    upper: Path
    workdir: str = "/"
    env: dict[str, str] | None = None
    # (node cache directory, container path) pairs from RUN --mount=type=cache.
    caches: Sequence[tuple[Path, str]] = ()
    # (uid, gid) the command runs as after a Dockerfile USER; None: root.
    user: tuple[int, int] | None = None


def _script(store: LayerStore, step: Step, merged: Path, work: Path, empty: Path) -> str:
    lowers = ":".join(f"{layer}/fs" for layer in reversed(step.lower)) or os.path.relpath(empty, store.root)
    system = "|".join(sorted(SYSTEM_DIRS))
    q = shlex.quote
    lines = [
        "set -e",
        f"cd {q(str(store.root))}",
        # Relative lower paths keep the mount options short (the kernel limits them to a page).
        f"mount -t overlay overlay -o lowerdir={lowers},upperdir={q(str(step.upper))},workdir={q(str(work))} "
        f"{q(str(merged))}",
        "cd /",
        f"for e in $(ls -A {q(str(merged))}); do",
        f'  case "$e" in {system}) continue ;; esac',
        f'  [ -d {q(str(merged))}/"$e" ] && [ ! -L {q(str(merged))}/"$e" ] || continue',
        '  mkdir -p "/$e"',
        f'  mount --bind {q(str(merged))}/"$e" "/$e"',
        "done",
    ]
    for source, target in step.caches:
        lines += [f"mkdir -p {q(target)}", f"mount --bind {q(str(source))} {q(target)}"]
    lines += [
        f"mkdir -p {q(str(merged))}/tmp",
        f"chmod 1777 {q(str(merged))}/tmp",
        f"mount --bind {q(str(merged))}/tmp /tmp",
        "mount -o remount,bind,ro /",
        f"mkdir -p {q(step.workdir)} 2>/dev/null || true",
        f"cd {q(step.workdir)}",
    ]
    if step.user is not None:
        uid, gid = step.user
        lines.append(f'exec setpriv --reuid={uid} --regid={gid} --clear-groups -- "$@"')
    else:
        lines.append('exec "$@"')
    return "\n".join(lines)


def run_step(store: LayerStore, step: Step, output: Callable[[str], None]) -> int:
    """Runs `step`, sending each output line to `output`; returns the command's exit code.

    Raises StepUnavailable when the namespace cannot be set up (the message says why), and
    OSError when the command cannot be started.
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise StepUnavailable(
            "RUN needs root and unshare(1) to mount the image's layers; run kubesim as root"
        )
    scratch = store.scratch(".run-")
    try:
        merged, work, empty = scratch / "merged", scratch / "work", scratch / "empty"
        for d in (merged, work, empty):
            d.mkdir()
        argv: list[str] = []
        netns = os.environ.get(HOST_NETNS_ENV, "")
        if netns and os.path.exists(netns) and shutil.which("nsenter"):
            argv += ["nsenter", f"--net={netns}", "--"]
        argv += [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _script(store, step, merged, work, empty),
            "kubesim-run",
            *step.argv,
        ]
        env = dict(step.env or {})
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd="/",
        )
        assert proc.stdout is not None
        for text in proc.stdout:
            output(text.rstrip("\n"))
        code = proc.wait()
        if code != 0 and not _mounted_ok(work):
            raise StepUnavailable(
                f"the overlay mount for the step failed (exit code {code}); see the lines above"
            )
        return code
    finally:
        # The overlay work directory holds kernel-owned files; the rest is ours.
        shutil.rmtree(scratch, ignore_errors=True)


def _mounted_ok(work: Path) -> bool:
    """Whether overlayfs ever used `work` (it creates `work/work` at mount time)."""
    return (work / "work").exists()
