"""pods/portforward against the real kubectl (SPDY over WebSocket) and the Python client (v4)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("portforward"))
    yield server
    server.stop()


def web_pod(name: str, port: int = 8888) -> dict[str, Any]:
    # Each pod serves its own /content, holding a file that names the pod.
    script = f"echo {name} > whoami; exec python3 -m http.server {port} --bind 127.0.0.1"
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.11",
                    "command": ["sh", "-c", script],
                    "workingDir": "/content",
                    "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    core = client.CoreV1Api(api)
    for name in ("web-a", "web-b"):
        core.create_namespaced_pod("default", web_pod(name))

    def ready(name: str) -> bool:
        cs = core.read_namespaced_pod(name, "default").status.container_statuses
        return bool(cs and cs[0].ready)

    for name in ("web-a", "web-b"):
        wait_for(lambda: ready(name), 30, f"{name} ready")  # noqa: B023
    yield core
    api.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def v4_get(core: Any, pod: str, path: str, port: int = 8888) -> bytes:
    from kubernetes.stream import portforward

    pf = portforward(core.connect_get_namespaced_pod_portforward, pod, "default", ports=str(port))
    s = pf.socket(port)
    s.setblocking(True)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert pf.error(port) is None
    return data


def test_kubectl_port_forward_carries_http(ks: KubesimServer, core: Any) -> None:
    local = free_port()
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(ks.kubeconfig),
            "--cache-dir",
            str(ks.cache_dir),
            "port-forward",
            "pod/web-a",
            f"{local}:8888",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "Forwarding from 127.0.0.1" in proc.stdout.readline()
        for _ in range(3):  # several connections through one SPDY session
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/whoami", timeout=10) as resp:
                assert resp.read() == b"web-a\n"
        big = os.urandom(3 * 2**20)
        core_exec_write(ks, "web-a", "/content/big.bin", big)
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/big.bin", timeout=30) as resp:
            assert hashlib.md5(resp.read()).hexdigest() == hashlib.md5(big).hexdigest()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


def core_exec_write(ks: KubesimServer, pod: str, path: str, data: bytes) -> None:
    out = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(ks.kubeconfig),
            "--cache-dir",
            str(ks.cache_dir),
            "exec",
            "-i",
            pod,
            "--",
            "sh",
            "-c",
            f"cat > {path}",
        ],
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_kubectl_refuses_a_pod_that_is_not_running(ks: KubesimServer, core: Any) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "never-runs"},
            "spec": {"containers": [{"name": "c", "image": "nosuch/img", "command": ["true"]}]},
        },
    )
    out = ks.kubectl("port-forward", "pod/never-runs", f"{free_port()}:80", check=False, timeout=20)
    assert out.returncode != 0 and "pod is not running. Current status=Pending" in out.stderr
    core.delete_namespaced_pod("never-runs", "default", grace_period_seconds=0)


def test_python_client_port_forward_http(core: Any) -> None:
    data = v4_get(core, "web-a", "/whoami")
    assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"web-a\n")


def test_two_pods_on_the_same_port_are_separate(core: Any) -> None:
    assert v4_get(core, "web-a", "/whoami").endswith(b"web-a\n")
    assert v4_get(core, "web-b", "/whoami").endswith(b"web-b\n")


def test_connection_refused_is_reported_on_the_error_channel(core: Any) -> None:
    from kubernetes.stream import portforward

    pf = portforward(core.connect_get_namespaced_pod_portforward, "web-a", "default", ports="9")
    s = pf.socket(9)
    s.setblocking(True)
    s.settimeout(10)
    assert s.recv(10) == b""
    error = wait_for(lambda: pf.error(9), 10, "error text")
    assert "connection refused" in error and "error forwarding port 9 to pod web-a" in error


def test_drop_streams_closes_an_open_port_forward(ks: KubesimServer, core: Any) -> None:
    from kubernetes.stream import portforward

    pf = portforward(core.connect_get_namespaced_pod_portforward, "web-b", "default", ports="8888")
    s = pf.socket(8888)
    s.setblocking(True)
    s.settimeout(10)
    wait_for(lambda: ks.admin.status()["openStreams"] >= 1, what="tracked")
    assert ks.admin.drop_streams() >= 1
    assert s.recv(10) == b""  # the forwarded connection ends with its stream
    s.close()


def test_drop_streams_ends_kubectl_port_forward(ks: KubesimServer, core: Any) -> None:
    local = free_port()
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(ks.kubeconfig),
            "--cache-dir",
            str(ks.cache_dir),
            "port-forward",
            "pod/web-b",
            f"{local}:8888",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/whoami", timeout=10) as resp:
            assert resp.read() == b"web-b\n"
        assert ks.admin.drop_streams() >= 1
        assert proc.wait(15) != 0
        assert "lost connection to pod" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


MD5_SERVER = """
import hashlib, socket
s = socket.socket()
s.bind(("127.0.0.1", 7000))
s.listen(5)
while True:
    c, _ = s.accept()
    h = hashlib.md5()
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d)
    c.sendall(h.hexdigest().encode())
    c.close()
"""


def test_kubectl_port_forward_upload_with_half_close(ks: KubesimServer, core: Any) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "md5"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "python",
                        "command": ["python3", "-c", MD5_SERVER],
                        "readinessProbe": {"tcpSocket": {"port": 7000}, "periodSeconds": 1},
                    }
                ]
            },
        },
    )

    def ready() -> bool:
        cs = core.read_namespaced_pod("md5", "default").status.container_statuses
        return bool(cs and cs[0].ready)

    wait_for(ready, 30, "md5 ready")
    local = free_port()
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(ks.kubeconfig),
            "--cache-dir",
            str(ks.cache_dir),
            "port-forward",
            "pod/md5",
            f"{local}:7000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        data = os.urandom(16 * 2**20)
        with socket.create_connection(("127.0.0.1", local), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # SPDY FIN -> the pod's server sees EOF and answers
            assert s.recv(100).decode() == hashlib.md5(data).hexdigest()
    finally:
        proc.terminate()
        proc.wait(10)
        core.delete_namespaced_pod("md5", "default", grace_period_seconds=0)
