"""Starting a kubesim subprocess for the forward integration tests, and pod manifests to run in it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubesim.faults import KubesimAdmin

ECHO_SERVER = r"""
import socket, threading, sys
port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(512)
def serve(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@dataclass
class Kubesim:
    url: str
    kubeconfig: Path
    admin: KubesimAdmin
    state_dir: Path
    token: str | None
    ca_file: str | None
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_kubesim(state_dir: Path, *, tls: bool = False, token: str | None = None) -> Kubesim:
    args = [sys.executable, "-m", "kubesim", "serve", "--state-dir", str(state_dir)]
    if tls:
        args.append("--tls")
    if token:
        args += ["--token", token]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(state_dir.parent / "kubesim.log", "wb"))
    info_path = state_dir / "server.json"
    deadline = time.monotonic() + 30
    while not info_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"kubesim did not start: {(state_dir.parent / 'kubesim.log').read_text()[-2000:]}")
        time.sleep(0.05)
    info: dict[str, Any] = json.loads(info_path.read_text())
    admin = KubesimAdmin(info["url"], info["adminToken"], info.get("caFile"))
    return Kubesim(
        url=info["url"], kubeconfig=Path(info["kubeconfig"]), admin=admin, state_dir=state_dir,
        token=info.get("token"), ca_file=info.get("caFile"), proc=proc,
    )


def pod_manifest(name: str, labels: dict[str, str], command: list[str], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11-slim",
                    "command": command,
                    "ports": [{"containerPort": port}],
                    "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                }
            ],
        },
    }


def echo_pod(name: str, labels: dict[str, str], port: int) -> dict[str, Any]:
    return pod_manifest(name, labels, ["python3", "-c", ECHO_SERVER, str(port)], port)


def http_pod(name: str, labels: dict[str, str], port: int) -> dict[str, Any]:
    return pod_manifest(name, labels, ["python3", "-m", "http.server", str(port), "--bind", "0.0.0.0"], port)


def python_path() -> str:
    return os.path.realpath(sys.executable)
