"""HTTPS, bearer tokens, client certificates, forbidden namespaces, and injected faults."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from kubesim.testing import KubesimServer


@pytest.fixture
def tls_server(kubesim_factory: Any) -> KubesimServer:
    return kubesim_factory(
        tls=True, kubelet=False, extra_tokens={"alice-token": "alice"}, forbidden=[("alice", "secret-ns")]
    )  # type: ignore[no-any-return]


def _get(server: KubesimServer, path: str, token: str | None) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    req = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_https_with_bearer_token(tls_server: KubesimServer) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    status, body = _get(tls_server, "/api/v1/namespaces", tls_server.token)
    assert status == 200 and body["kind"] == "NamespaceList"
    status, body = _get(tls_server, "/api/v1/namespaces", None)
    assert status == 401 and body["reason"] == "Unauthorized"
    status, body = _get(tls_server, "/api/v1/namespaces", "wrong")
    assert status == 401
    # Version and health are public, as on a real server; a wrong token is still refused.
    assert _get(tls_server, "/version", None) == (200, {**_get(tls_server, "/version", tls_server.token)[1]})
    assert _get(tls_server, "/version", "wrong")[0] == 401
    api = tls_server.api_client()
    names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert "default" in names
    api.close()
    out = tls_server.kubectl("get", "ns", "default", "-o", "name").stdout.strip()
    assert out == "namespace/default"


def test_https_with_client_certificate(tls_server: KubesimServer) -> None:
    api = tls_server.api_client(context="kubesim-cert")
    assert client.CoreV1Api(api).read_namespace("default").metadata.name == "default"
    api.close()
    out = tls_server.kubectl("get", "ns", "kube-system", "-o", "name", context="kubesim-cert").stdout.strip()
    assert out == "namespace/kube-system"
    who = json.loads(tls_server.kubectl("auth", "whoami", "-o", "json", context="kubesim-cert").stdout)
    assert who["status"]["userInfo"]["username"] == "kubesim-cert-user"
    assert "system:masters" in who["status"]["userInfo"]["groups"]
    assert (
        tls_server.kubectl("auth", "can-i", "create", "pods", context="kubesim-cert").stdout.strip() == "yes"
    )


def test_forbidden_namespace_answers_403(tls_server: KubesimServer) -> None:
    tls_server.admin.forbid("alice", "team-b")
    status, body = _get(tls_server, "/api/v1/namespaces/secret-ns/pods", "alice-token")
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" '
        'in the namespace "secret-ns"'
    )
    status, body = _get(tls_server, "/apis/batch/v1/namespaces/team-b/jobs/j1", "alice-token")
    assert status == 403
    assert body["message"].startswith('jobs.batch "j1" is forbidden: User "alice" cannot get resource "jobs"')
    status, _ = _get(tls_server, "/api/v1/namespaces/default/pods", "alice-token")
    assert status == 200
    tls_server.admin.add_token("bob-token", "bob")
    status, _ = _get(tls_server, "/api/v1/namespaces/secret-ns/pods", "bob-token")
    assert status == 200


def test_unavailable_window_then_recovery(apiserver: KubesimServer) -> None:
    api = apiserver.api_client()
    core = client.CoreV1Api(api)
    apiserver.admin.unavailable(1.0)
    with pytest.raises(ApiException) as e:
        core.list_namespace()
    assert e.value.status == 503 and json.loads(e.value.body)["reason"] == "ServiceUnavailable"
    deadline = time.monotonic() + 10
    while True:
        try:
            core.list_namespace()
            break
        except ApiException as err:
            assert err.status == 503
            assert time.monotonic() < deadline, "still unavailable after the window"
            time.sleep(0.1)
    apiserver.admin.unavailable(5.0, status=500)
    with pytest.raises(ApiException) as e:
        core.list_namespace()
    assert e.value.status == 500
    apiserver.admin.clear()
    core.list_namespace()
    api.close()


def test_hang_holds_requests_until_window_ends(apiserver: KubesimServer) -> None:
    api = apiserver.api_client()
    core = client.CoreV1Api(api)
    apiserver.admin.hang(1.5)
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
        core.list_namespace(_request_timeout=0.3)
    start = time.monotonic()
    core.list_namespace(_request_timeout=10)
    assert time.monotonic() - start < 1.6
    api.close()


def test_slow_delays_each_response(apiserver: KubesimServer) -> None:
    api = apiserver.api_client()
    core = client.CoreV1Api(api)
    apiserver.admin.slow(0.4, duration=5)
    start = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - start >= 0.4
    apiserver.admin.clear()
    api.close()


def test_drop_streams_closes_open_watch(apiserver: KubesimServer) -> None:
    api = apiserver.api_client()
    core = client.CoreV1Api(api)
    outcome: dict[str, Any] = {}
    opened = threading.Event()
    rv = core.list_namespaced_config_map("default").metadata.resource_version

    def run() -> None:
        try:
            resp = core.list_namespaced_config_map(
                "default", watch=True, resource_version=rv, _preload_content=False
            )
            opened.set()
            for _ in resp.stream(1024):
                pass
            outcome["ended"] = "clean"
        except Exception as e:  # the interesting part: what a client sees
            outcome["ended"] = type(e).__name__
        opened.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert opened.wait(10)
    deadline = time.monotonic() + 10
    while apiserver.admin.status()["openStreams"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert apiserver.admin.drop_streams() == 1
    t.join(10)
    assert not t.is_alive()
    print("client saw:", outcome["ended"])
    assert outcome["ended"] in ("ProtocolError", "clean")  # aborted mid-chunk: urllib3 ProtocolError
    # The Python client's Watch surfaces the broken connection instead of hanging.
    api.close()


def test_admin_requires_admin_token(apiserver: KubesimServer) -> None:
    req = urllib.request.Request(apiserver.url + "/_kubesim/faults")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401
    assert apiserver.admin.status()["openStreams"] == 0


def test_plain_http_accepts_anonymous_and_token(apiserver: KubesimServer) -> None:
    with urllib.request.urlopen(apiserver.url + "/version", timeout=5) as resp:
        assert json.loads(resp.read())["minor"] == "32"
    host, port = apiserver.url.rsplit("//", 1)[1].split(":")
    assert host == "127.0.0.1"
    with socket.create_connection((host, int(port)), timeout=5):
        pass


def test_watch_survives_unavailable_window_with_retry(apiserver: KubesimServer) -> None:
    api = apiserver.api_client()
    core = client.CoreV1Api(api)
    apiserver.admin.unavailable(0.5)
    with pytest.raises(ApiException) as e:
        next(iter(watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1)))
    assert e.value.status == 503
    time.sleep(0.6)
    assert list(watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1)) == []
    api.close()


def test_kubectl_auth_can_i_sees_forbidden_namespace(kubesim_factory: Any, tmp_path: Any) -> None:
    server: KubesimServer = kubesim_factory(tls=True, kubelet=False, token="alice-token")
    server.admin.add_token("alice-token", "alice")
    server.admin.forbid("alice", "locked")
    assert server.kubectl("auth", "can-i", "get", "pods", "-n", "locked", check=False).stdout.startswith("no")
    assert server.kubectl("auth", "can-i", "get", "pods", "-n", "open").stdout.strip() == "yes"
    res = server.kubectl("get", "pods", "-n", "locked", check=False)
    assert res.returncode == 1
    assert (
        'Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API '
        'group "" in the namespace "locked"'
    ) in res.stderr
