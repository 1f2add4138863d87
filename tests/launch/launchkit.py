"""Helpers of the launch's end-to-end tests: nbctl against one daemon on the shared local cluster.

The cluster (`local_stack`) is session-scoped and every test gets its own namespace, so the build
caches, Notebooks and pods of one test never meet another's. Starting a daemon costs about a
second, so one daemon serves a whole module (`launch_daemon`); each test stops and deletes the
sessions it launched (`kit.cleanup(namespace)` runs after it through the `ns` fixture).

The daemon runs with an empty HOME and no KUBECONFIG: a client that passes no kubeconfig meets
"no kubeconfig", and every other launch names the cluster's kubeconfig explicitly (as nbctl does
from $KUBECONFIG).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polling
from fixtures_daemon import DaemonProcess
from fixtures_stack import LocalStack

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
OLD = time.time() - 3600  # mtimes older than the manifest's racy window, so unchanged means cached


@dataclass
class LaunchResult:
    """What `nbctl launch --output json` printed and how it ended."""

    rc: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e[kind] for e in self.events if kind in e]

    def phases(self) -> list[str]:
        return [p["phase"] for p in self.of("phase")]

    def cached_steps(self) -> set[str]:
        return {c["step"] for c in self.of("cached")}

    @property
    def ready(self) -> dict[str, Any]:
        found = self.of("ready")
        assert found, f"no ready event (rc {self.rc}): {self.stderr}\n{self.events[-5:]}"
        return found[-1]

    @property
    def url(self) -> str:
        return str(self.ready["url"])

    @property
    def md5(self) -> str:
        return str(self.ready["session"].get("context_md5") or "")


@dataclass
class LaunchKit:
    """nbctl against the module's daemon, on the shared cluster."""

    daemon: DaemonProcess
    stack: LocalStack
    launched: dict[str, set[str]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> str:
        return self.stack.kubeconfig

    def env(self, **extra: str) -> dict[str, str]:
        return {"KUBECONFIG": self.kubeconfig, **extra}

    def nbctl(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self.daemon.run_nbctl(*args, env=env if env is not None else self.env(), timeout=timeout)

    def launch(
        self,
        directory: Path | str,
        namespace: str,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> LaunchResult:
        self.launched.setdefault(namespace, set())
        started = time.monotonic()
        proc = self.nbctl(
            "launch", str(directory), "-n", namespace, "--output", "json", *args, env=env, timeout=timeout
        )
        seconds = time.monotonic() - started
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return LaunchResult(proc.returncode, events, proc.stderr, seconds)

    def sessions(self) -> list[dict[str, Any]]:
        proc = self.nbctl("list", "--output", "json")
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def session(self, namespace: str, name: str) -> dict[str, Any] | None:
        for s in self.sessions():
            if s.get("namespace") == namespace and s.get("name") == name:
                return s
        return None

    def notebook(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: dict[str, Any] = self.stack.custom().get_namespaced_custom_object(
                "nbd.dev", "v1alpha1", namespace, "notebooks", name
            )
            return obj
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def pods(self, namespace: str, selector: str) -> list[Any]:
        return list(self.stack.core().list_namespaced_pod(namespace, label_selector=selector).items)

    def cleanup(self, namespace: str) -> None:
        for s in self.sessions():
            if s.get("namespace") == namespace:
                self.nbctl("stop", f"{namespace}/{s['name']}", "--delete", "--yes")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e).encode()


def api_url(notebook_url: str, path: str = "api/contents") -> str:
    """http://127.0.0.1:P/lab?token=T -> http://127.0.0.1:P/api/contents?token=T"""
    parts = urllib.parse.urlsplit(notebook_url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, ""))


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """`polling.wait_for` with the launch tests' longer default deadline."""
    return polling.wait_for(check, timeout, what)


def make_project(root: Path, name: str = "proj", *, source: Path = HELLO, unique: bool = False) -> Path:
    """A copy of examples/hello (or `source`) under `root/name`, with old mtimes.

    The store is content-addressed and shared by every namespace of the cluster: a test that must
    see its content uploaded passes `unique`, which adds a file of its own (so its MD5 is new), as
    does one whose upload must not serve another test's first launch.
    """
    target = root / name
    shutil.copytree(source, target)
    if unique:
        (target / "test-id.txt").write_text(uuid.uuid4().hex + "\n")
    age(target)
    return target


def age(directory: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(directory):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (OLD, OLD), follow_symlinks=False)
    os.utime(directory, (OLD, OLD))
