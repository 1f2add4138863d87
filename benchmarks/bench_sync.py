"""Two-way sync: edit latency, initial sync, a large file, and the cost of watching when idle.

The session runs in its own process (the "daemon" role below), as in nbd, so the measuring
process never shares its GIL. The remote side is a kubesim pod reached through `exec` when kubesim
can run pods; otherwise the agent runs as a local child process (the local-subprocess transport)
and the kubectl baselines are reported as not measured.

Figures:
- latency from a write on one side to the complete file on the other, p50/p95 over N edits, both
  directions (target p50 <= 100 ms, p95 <= 250 ms);
- initial sync of 10,000 files of 1-20 KB (target <= 10 s), beside `kubectl cp` of the same tree
  and one `kubectl cp` per file (sampled, extrapolated);
- one 1 GiB file (target <= 1.5x `tar c | kubectl exec -i ... tar x`; locally `tar c | tar x`);
- idle CPU of the daemon (and of the agent) with 50,000 watched files, and the daemon's memory.

Roles: `python -m benchmarks.bench_sync daemon LOCAL STATE local REMOTE_ROOT` or
`... daemon LOCAL STATE kube KUBECONFIG NAMESPACE POD`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure

NAME = "sync"

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the daemon role -----------------------------------------------------------------------------


async def _daemon_main(argv: list[str]) -> None:
    from nbd.sync import SyncOptions, SyncSession, TransportFactory, local_process_factory

    local, state, mode = argv[0], argv[1], argv[2]
    factory: TransportFactory
    target: Any = None
    if mode == "local":
        factory = local_process_factory
        remote_root = argv[3]
    else:
        from nbd.kube.target import load_target
        from nbd.kube.transport import close_transport
        from nbd.sync.exec_transport import exec_transport_factory

        kubeconfig, namespace, pod = argv[3], argv[4], argv[5]
        target = await load_target(kubeconfig, None, namespace)
        factory = exec_transport_factory(target, namespace, pod)
        remote_root = "/content"
    fsync = os.environ.get("NBD_BENCH_FSYNC", "1") == "1"
    options = SyncOptions(
        remote_root=remote_root, max_file_size=2 << 30, agent_cache_dir=tempfile.gettempdir(), fsync=fsync
    )
    session = SyncSession(local, factory, state, options)
    t0 = time.perf_counter()
    await session.start()
    await session.flush(600)
    print(
        json.dumps(
            {
                "ready": time.perf_counter() - t0,
                "pid": os.getpid(),
                "agent_pid": session.remote_endpoint.hello.get("pid"),
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line or line.strip() == b"quit":
            break
        if line.strip() == b"flush":
            t = time.perf_counter()
            st = await session.flush(600)
            print(
                json.dumps(
                    {
                        "flushed": time.perf_counter() - t,
                        "bytes_to_remote": st.bytes_to_remote,
                        "bytes_to_local": st.bytes_to_local,
                    }
                ),
                flush=True,
            )
    await session.stop()
    if mode != "local":
        await close_transport(target)


class Daemon:
    def __init__(self, local: Path, state: Path, mode: list[str], fsync: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_sync", "daemon", str(local), str(state), *mode],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "NBD_BENCH_FSYNC": "1" if fsync else "0"},
        )
        self.info = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the sync daemon exited before answering")
        return dict(json.loads(line))

    def flush(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("flush\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- remotes -------------------------------------------------------------------------------------


class Remote:
    """Where the remote root is, how to reach it, and what baselines are possible."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.kube: Any = None
        self.pod = ""
        self.reason = ""
        self.root = work / "remote"
        self.root.mkdir()

    def mode(self) -> list[str]:
        if self.kube is None:
            return ["local", str(self.root)]
        return ["kube", str(self.kube.kubeconfig), "default", self.pod]

    def reset(self) -> None:
        """Empty the remote root (a fresh pod's /content)."""
        for child in list(self.root.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def kubectl(self, *args: str, input_bytes: bytes | None = None, stdin: Any = None) -> None:
        cmd = [
            "kubectl",
            "--kubeconfig",
            str(self.kube.kubeconfig),
            "--cache-dir",
            str(self.kube.cache_dir),
            *args,
        ]
        subprocess.run(
            cmd, check=True, input=input_bytes, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def stop(self) -> None:
        if self.kube is not None:
            self.kube.stop()


def _start_remote(work: Path) -> Remote:
    remote = Remote(work)
    try:
        from kubesim.running import start_kubesim
    except ImportError as e:
        remote.reason = f"kubesim testing support not importable ({e})"
        return remote
    try:
        server = start_kubesim(work / "kubesim")
    except Exception as e:  # kubesim not usable here: measure locally, say why
        remote.reason = f"kubesim did not start ({e})"
        return remote
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench-sync"},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "python",
                    "workingDir": "/content",
                    "command": ["python3", "-c", "import time; time.sleep(1e9)"],
                }
            ]
        },
    }
    try:
        server.kubectl("apply", "-f", "-", input=json.dumps(pod))
        server.kubectl("wait", "--for=condition=Ready", "pod/bench-sync", "--timeout=60s")
        roots = list(server.state_dir.rglob("default_bench-sync_*/fs/content"))
        if not roots:
            raise RuntimeError("cannot find the pod's /content folder on this machine")
    except Exception as e:
        server.stop()
        remote.reason = f"kubesim cannot run the pod ({str(e)[:200]})"
        return remote
    remote.kube, remote.pod = server, "bench-sync"
    remote.root = roots[0]
    return remote


