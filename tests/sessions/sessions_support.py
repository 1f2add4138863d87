"""What the session tests share: a notebook launched through the real daemon on the local stack.

`notebook_factory(...)` writes a small project into the test's tmp_path, starts a daemon on the
test's isolated dirs (with the stack's KUBECONFIG) and launches it with `nbctl launch` in the
test's own namespace; the returned `Notebook` knows its daemon, port, token and pod and offers
the probes the tests need (the Jupyter API through the forward, a shell in the pod, the session
as `nbctl status -o json` shows it). `restart_daemon()` starts the next daemon on the same dirs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polling
from fixtures_daemon import DaemonProcess
from fixtures_stack import LocalStack

DEADLINE = 60.0
DOCKERFILE = """FROM python:3.11-slim
RUN pip install --no-cache-dir jupyter_server
WORKDIR /content
COPY . /content
"""


TRANSIENT = (AssertionError, OSError, subprocess.SubprocessError, ValueError, KeyError)


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = DEADLINE, interval: float = 0.1
) -> Any:
    """Polls `predicate` until it returns something truthy; fails naming `what` at the deadline. A
    command or probe that fails meanwhile (an assertion, an OS or subprocess error) counts as "not yet"."""
    return polling.wait_for(predicate, timeout, what, interval, retry_on=TRANSIENT)


def jupyter_api(port: int, timeout: float = 5.0) -> dict[str, Any]:
    """GET /api of the Jupyter server behind 127.0.0.1:port (its version)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=timeout) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def write(path: Path, text: str) -> None:
    """Writes `text` atomically (as an editor saving does), so the sync never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


@dataclasses.dataclass
class Notebook:
    name: str
    namespace: str
    directory: Path
    stack: LocalStack
    daemon: DaemonProcess
    restart: Callable[[], DaemonProcess]
    url: str = ""

    @property
    def port(self) -> int:
        return int(self.url.split("127.0.0.1:", 1)[1].split("/", 1)[0])

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    # --- the daemon and nbctl -------------------------------------------------------------------

    def nbctl(
        self, *args: str, check: bool = True, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        result = self.daemon.run_nbctl(*args, env={"KUBECONFIG": self.stack.kubeconfig}, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"nbctl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}\n"
                f"--- daemon log ---\n{self.daemon.log_text()[-3000:]}"
            )
        return result

    def nbctl_json(self, *args: str) -> dict[str, Any]:
        out = self.nbctl(*args, "--output", "json").stdout.strip().splitlines()
        data: dict[str, Any] = json.loads(out[-1])
        return data

    def status(self) -> dict[str, Any]:
        return self.nbctl_json("status", self.name)

    def sync(self, action: str = "status", *extra: str) -> dict[str, Any]:
        return self.nbctl_json("sync", self.name, action, *extra)

    def launch(self, *extra: str) -> str:
        result = self.nbctl(
            "launch", str(self.directory), "--name", self.name, "-n", self.namespace, *extra, timeout=240.0
        )
        url = result.stdout.strip().splitlines()[-1]
        assert url.startswith("http://127.0.0.1:"), (url, result.stderr)
        self.url = url
        return url

    def restart_daemon(self) -> DaemonProcess:
        """Starts the next daemon on the same dirs and waits until it resumed this session."""
        self.daemon = self.restart()
        # The daemon answers before its resume of persisted sessions finished; until then the
        # Sync RPC says the session is not running.
        wait_for(
            lambda: self.nbctl("sync", self.name, check=False).returncode == 0, "the session to be resumed"
        )
        return self.daemon

    # --- what the session says ------------------------------------------------------------------

    def wait_sync(self, *states: str, timeout: float = DEADLINE) -> dict[str, Any]:
        wanted = {f"SYNC_STATE_{s.upper()}" for s in states}
        return wait_for(
            lambda: (s := self.sync()) and s["state"] in wanted and s, f"sync state in {wanted}", timeout
        )  # type: ignore[no-any-return]

    def flush(self) -> dict[str, Any]:
        return self.sync("flush")

    # --- the pod --------------------------------------------------------------------------------

    def pod(self) -> dict[str, Any]:
        core = self.stack.core()
        pods = core.list_namespaced_pod(
            self.namespace, label_selector=f"nbd.dev/notebook={self.name},nbd.dev/component=notebook"
        ).items
        assert pods, f"no notebook pod in {self.namespace}"
        newest = max(pods, key=lambda p: p.metadata.creation_timestamp)
        return {
            "name": newest.metadata.name,
            "uid": newest.metadata.uid,
            "ready": any(c.type == "Ready" and c.status == "True" for c in (newest.status.conditions or []))
            and not newest.metadata.deletion_timestamp,
        }

    def pod_sh(self, script: str, timeout: float = 30.0) -> str:
        """Runs `sh -c script` in the notebook pod (with the real kubectl); returns stdout."""
        result = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                self.stack.kubeconfig,
                "-n",
                self.namespace,
                "exec",
                self.pod()["name"],
                "-c",
                "notebook",
                "--",
                "sh",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"kubectl exec {script!r} failed: {result.stderr.strip()}")
        return result.stdout

    def pod_read(self, path: str) -> str | None:
        out = self.pod_sh(f"cat /content/{path} 2>/dev/null || echo '<missing>'")
        return None if out == "<missing>\n" else out

    def pod_write(self, path: str, text: str) -> None:
        quoted = text.replace("'", "'\\''")
        target = f"/content/{path}"
        tmp = f"{posixpath.dirname(target)}/.{posixpath.basename(target)}.tmp"
        self.pod_sh(
            f"mkdir -p {posixpath.dirname(target)} && printf '%s' '{quoted}' > {tmp} && mv {tmp} {target}"
        )

    def pod_files(self) -> set[str]:
        out = self.pod_sh("cd /content && find . -type f | sed 's|^\\./||'")
        return {line for line in out.splitlines() if line}

    def local_files(self) -> set[str]:
        return {str(p.relative_to(self.directory)) for p in self.directory.rglob("*") if p.is_file()}


def make_project(directory: Path, files: int = 3, dockerfile: bool | str = False) -> None:
    """A small project; `dockerfile` True writes `DOCKERFILE`, a string writes that Dockerfile."""
    directory.mkdir(parents=True, exist_ok=True)
    if dockerfile:
        (directory / "Dockerfile").write_text(DOCKERFILE if dockerfile is True else dockerfile)
    (directory / "main.py").write_text("print('hello')\n")
    for i in range(files):
        (directory / "data" / f"f{i:02d}.txt").parent.mkdir(exist_ok=True)
        (directory / "data" / f"f{i:02d}.txt").write_text(f"file {i}\n")


def kubesim_admin(stack: LocalStack) -> Any:
    """The fault API of the stack's kubesim (its server.json has the admin token)."""
    from kubesim.faults import KubesimAdmin

    info = json.loads((Path(stack.stack.state_dir) / "kubesim" / "server.json").read_text())
    return KubesimAdmin(info["url"], info["adminToken"], info.get("caFile") or None)
