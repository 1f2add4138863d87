"""Helpers of the controller's integration tests: the controller as a process, Notebook CRUD and
polling with deadlines."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polling

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "nbd.dev", "v1alpha1", "notebooks"


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Polls `probe` until it returns something truthy; fails naming `what` at the deadline."""
    result: T = polling.wait_for(probe, timeout, what, interval, retry_on)
    return result


def tarball(files: dict[str, str]) -> bytes:
    """A small deterministic tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            data = files[name].encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put(url: str, body: bytes, md5_hex: str) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        headers={
            "Content-MD5": base64.b64encode(bytes.fromhex(md5_hex)).decode(),
            "Content-Type": "application/octet-stream",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        status: int = response.status
        return status


@dataclass
class Controller:
    """`nbd-controller` as a subprocess; its log goes to a file (shown when a test fails)."""

    kubeconfig: Path
    env: dict[str, str]
    log_path: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nbd_controller.main",
                "--kubeconfig",
                str(self.kubeconfig),
                "--log-level",
                "DEBUG",
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)
                proc.wait(timeout=15)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Notebooks:
    """Notebook CRUD through the kubernetes client (`Runs` for Runs)."""

    plural = PLURAL
    kind = "Notebook"

    def __init__(self, api_client: Any, namespace: str = "default") -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.api_client = api_client
        self.namespace = namespace

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        out: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, body
        )
        return out

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            out: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, self.plural, name
            )
            return out
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for condition in self.status(name).get("conditions") or []:
            if condition["type"] == type_:
                return dict(condition)
        return None

    def jobs(self, selector: str = "app.kubernetes.io/managed-by=nbd-controller") -> list[dict[str, Any]]:
        items = self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
        return [self.api_client.sanitize_for_serialization(j) for j in items]

    def pod(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return dict(
                self.api_client.sanitize_for_serialization(
                    self.core.read_namespaced_pod(name, self.namespace)
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise


class Runs(Notebooks):
    """Run CRUD through the kubernetes client."""

    plural = "runs"
    kind = "Run"

    def exec(self, pod: str, command: list[str], container: str | None = None) -> str:
        """The output of `command` run in `pod` (pods/exec over WebSocket)."""
        from kubernetes.stream import stream

        kwargs: dict[str, Any] = {"container": container} if container else {}
        out: str = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            command=command,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            **kwargs,
        )
        return out