# -- measurements --------------------------------------------------------------------------------


def _wait_content(path: Path, data: bytes, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.0005)
    raise TimeoutError(f"{path} did not arrive")


def _latency(local: Path, remote: Path, edits: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"to_remote": [], "to_local": []}
    rng = random.Random(1)
    for i in range(edits):
        for direction, (src, dst) in (("to_remote", (local, remote)), ("to_local", (remote, local))):
            name = f"edit-{direction}-{i % 20}.py"
            data = f"# edit {i} {rng.random()}\n".encode() * rng.randint(1, 50)
            tmp = src / f".{name}.swp"
            t0 = time.perf_counter()
            tmp.write_bytes(data)
            os.replace(tmp, src / name)  # editors save through a temp file and a rename
            out[direction].append(_wait_content(dst / name, data) - t0)
            time.sleep(0.02)
    return out


def _make_tree(root: Path, files: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        d = root / f"pkg{i // 100:03d}" / f"mod{(i // 10) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 20 * 1024)
        # Half text-like (compressible), half random.
        data = os.urandom(size) if i % 2 else (b"x = %d\n" % i) * (size // 8 + 1)
        (d / f"f{i}.py").write_bytes(data[:size])
        total += size
    return total


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _proc_rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


@contextlib.contextmanager
def _daemon(local: Path, state: Path, remote: Remote, fsync: bool = True) -> Iterator[Daemon]:
    d = Daemon(local, state, remote.mode(), fsync)
    try:
        yield d
    finally:
        d.stop()


def run(quick: bool = False) -> list[Figure]:
    figures: list[Figure] = []
    edits = 50 if quick else 200
    n_files = 2000 if quick else 10_000
    big = (128 << 20) if quick else (1 << 30)
    idle_files = 10_000 if quick else 50_000
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        work = Path(tmp)
        remote = _start_remote(work)
        where = "kubesim pod via exec" if remote.kube else "local agent process"
        not_measured = remote.reason or ""
        try:
            # 1. Edit latency.
            local = work / "l1"
            local.mkdir()
            (local / "README.md").write_text("bench\n")
            with _daemon(local, work / "s1.json", remote):
                lat = _latency(local, remote.root, edits)
            for direction, samples in lat.items():
                ms = [s * 1000 for s in samples]
                p50, p95 = statistics.median(ms), _pct(ms, 0.95)
                figures.append(
                    Figure(
                        f"edit latency {direction} p50 ({where}, {edits} edits)",
                        p50,
                        "ms",
                        target="<= 100 ms",
                        met=p50 <= 100,
                    )
                )
                figures.append(
                    Figure(
                        f"edit latency {direction} p95 ({where}, {edits} edits)",
                        p95,
                        "ms",
                        target="<= 250 ms",
                        met=p95 <= 250,
                    )
                )

            # 2. Initial sync of many small files. The disk here is shared and its speed swings a
            # lot: nbd and its baseline run interleaved, and the medians are compared.
            local = work / "l2"
            local.mkdir()
            total = _make_tree(local, n_files)
            runs = 1 if quick else 3
            initials: list[float] = []
            cp_alls: list[float] = []
            for r in range(runs):
                remote.reset()
                with _daemon(local, work / f"s2-{r}.json", remote) as d:
                    initials.append(float(d.info["ready"]))
                if remote.kube is not None:
                    remote.reset()
                    t0 = time.perf_counter()
                    remote.kubectl("cp", str(local), f"default/{remote.pod}:/content/cp-all")
                    cp_alls.append(time.perf_counter() - t0)
                    copied = sum(1 for p in (remote.root / "cp-all").rglob("*.py"))
                    if copied != n_files:
                        raise RuntimeError(f"kubectl cp copied {copied} of {n_files} files")
            initial = statistics.median(initials)
            cp_all: float | None = statistics.median(cp_alls) if cp_alls else None
            cp_each: float | None = None
            if remote.kube is not None:
                sample = sorted(local.rglob("*.py"))[:20]
                t0 = time.perf_counter()
                for i, f in enumerate(sample):
                    remote.kubectl("cp", str(f), f"default/{remote.pod}:/content/cp-one-{i}.py")
                cp_each = (time.perf_counter() - t0) / len(sample) * n_files
            base_note = "" if remote.kube else f" (kubectl not measured: {not_measured})"
            figures.append(
                Figure(
                    f"initial sync {n_files} files / {total / 1e6:.0f} MB ({where}, median of {runs})",
                    initial,
                    "s",
                    baseline="kubectl cp of the tree" + base_note,
                    baseline_value=cp_all,
                    target="<= 10 s",
                    met=initial <= 10 if not quick else None,
                )
            )
            if cp_each is not None:
                figures.append(
                    Figure(
                        f"initial sync {n_files} files vs one kubectl cp per file",
                        initial,
                        "s",
                        baseline="kubectl cp per file (20 sampled, extrapolated)",
                        baseline_value=cp_each,
                    )
                )

            # 3. One large file.
            remote.reset()
            local = work / "l3"
            local.mkdir()
            with open(local / "big.bin", "wb") as out:
                for _ in range(big >> 20):
                    out.write(os.urandom(1 << 20))
            big_runs = 1 if quick else 2
            larges: list[float] = []
            baselines: list[float] = []
            for r in range(big_runs):
                remote.reset()
                with _daemon(local, work / f"s3-{r}.json", remote) as d:
                    larges.append(float(d.info["ready"]))
                remote.reset()
                if remote.kube is not None:
                    t0 = time.perf_counter()
                    tar = subprocess.Popen(
                        ["tar", "cf", "-", "-C", str(local), "big.bin"], stdout=subprocess.PIPE
                    )
                    remote.kubectl(
                        "exec", "-i", remote.pod, "--", "tar", "xf", "-", "-C", "/content", stdin=tar.stdout
                    )
                    tar.wait()
                    baselines.append(time.perf_counter() - t0)
                    base_name = "tar c | kubectl exec -i ... tar x"
                else:
                    dest = work / f"tar-dest-{r}"
                    dest.mkdir()
                    t0 = time.perf_counter()
                    subprocess.run(
                        f"tar cf - -C {local} big.bin | tar xf - -C {dest}", shell=True, check=True
                    )
                    baselines.append(time.perf_counter() - t0)
                    shutil.rmtree(dest)
                    base_name = f"local tar c | tar x (kubectl not measured: {not_measured})"
            remote.reset()
            with _daemon(local, work / "s3b.json", remote, fsync=False) as d:
                large_nofsync = float(d.info["ready"])
            large, baseline = statistics.median(larges), statistics.median(baselines)
            figures.append(
                Figure(
                    f"sync of one {big >> 20} MiB file ({where}, median of {big_runs})",
                    large,
                    "s",
                    baseline=base_name,
                    baseline_value=baseline,
                    target="<= 1.5x baseline",
                    met=(large <= 1.5 * baseline) if remote.kube else None,
                )
            )
            figures.append(
                Figure(
                    f"sync of one {big >> 20} MiB file, without fsync ({where})",
                    large_nofsync,
                    "s",
                    baseline=base_name,
                    baseline_value=baseline,
                    target="<= 1.5x baseline",
                    met=(large_nofsync <= 1.5 * baseline) if remote.kube else None,
                )
            )

            # 4. Idle cost with many watched files (both sides already equal: nothing to transfer).
            remote.reset()
            local = work / "l4"
            local.mkdir()
            _make_tree(local, idle_files, seed=11)
            shutil.rmtree(remote.root) if remote.kube is None else None
            if remote.kube is None:
                shutil.copytree(local, remote.root)
            else:
                subprocess.run(["cp", "-a", f"{local}/.", str(remote.root)], check=True)
            with _daemon(local, work / "s4.json", remote) as d:
                pid, agent_pid = int(d.info["pid"]), int(d.info.get("agent_pid") or 0)
                time.sleep(2)
                c0 = _proc_cpu(pid)
                a0 = _proc_cpu(agent_pid) if agent_pid and os.path.exists(f"/proc/{agent_pid}") else None
                window = 5 if quick else 15
                time.sleep(window)
                cpu = (_proc_cpu(pid) - c0) / window * 100
                agent_cpu = ((_proc_cpu(agent_pid) - a0) / window * 100) if a0 is not None else None
                rss = _proc_rss(pid)
            figures.append(
                Figure(
                    f"daemon idle CPU, {idle_files} watched files",
                    cpu,
                    "% of a core",
                    target="~0 (<= 1 %)",
                    met=cpu <= 1,
                )
            )
            if agent_cpu is not None:
                figures.append(
                    Figure(
                        f"agent idle CPU, {idle_files} watched files",
                        agent_cpu,
                        "% of a core",
                        target="~0 (<= 1 %)",
                        met=agent_cpu <= 1,
                    )
                )
            figures.append(
                Figure(
                    f"daemon memory (RSS), {idle_files} watched files",
                    rss,
                    "MB",
                    target="<= 150 MB",
                    met=rss <= 150,
                )
            )
        finally:
            remote.stop()
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "daemon":
        asyncio.run(_daemon_main(sys.argv[2:]))
    else:
        for fig in run(quick="--quick" in sys.argv):
            print(fig)
