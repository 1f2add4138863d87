"""The real `kubernetes` Python client against kubesim: CRUD, selectors, watch, patches, CRs."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from kubesim.testing import KubesimServer

GROUP, VERSION, PLURAL = "example.dev", "v1", "widgets"


def _pod(
    name: str, labels: dict[str, str] | None = None, containers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "containers": containers
            or [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]
        },
    }


def _status(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)  # type: ignore[no-any-return]


def widget(name: str, port: int = 80, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"port": port, **spec},
    }


@pytest.fixture
def crd(api: Any, crd_manifest: dict[str, Any]) -> None:
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd_manifest)


def test_configmap_crud_and_errors(api: Any) -> None:
    core = client.CoreV1Api(api)
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "c1"}, "data": {"a": "1"}})
    assert cm.metadata.uid and cm.metadata.resource_version
    got = core.read_namespaced_config_map("c1", "default")
    assert got.data == {"a": "1"}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", {"metadata": {"name": "c1"}})
    assert e.value.status == 409 and _status(e.value)["reason"] == "AlreadyExists"
    assert _status(e.value)["message"] == 'configmaps "c1" already exists'
    got.data["b"] = "2"
    core.replace_namespaced_config_map("c1", "default", got)
    stale = got
    stale.data["c"] = "3"
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c1", "default", stale)  # old resourceVersion
    assert e.value.status == 409 and _status(e.value)["reason"] == "Conflict"
    core.delete_namespaced_config_map("c1", "default")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("c1", "default")
    assert e.value.status == 404
    assert _status(e.value)["message"] == 'configmaps "c1" not found'
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("nope", {"metadata": {"name": "c1"}})
    assert e.value.status == 404 and _status(e.value)["message"] == 'namespaces "nope" not found'


def test_generate_name_and_secret_string_data(api: Any) -> None:
    core = client.CoreV1Api(api)
    s = core.create_namespaced_secret(
        "default", {"metadata": {"generateName": "tok-"}, "stringData": {"k": "v"}}
    )
    assert s.metadata.name.startswith("tok-") and len(s.metadata.name) == 9
    assert s.data == {"k": "dg=="} and s.type == "Opaque"


def test_label_and_field_selectors(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", _pod("a", {"app": "x", "tier": "web"}))
    core.create_namespaced_pod("default", _pod("b", {"app": "x"}))
    core.create_namespaced_pod("default", _pod("c", {"app": "y"}))

    def names(**kw: Any) -> list[str]:
        return sorted(p.metadata.name for p in core.list_namespaced_pod("default", **kw).items)

    assert names(label_selector="app=x") == ["a", "b"]
    assert names(label_selector="app==x,tier") == ["a"]
    assert names(label_selector="app!=x") == ["c"]
    assert names(label_selector="app in (x,y),!tier") == ["b", "c"]
    assert names(label_selector="app notin (x)") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase=Pending,metadata.name!=a") == ["b", "c"]
    assert names(field_selector="spec.nodeName=nowhere") == []
    lst = core.list_namespaced_pod("default", limit=2)
    assert len(lst.items) == 2 and lst.metadata._continue
    rest = core.list_namespaced_pod("default", limit=2, _continue=lst.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["c"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("default", label_selector="app in (x")
    assert e.value.status == 400


def test_strategic_merge_of_containers_by_name(api: Any) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {
                        "containers": [
                            {"name": "a", "image": "img:1", "env": [{"name": "X", "value": "1"}]},
                            {"name": "b", "image": "img:1"},
                        ]
                    },
                },
            },
        },
    )
    apps.patch_namespaced_deployment(
        "d",
        "default",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "b", "image": "img:2"},
                            {"name": "a", "env": [{"name": "Y", "value": "2"}]},
                        ]
                    }
                }
            }
        },
    )
    spec = apps.read_namespaced_deployment("d", "default").spec.template.spec
    by_name = {c.name: c for c in spec.containers}
    assert [c.name for c in spec.containers] == ["a", "b"]
    assert by_name["a"].image == "img:1" and by_name["b"].image == "img:2"
    assert [(e.name, e.value) for e in by_name["a"].env] == [("X", "1"), ("Y", "2")]
    # Pods: only images may change, as on a real server; a list body is a JSON patch.
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        "default", _pod("p", containers=[{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:1"}])
    )
    core.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "b", "image": "img:2"}]}})
    assert [c.image for c in core.read_namespaced_pod("p", "default").spec.containers] == ["img:1", "img:2"]
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "a", "args": ["x"]}]}})
    assert e.value.status == 422 and "pod updates may not change fields" in _status(e.value)["message"]
    core.patch_namespaced_pod("p", "default", [{"op": "add", "path": "/metadata/labels/z", "value": "1"}])
    assert core.read_namespaced_pod("p", "default").metadata.labels == {"z": "1"}


def test_status_subresource_of_builtin(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", _pod("s"))
    core.patch_namespaced_pod_status("s", "default", {"status": {"phase": "Running"}})
    assert core.read_namespaced_pod_status("s", "default").status.phase == "Running"
    # Main-resource writes ignore status.
    core.patch_namespaced_pod(
        "s", "default", {"status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}}
    )
    pod = core.read_namespaced_pod("s", "default")
    assert pod.status.phase == "Running" and pod.metadata.labels == {"a": "b"}


def test_custom_resource_crud_status_and_generation(api: Any, crd: None) -> None:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("widgets.example.dev")
    assert {c.type: c.status for c in crd.status.conditions} == {
        "Established": "True",
        "NamesAccepted": "True",
    }
    co = client.CustomObjectsApi(api)
    w = co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, {**widget("w1"), "status": {"x": 1}, "junk": 1}
    )
    assert w["spec"] == {"port": 80, "mode": "a"}  # defaulted
    assert "status" not in w and "junk" not in w  # status reset on create, unknown field pruned
    assert w["metadata"]["generation"] == 1
    w = co.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"port": 81}})
    assert w["metadata"]["generation"] == 2
    w = co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "w1",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"port": 5}},
    )
    assert w["spec"]["port"] == 81 and w["metadata"]["generation"] == 2
    assert w["status"]["conditions"][0]["type"] == "Ready"
    items = co.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]
    assert [i["metadata"]["name"] for i in items] == ["w1"]
    co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    with pytest.raises(ApiException) as e:
        co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert _status(e.value)["message"] == 'widgets.example.dev "w1" not found'


def test_custom_resource_validation_errors(api: Any, crd: None) -> None:
    co = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("bad", port=0, mode="c"))
    st = _status(e.value)
    assert e.value.status == 422 and st["reason"] == "Invalid"
    assert st["message"].startswith('Widget.example.dev "bad" is invalid: ')
    assert (
        "spec.port: Invalid value: 0: spec.port in body should be greater than or equal to 1" in st["message"]
    )
    fields = {(c["field"], c["reason"]) for c in st["details"]["causes"]}
    assert fields == {("spec.port", "FieldValueInvalid"), ("spec.mode", "FieldValueNotSupported")}
    with pytest.raises(ApiException) as e:
        co.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "x"}, "spec": {}},
        )
    assert _status(e.value)["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.port"}
    ]


def test_server_side_apply_creates_then_updates(api: Any, crd: None) -> None:
    co = client.CustomObjectsApi(api)
    body = widget("ssa", port=90, tags=["a"])

    def apply(**kw: Any) -> Any:
        return co.patch_namespaced_custom_object_with_http_info(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "ssa",
            body,
            field_manager="tests",
            _content_type="application/apply-patch+yaml",
            **kw,
        )

    for port, expected_status in ((90, 201), (91, 200)):
        body["spec"]["port"] = port
        status = apply(force=True)[1]
        # The client decodes only 200 bodies of a patch; a create-by-apply answers 201.
        obj = co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "ssa")
        assert status == expected_status and obj["spec"]["port"] == port
    managers = {m["manager"]: m["operation"] for m in obj["metadata"]["managedFields"]}
    assert managers == {"tests": "Apply"}
    # Fields the manager stops applying are removed.
    del body["spec"]["tags"]
    obj = apply()[0]
    assert "tags" not in obj["spec"] and obj["spec"]["port"] == 91


def test_watch_resumes_from_resource_version(api: Any) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"w{i}"}})
    core.patch_namespaced_config_map("w0", "default", {"data": {"a": "b"}})
    core.delete_namespaced_config_map("w1", "default")
    seen = []
    last = rv
    for ev in watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1
    ):
        seen.append((ev["type"], ev["object"].metadata.name))
        last = ev["object"].metadata.resource_version
    assert seen == [("ADDED", "w0"), ("ADDED", "w1"), ("ADDED", "w2"), ("MODIFIED", "w0"), ("DELETED", "w1")]
    # Resuming from the last seen version yields only what happened after it.
    core.create_namespaced_config_map("default", {"metadata": {"name": "w3"}})
    again = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=last, timeout_seconds=1
        )
    )
    assert [(e["type"], e["object"].metadata.name) for e in again] == [("ADDED", "w3")]


def test_watch_without_version_lists_current_state_and_filters(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "keep", "labels": {"k": "1"}}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "other"}})
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, "default", label_selector="k=1", timeout_seconds=1
        )
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "keep")]


def test_watch_expired_raises_after_one_retry(kubesim_factory: Any) -> None:
    server: KubesimServer = kubesim_factory(history_size=2, kubelet=False)
    api = server.api_client()
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"x{i}"}})
    raw = core.list_namespaced_config_map("default", watch=True, resource_version=rv, _preload_content=False)
    line = json.loads(raw.data.decode().splitlines()[0])
    assert line["type"] == "ERROR" and line["object"]["code"] == 410 and line["object"]["reason"] == "Expired"
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv):
            pass
    assert e.value.status == 410
    api.close()


def test_watch_live_events_and_bookmarks(kubesim_factory: Any) -> None:
    server: KubesimServer = kubesim_factory(bookmark_interval=0.2, kubelet=False)
    api = server.api_client()
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version

    def later() -> None:
        time.sleep(0.5)
        core.create_namespaced_config_map("default", {"metadata": {"name": "live"}})

    t = threading.Thread(target=later)
    t.start()
    raw = core.list_namespaced_config_map(
        "default",
        watch=True,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _preload_content=False,
    )
    types = [json.loads(line)["type"] for line in raw.data.decode().splitlines()]
    t.join()
    assert "ADDED" in types and "BOOKMARK" in types
    api.close()


def test_delete_cascade_background_foreground_orphan(api: Any) -> None:
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)

    def job(name: str) -> Any:
        return batch.create_namespaced_job(
            "default",
            {
                "metadata": {"name": name},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "busybox:1.36"}],
                        }
                    }
                },
            },
        )

    def child(owner: Any, name: str) -> None:
        core.create_namespaced_config_map(
            "default",
            {
                "metadata": {
                    "name": name,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": owner.metadata.name,
                            "uid": owner.metadata.uid,
                        }
                    ],
                }
            },
        )

    def exists(name: str) -> bool:
        return any(c.metadata.name == name for c in core.list_namespaced_config_map("default").items)

    # A dependent created after its owner went (a controller's stale view) is collected too.
    gone = job("gone")
    batch.delete_namespaced_job("gone", "default", propagation_policy="Background")
    child(gone, "late-child")
    assert not exists("late-child")

    j = job("bg")
    child(j, "bg-child")
    batch.delete_namespaced_job("bg", "default", propagation_policy="Background")
    assert not exists("bg-child")
    j = job("fg")
    child(j, "fg-child")
    batch.delete_namespaced_job("fg", "default", propagation_policy="Foreground")
    assert not exists("fg-child")
    assert not batch.list_namespaced_job("default").items
    j = job("or")
    child(j, "or-child")
    batch.delete_namespaced_job("or", "default")  # batch/v1 default: orphan
    assert exists("or-child")
    assert not core.read_namespaced_config_map("or-child", "default").metadata.owner_references


def test_finalizers_hold_deletion(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "f", "finalizers": ["example.dev/hold"]}}
    )
    core.delete_namespaced_config_map("f", "default")
    cm = core.read_namespaced_config_map("f", "default")
    assert cm.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("f", "default")
    assert e.value.status == 404


def test_namespace_delete_removes_contents(api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "tmp"}})
    assert [s.metadata.name for s in core.list_namespaced_service_account("tmp").items] == ["default"]
    core.create_namespaced_config_map("tmp", {"metadata": {"name": "x"}})
    core.delete_namespace("tmp")
    with pytest.raises(ApiException) as e:
        core.read_namespace("tmp")
    assert e.value.status == 404
    assert core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=tmp").items == []


def test_events_core_and_events_k8s_io(api: Any) -> None:
    core = client.CoreV1Api(api)
    pod = core.create_namespaced_pod("default", _pod("ev"))
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "ev.1"},
            "involvedObject": {"kind": "Pod", "name": "ev", "namespace": "default", "uid": pod.metadata.uid},
            "reason": "FailedScheduling",
            "message": "0/1 nodes are available",
            "type": "Warning",
        },
    )
    evs = core.list_namespaced_event("default", field_selector=f"involvedObject.uid={pod.metadata.uid}").items
    assert [e.reason for e in evs] == ["FailedScheduling"]
    v1 = client.EventsV1Api(api).list_namespaced_event("default").items
    assert [(e.reason, e.note, e.regarding.name) for e in v1] == [
        ("FailedScheduling", "0/1 nodes are available", "ev")
    ]


def test_dynamic_client_discovery_sees_new_crd(api: Any, crd: None) -> None:
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(api)
    res = dyn.resources.get(api_version="example.dev/v1", kind="Widget")
    assert res.namespaced and "wd" in res.short_names
    res.create(body=widget("dyn"), namespace="default")
    assert res.get(name="dyn", namespace="default").spec.port == 80


def test_inprocess_server_shares_the_store(kubesim_inprocess: KubesimServer) -> None:
    api = kubesim_inprocess.api_client()
    client.CoreV1Api(api).create_namespaced_config_map("default", {"metadata": {"name": "here"}})
    store = kubesim_inprocess.extra["cluster"].store
    assert store.get(("", "v1", "configmaps"), "default", "here") is not None
    api.close()


def test_abandoned_watch_is_released(kubesim_inprocess: KubesimServer) -> None:
    import socket as socketlib

    store = kubesim_inprocess.extra["cluster"].store
    host, port = kubesim_inprocess.url.rsplit("//", 1)[1].split(":")
    sock = socketlib.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        f"GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {kubesim_inprocess.token}\r\n\r\n".encode()
    )
    assert b"200 OK" in sock.recv(4096)
    deadline = time.monotonic() + 5
    while not store.watches():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sock.close()
    deadline = time.monotonic() + 5
    while store.watches():
        assert time.monotonic() < deadline, "the server kept a watch whose client is gone"
        time.sleep(0.1)


def test_session_server_answers_with_its_kubelet_node(kubesim_session: KubesimServer) -> None:
    api = kubesim_session.api_client()
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 20
    while not core.list_node().items:  # the kubelet registers its Node shortly after start
        assert time.monotonic() < deadline, "no Node registered"
        time.sleep(0.1)
    assert core.list_node().items[0].metadata.name == "kubesim-node"
    assert json.loads(api.call_api("GET", kubesim_session.url + "/version").read())["minor"] == "32"
    api.close()
