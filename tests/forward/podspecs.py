"""Pod manifests the forward integration tests and the forward benchmark run in kubesim."""

from __future__ import annotations

import os
import sys
from typing import Any

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
