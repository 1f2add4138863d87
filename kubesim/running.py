"""A running kubesim for tests and benchmarks: a server process (`start_kubesim`) or one in this
process (`start_inprocess`), and `KubesimServer` to talk to it.

This module imports no pytest, so benchmarks and scripts use it in a venv without test tools;
the pytest fixtures built on it are in `kubesim.testing`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubesim.faults import KubesimAdmin

__all__ = ["KubesimServer", "start_kubesim", "start_inprocess", "wait_ready"]


@dataclass
class KubesimServer:
    url: str
    kubeconfig: Path
    token: str | None
    admin: KubesimAdmin
    state_dir: Path
    ca_file: Path | None
    process: subprocess.Popen[bytes] | None = None
    _stopper: Callable[[], None] | None = None
    _stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "kubectl-cache"

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        context: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this server; raises with its output when check fails."""
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir)]
        if context:
            cmd += ["--context", context]
        proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def api_client(self, context: str | None = None) -> Any:
        """A `kubernetes.client.ApiClient` configured from this server's kubeconfig."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), context=context, client_configuration=cfg
        )
        return client.ApiClient(cfg)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._stopper is not None:
            self._stopper()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def wait_ready(
    url: str, ca_file: Path | None, deadline: float, alive: Callable[[], str | None] = lambda: None
) -> None:
    """Poll `/readyz` until 200 or the deadline; `alive()` returns an error text if the server died."""
    ctx: ssl.SSLContext | None = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=str(ca_file)) if ca_file else ssl._create_unverified_context()
    last = ""
    while time.monotonic() < deadline:
        died = alive()
        if died is not None:
            raise RuntimeError(f"kubesim exited before it was ready:\n{died}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as e:
            if e.code == 401:  # TLS + token: readyz still needs credentials; it answers, so it is up
                return
            last = str(e)
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"kubesim at {url} not ready in time: {last}")


def _args_for(
    tls: bool,
    token: str | None,
    gpus: int,
    kubelet: bool,
    history_size: int | None,
    bookmark_interval: float | None,
    extra_tokens: dict[str, str],
    forbidden: list[tuple[str, str]],
    extra_args: list[str],
) -> list[str]:
    args: list[str] = []
    if tls:
        args.append("--tls")
    if token:
        args.append(f"--token={token}")
        if not tls:
            args.append("--allow-anonymous")
    if gpus:
        args += ["--gpus", str(gpus)]
    if not kubelet:
        args.append("--no-kubelet")
    if history_size is not None:
        args += ["--history-size", str(history_size)]
    if bookmark_interval is not None:
        args += ["--bookmark-interval", str(bookmark_interval)]
    for t, u in extra_tokens.items():
        args.append(f"--extra-token={t}={u}")
    for u, ns in forbidden:
        args.append(f"--forbid={u}={ns}")
    return args + list(extra_args)


def start_kubesim(
    state_dir: Path,
    *,
    tls: bool = False,
    token: str | None = "",
    gpus: int = 0,
    kubelet: bool = True,
    history_size: int | None = None,
    bookmark_interval: float | None = None,
    extra_tokens: dict[str, str] | None = None,
    forbidden: list[tuple[str, str]] | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 30.0,
) -> KubesimServer:
    """Start `python -m kubesim serve` in `state_dir` and wait until it answers.

    token "" (the default) generates one; None runs without a token.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if token == "":
        token = secrets.token_urlsafe(16)
    kubeconfig = state_dir / "kubeconfig"
    cmd = [
        sys.executable,
        "-m",
        "kubesim",
        "serve",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--kubeconfig-out",
        str(kubeconfig),
    ]
    cmd += _args_for(
        tls,
        token,
        gpus,
        kubelet,
        history_size,
        bookmark_interval,
        extra_tokens or {},
        forbidden or [],
        extra_args or [],
    )
    log = open(state_dir / "kubesim.log", "wb")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    info_path = state_dir / "server.json"
    deadline = time.monotonic() + timeout

    def alive() -> str | None:
        if proc.poll() is None:
            return None
        return (state_dir / "kubesim.log").read_text(errors="replace")[-4000:]

    try:
        while not info_path.exists():
            died = alive()
            if died is not None:
                raise RuntimeError(f"kubesim exited before it was ready:\n{died}")
            if time.monotonic() > deadline:
                raise TimeoutError("kubesim did not write server.json in time")
            time.sleep(0.02)
        info = json.loads(info_path.read_text())
        ca = Path(info["caFile"]) if info.get("caFile") else None
        wait_ready(info["url"], ca, deadline, alive)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return KubesimServer(
        url=info["url"],
        kubeconfig=kubeconfig,
        token=token,
        admin=KubesimAdmin(info["url"], info["adminToken"], str(ca) if ca else None),
        state_dir=state_dir,
        ca_file=ca,
        process=proc,
    )


def start_inprocess(
    state_dir: Path,
    *,
    tls: bool = False,
    token: str | None = "",
    gpus: int = 0,
    kubelet: bool = True,
    history_size: int = 10000,
    bookmark_interval: float = 10.0,
    timeout: float = 30.0,
) -> KubesimServer:
    """Run a Cluster on a private event loop in a daemon thread of this process."""
    from kubesim.cluster import Cluster, ClusterOptions

    if token == "":
        token = secrets.token_urlsafe(16)
    opts = ClusterOptions(
        tls=tls,
        token=token,
        state_dir=state_dir,
        gpus=gpus,
        kubelet=kubelet,
        history_size=history_size,
        bookmark_interval=bookmark_interval,
        allow_anonymous=not tls,
        kubeconfig_out=state_dir / "kubeconfig",
    )
    loop = asyncio.new_event_loop()
    cluster = Cluster(opts)
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(cluster.start())
        except BaseException as e:  # reported to the starting thread
            errors.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(cluster.stop())
        loop.close()

    thread = threading.Thread(target=run, name="kubesim-inprocess", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise TimeoutError("in-process kubesim did not start in time")
    if errors:
        raise errors[0]

    def stopper() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=20)

    ca = cluster.certs.ca_cert if cluster.certs else None
    server = KubesimServer(
        url=cluster.url,
        kubeconfig=state_dir / "kubeconfig",
        token=token,
        admin=KubesimAdmin(cluster.url, cluster.admin_token, str(ca) if ca else None),
        state_dir=state_dir,
        ca_file=ca,
        _stopper=stopper,
    )
    server.extra["cluster"] = cluster
    server.extra["loop"] = loop
    return server


# ---------------------------------------------------------------------- fixtures
