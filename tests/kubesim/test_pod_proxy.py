"""The pods/proxy subresource: to the pod's IP and port, its errors as the real server words them,
and RBAC on `pods/proxy`."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kubesim.testing import KubesimServer
from tests.kubesim.test_service_proxy import _call, _Echo, backend  # noqa: F401  (the fixture)


@pytest.fixture
def cluster(kubesim_factory: Any, backend: int) -> KubesimServer:  # noqa: F811
    server: KubesimServer = kubesim_factory(
        kubelet=False,
        extra_tokens={"alice-token": "alice", "bob-token": "bob"},
        extra_args=["--rbac-user", "alice", "--rbac-user", "bob"],
    )
    core = client.CoreV1Api(server.api_client())
    core.create_namespace({"metadata": {"name": "nb"}})
    for name, ports in (
        ("web", [{"containerPort": backend}]),
        ("bare", []),
        ("waiting", [{"containerPort": 1}]),
    ):
        core.create_namespaced_pod(
            "nb",
            {
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "x", "ports": ports}]},
            },
        )
    # No kubelet here: give two pods the address a started pod would have (this machine, where
    # the echo server listens).
    for name in ("web", "bare"):
        core.patch_namespaced_pod_status(name, "nb", {"status": {"phase": "Running", "podIP": "127.0.0.1"}})
    rbac = client.RbacAuthorizationV1Api(server.api_client())
    rbac.create_namespaced_role(
        "nb",
        {
            "metadata": {"name": "proxy"},
            "rules": [{"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        "nb",
        {
            "metadata": {"name": "alice-proxy"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "proxy"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    return server


def test_forwards_to_the_pods_first_container_port_with_path_and_query(
    cluster: KubesimServer,
    backend: int,  # noqa: F811
) -> None:
    status, echo, _ = _call(
        cluster, "/api/v1/namespaces/nb/pods/web/proxy/api/kernels?token=t&x=1", "alice-token"
    )
    assert status == 200
    assert echo["path"] == "/api/kernels?token=t&x=1"
    assert "authorization" not in echo["headers"]
    status, echo, _ = _call(cluster, f"/api/v1/namespaces/nb/pods/web:{backend}/proxy/", "alice-token")
    assert status == 200 and echo["path"] == "/"


def test_errors_as_the_real_server_gives_them(cluster: KubesimServer, backend: int) -> None:  # noqa: F811
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nb/pods/nope/proxy/", "alice-token")
    assert (status, answer["message"]) == (404, 'pods "nope" not found')
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nb/pods/waiting/proxy/", "alice-token")
    assert (status, answer["reason"], answer["message"]) == (400, "BadRequest", "address not allowed")
    # No containerPort and no port asked: port 80, where nothing listens here.
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nb/pods/bare/proxy/", "alice-token")
    assert status == 503 and answer["message"].startswith("error trying to reach service")


def test_rbac_is_on_pods_proxy(cluster: KubesimServer) -> None:
    status, answer, _ = _call(cluster, "/api/v1/namespaces/nb/pods/web/proxy/", "bob-token")
    assert status == 403
    assert answer["message"] == (
        'pods "web" is forbidden: User "bob" cannot get resource "pods/proxy" in API group "" in the '
        'namespace "nb"'
    )
    # get on pods/proxy grants no other verb.
    status, _, _ = _call(cluster, "/api/v1/namespaces/nb/pods/web/proxy/", "alice-token", "POST", b"{}")
    assert status == 403
    assert _Echo.seen == []  # nothing refused reached the pod
