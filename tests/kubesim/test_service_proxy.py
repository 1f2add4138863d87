"""The services/proxy subresource: its path form, RBAC on the subresource with resourceNames (the
name being the whole NAME:PORT segment), and its errors, with the real Python client and raw HTTP."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubesim.testing import KubesimServer

REPO = Path(__file__).resolve().parents[2]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "md5": hashlib.md5(body).hexdigest(),
            "size": len(body),
        }
        _Echo.seen.append(record)
        out = json.dumps(record).encode()
        self.send_response(201 if self.command == "PUT" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Backend", "echo")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_PUT = do_POST = do_DELETE = _answer


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Echo.seen = []
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cluster(kubesim_factory: Any, backend: int) -> KubesimServer:
    server: KubesimServer = kubesim_factory(
        kubelet=False,
        extra_tokens={"alice-token": "alice", "bob-token": "bob"},
        extra_args=[
            "--rbac-user",
            "alice",
            "--rbac-user",
            "bob",
            "--rbac-user",
            "system:anonymous",
            "--host-service",
            f"nbd-system/nbd-store={backend}",
            "--host-service",
            f"nbd-system/other={backend}",
        ],
    )
    api = server.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "nbd-system"}})
    for name in ("nbd-store", "other"):
        core.create_namespaced_service(
            "nbd-system",
            {
                "metadata": {"name": name},
                "spec": {
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
                },
            },
        )
    # The real manifests' Role and RoleBinding for the store (every authenticated user).
    rbac = client.RbacAuthorizationV1Api(api)
    for doc in yaml.safe_load_all((REPO / "cluster" / "manifests" / "rbac-user.yaml").read_text()):
        if doc and doc["kind"] == "Role":
            rbac.create_namespaced_role(doc["metadata"].get("namespace", "nbd-system"), doc)
        elif doc and doc["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(doc["metadata"].get("namespace", "nbd-system"), doc)
    return server


def _call(
    server: KubesimServer, path: str, token: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        server.url + path,
        data=body,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            **({"Content-Type": "application/octet-stream"} if body else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


PROXY = "/api/v1/namespaces/nbd-system/services/nbd-store:http/proxy"


def test_proxy_forwards_method_path_query_and_body_without_credentials(cluster: KubesimServer) -> None:
    body = b"x" * (3 << 20)
    status, echo, headers = _call(
        cluster, PROXY + "/contexts/a.tar.gz?X-Nbd-Expires=1&s=a%2Fb", "alice-token", "PUT", body
    )
    assert status == 201 and headers["X-Backend"] == "echo"
    assert echo["method"] == "PUT" and echo["path"] == "/contexts/a.tar.gz?X-Nbd-Expires=1&s=a%2Fb"
    assert echo["md5"] == hashlib.md5(body).hexdigest() and echo["size"] == len(body)
    assert "authorization" not in echo["headers"]  # the caller's credentials stay at the API server
    assert echo["headers"]["content-length"] == str(len(body))
    status, echo, _ = _call(cluster, PROXY, "alice-token")
    assert status == 200 and echo["path"] == "/"


def test_rbac_on_the_subresource_names_the_whole_segment(cluster: KubesimServer) -> None:
    # The Role allows nbd-store:http only: not the Service under another spelling, nor another Service.
    for segment in ("nbd-store:8080", "nbd-store", "http:nbd-store:http", "other:http"):
        status, answer, _ = _call(
            cluster, f"/api/v1/namespaces/nbd-system/services/{segment}/proxy/x", "alice-token"
        )
        assert status == 403, segment
        assert answer["reason"] == "Forbidden"
        assert answer["message"] == (
            f'services "{segment}" is forbidden: User "alice" cannot get resource "services/proxy" in API '
            'group "" in the namespace "nbd-system"'
        )
    # Nor does it allow reading the Service object or anything else.
    status, _, _ = _call(cluster, "/api/v1/namespaces/nbd-system/services/nbd-store", "alice-token")
    assert status == 403
    status, _, _ = _call(cluster, PROXY + "/x", "alice-token", "DELETE")
    assert status == 403


def test_a_role_naming_the_service_without_its_port_grants_nothing(cluster: KubesimServer) -> None:
    api = cluster.api_client()
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        "nbd-system",
        {
            "metadata": {"name": "by-name"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services/proxy"],
                    "resourceNames": ["other"],
                    "verbs": ["get"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        "nbd-system",
        {
            "metadata": {"name": "bob-by-name"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "by-name"},
            "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    assert _call(cluster, "/api/v1/namespaces/nbd-system/services/other/proxy/", "bob-token")[0] == 200
    assert _call(cluster, "/api/v1/namespaces/nbd-system/services/other:http/proxy/", "bob-token")[0] == 403
    # services (the object) does not grant services/proxy either.
    rbac.create_namespaced_role(
        "nbd-system",
        {
            "metadata": {"name": "svc"},
            "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["*"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        "nbd-system",
        {
            "metadata": {"name": "bob-svc"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "svc"},
            "subjects": [{"kind": "User", "name": "bob"}],
        },
    )
    assert _call(cluster, "/api/v1/namespaces/nbd-system/services/nbd-store", "bob-token")[0] == 200
    assert _call(cluster, "/api/v1/namespaces/nbd-system/services/other:http/proxy/", "bob-token")[0] == 403


def test_proxy_errors_are_the_real_servers(cluster: KubesimServer, kubesim_factory: Any) -> None:
    admin = cluster.token or ""
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nbd-system/services/missing:http/proxy/", admin)
    assert (status, answer["reason"], answer["message"]) == (404, "NotFound", 'services "missing" not found')
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nbd-system/services/nbd-store:grpc/proxy/", admin)
    assert (status, answer["message"]) == (503, 'no endpoints available for service "nbd-store:grpc"')
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nbd-system/services/a:b:c:d/proxy/", admin)
    assert (status, answer["reason"]) == (400, "BadRequest")
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespaced_service(
        "nbd-system",
        {"metadata": {"name": "lonely"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}},
    )
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nbd-system/services/lonely/proxy/", admin)
    assert (status, answer["message"]) == (503, 'no endpoints available for service "lonely"')
    # No credentials: anonymous, whom no binding allows (system:authenticated is not theirs).
    before = len(_Echo.seen)
    request = urllib.request.Request(cluster.url + PROXY + "/")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403 and len(_Echo.seen) == before


def test_discovery_lists_services_proxy(cluster: KubesimServer) -> None:
    status, answer, _ = _call(cluster, "/api/v1", cluster.token or "")
    proxy = [r for r in answer["resources"] if r["name"] == "services/proxy"]
    assert status == 200 and proxy and set(proxy[0]["verbs"]) >= {"get", "update", "create", "delete"}


WEB = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("pod " + os.environ["HOSTNAME"] + " " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8081), H).serve_forever()
"""


def test_proxy_reaches_a_ready_pod_by_its_named_target_port(kubesim_factory: Any) -> None:
    server: KubesimServer = kubesim_factory()
    core = client.CoreV1Api(server.api_client())
    core.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
            },
        },
    )
    status, answer, _ = _call(
        server, "/api/v1/namespaces/default/services/web:http/proxy/", server.token or ""
    )
    assert (status, answer["message"]) == (503, 'no endpoints available for service "web"')
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "web-0", "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "python:3.12",
                        "command": ["python3", "-c", WEB],
                        "ports": [{"name": "web", "containerPort": 8081}],
                        "readinessProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1},
                    }
                ]
            },
        },
    )
    server.kubectl("wait", "--for=condition=Ready", "pod/web-0", "--timeout=60s")
    request = urllib.request.Request(
        server.url + "/api/v1/namespaces/default/services/web:http/proxy/x/y?z=1",
        headers={"Authorization": f"Bearer {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.read().decode() == "pod web-0 /x/y?z=1"
