"""Wire details where a lenient double would hide a client bug: what DELETE answers, how Status
bodies are laid out, how boolean query parameters read, and the 1 MiB limit of ConfigMaps and
Secrets. Each is checked with raw HTTP (the bytes) and with the official Python client (whether it
parses them)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubesim.testing import KubesimServer


def raw(server: KubesimServer, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    if server.token:
        request.add_header("Authorization", f"Bearer {server.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.parametrize(
    ("resource", "manifest", "returns_object"),
    [
        (
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "x"},
                "spec": {"ports": [{"port": 80}]},
            },
            True,
        ),
        ("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"}}, True),
        (
            "resourcequotas",
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "x"},
                "spec": {"hard": {"pods": "1"}},
            },
            True,
        ),
        (
            "configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}},
            False,
        ),
        ("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}, False),
    ],
)
def test_delete_answers_the_object_or_a_status_as_upstream(
    apiserver: KubesimServer, resource: str, manifest: dict[str, Any], returns_object: bool
) -> None:
    path = f"/api/v1/namespaces/default/{resource}"
    assert raw(apiserver, "POST", path, manifest)[0] == 201
    code, body = raw(apiserver, "DELETE", f"{path}/x")
    assert code == 200 and body.endswith(b"\n")
    answer = json.loads(body)
    if returns_object:
        assert answer["kind"] == manifest["kind"] and answer["metadata"]["name"] == "x"
    else:
        assert list(answer) == ["kind", "apiVersion", "metadata", "status", "details"]
        assert answer["status"] == "Success"
        assert list(answer["details"]) == ["name", "kind", "uid"]


def test_the_python_client_parses_what_delete_answers(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service(
        "default", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    )
    core.create_namespaced_service_account("default", {"metadata": {"name": "sa"}})
    core.create_namespaced_resource_quota(
        "default", {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}}
    )
    deleted_service = core.delete_namespaced_service("svc", "default")
    deleted_account = core.delete_namespaced_service_account("sa", "default")
    deleted_quota = core.delete_namespaced_resource_quota("q", "default")
    assert isinstance(deleted_quota, client.V1ResourceQuota) and deleted_quota.spec.hard == {"pods": "1"}
    assert isinstance(deleted_service, client.V1Service) and deleted_service.metadata.name == "svc"
    assert isinstance(deleted_account, client.V1ServiceAccount) and deleted_account.metadata.name == "sa"


def test_a_failure_status_has_the_real_field_order_and_ends_with_a_newline(apiserver: KubesimServer) -> None:
    code, body = raw(apiserver, "GET", "/api/v1/namespaces/default/configmaps/absent")
    assert code == 404 and body.endswith(b"}\n")
    assert list(json.loads(body)) == [
        "kind",
        "apiVersion",
        "metadata",
        "status",
        "message",
        "reason",
        "details",
        "code",
    ]


@pytest.mark.parametrize(
    ("value", "watches"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("0", False),
    ],
)
def test_boolean_query_parameters_read_as_the_real_server_reads_them(
    apiserver: KubesimServer, value: str, watches: bool
) -> None:
    request = urllib.request.Request(
        f"{apiserver.url}/api/v1/namespaces/default/configmaps?watch={value}&timeoutSeconds=1"
    )
    if apiserver.token:
        request.add_header("Authorization", f"Bearer {apiserver.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        first = json.loads(response.read().split(b"\n")[0] or b"{}")
    # A watch answers events ({"type", "object"}) or nothing before its timeout; a list, a ConfigMapList.
    assert (first.get("kind") != "ConfigMapList") == watches


def test_a_configmap_over_one_mib_is_refused_with_the_real_message(api: Any) -> None:
    core = client.CoreV1Api(api)
    big = "x" * (1024 * 1024)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", {"metadata": {"name": "big"}, "data": {"k": big}})
    assert e.value.status == 422
    assert json.loads(e.value.body)["message"] == (
        'ConfigMap "big" is invalid: []: Too long: must have at most 1048576 bytes'
    )
    # Exactly at the limit is allowed; growing past it by a patch is refused too.
    core.create_namespaced_config_map("default", {"metadata": {"name": "full"}, "data": {"k": big[:-1]}})
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("full", "default", {"data": {"more": "y"}})
    assert e.value.status == 422


def test_a_secret_over_one_mib_is_refused(api: Any) -> None:
    core = client.CoreV1Api(api)
    value = base64.b64encode(b"\0" * (1024 * 1024)).decode()
    with pytest.raises(ApiException) as e:
        core.create_namespaced_secret("default", {"metadata": {"name": "big"}, "data": {"k": value}})
    assert e.value.status == 422
    assert json.loads(e.value.body)["message"] == (
        'Secret "big" is invalid: data: Too long: must have at most 1048576 bytes'
    )


def test_a_stalled_watch_goes_silent_without_closing(apiserver: KubesimServer) -> None:
    # What a client sees of a connection that died without a FIN: no events, no end. Only its own
    # read timeout gets it out.
    from urllib3.exceptions import ReadTimeoutError

    api = apiserver.api_client()
    try:
        core = client.CoreV1Api(api)
        response = core.list_namespaced_config_map(
            "default", watch=True, timeout_seconds=2, _preload_content=False, _request_timeout=(5, 4)
        )
        assert apiserver.admin.stall_streams() == 1
        core.create_namespaced_config_map("default", {"metadata": {"name": "unseen"}})
        with pytest.raises(ReadTimeoutError):  # 4 s: past the server's own 2 s end, and still nothing
            response.read()
    finally:
        api.close()
