"""Table-driven tests of kubesim's pure parts: selectors, patches, CR schemas, the store's contract."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubesim import patch as patching
from kubesim import schema, tables
from kubesim.errors import ApiError
from kubesim.resources import Registry, ResourceInfo
from kubesim.selectors import (
    SelectorError,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)
from kubesim.store import JOBS, NODES, PODS, Store

CM = ("", "v1", "configmaps")

LABELS = {"app": "web", "tier": "front", "empty": ""}


@pytest.mark.parametrize(
    "selector,matches",
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("app notin (db)", True),
        ("missing notin (db)", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("empty=", True),
        ("example.com/key", False),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize("bad", ["app in (a", "=x", "a b", ",", "app=web,"])
def test_label_selector_errors(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_label_selector_from_object() -> None:
    sel = label_selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches(LABELS) and not sel.matches({"app": "web"})


@pytest.mark.parametrize(
    "selector,matches",
    [
        ("metadata.name=p", True),
        ("metadata.name==p", True),
        ("metadata.name!=p", False),
        ("status.phase=Running,spec.nodeName=n1", True),
        ("spec.nodeName=", False),
        ("spec.missing=", True),
        ("spec.hostNetwork=true", True),
    ],
)
def test_field_selectors(selector: str, matches: bool) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "hostNetwork": True},
        "status": {"phase": "Running"},
    }
    assert parse_field_selector(selector).matches(pod) is matches


def test_field_selector_error() -> None:
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name")


@pytest.mark.parametrize(
    "doc,ops,expected",
    [
        ({"a": 1}, [{"op": "add", "path": "/b", "value": 2}], {"a": 1, "b": 2}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3]}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/0", "value": 0}], {"a": [0, 1, 2]}),
        ({"a": 1}, [{"op": "replace", "path": "/a", "value": 5}], {"a": 5}),
        ({"a": 1, "b": 2}, [{"op": "remove", "path": "/a"}], {"b": 2}),
        ({"a": {"x": 1}}, [{"op": "move", "from": "/a/x", "path": "/y"}], {"a": {}, "y": 1}),
        ({"a": {"x": 1}}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": {"x": 1}, "b": {"x": 1}}),
        ({"a/b": 1}, [{"op": "replace", "path": "/a~1b", "value": 2}], {"a/b": 2}),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 1}], {"a": 1}),
    ],
)
def test_json_patch(doc: Any, ops: Any, expected: Any) -> None:
    assert patching.json_patch(doc, ops) == expected


@pytest.mark.parametrize(
    "doc,ops",
    [
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 2}]),
        ({"a": 1}, [{"op": "remove", "path": "/b"}]),
        ({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}]),
        ({"a": 1}, [{"op": "frobnicate", "path": "/a"}]),
        ({"a": 1}, {"op": "add"}),
    ],
)
def test_json_patch_errors(doc: Any, ops: Any) -> None:
    with pytest.raises(patching.PatchError):
        patching.json_patch(doc, ops)


@pytest.mark.parametrize(
    "target,patch,expected",
    [
        ({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": None, "e": 3}}, {"a": 1, "b": {"d": 2, "e": 3}}),
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
        ({"a": 1}, {"a": None}, {}),
    ],
)
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    assert patching.merge_patch(target, patch) == expected


POD_SPEC = {
    "containers": [
        {"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "1"},
    ],
    "volumes": [{"name": "v", "emptyDir": {}}],
    "args": ["x"],
}


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"containers": [{"name": "b", "image": "2"}]}, [("a", "1"), ("b", "2")]),
        ({"containers": [{"name": "c", "image": "3"}]}, [("a", "1"), ("b", "1"), ("c", "3")]),
        ({"containers": [{"name": "a", "$patch": "delete"}]}, [("b", "1")]),
        (
            {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "image": "9"}],
            },
            [("b", "1"), ("a", "9")],
        ),
    ],
)
def test_strategic_merge_containers(patch: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    out = patching.strategic_merge_patch(POD_SPEC, patch)
    assert [(c["name"], c["image"]) for c in out["containers"]] == expected
    assert out["volumes"] == POD_SPEC["volumes"]


def test_strategic_merge_env_and_primitive_lists() -> None:
    out = patching.strategic_merge_patch(
        POD_SPEC, {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}], "args": ["y"]}
    )
    assert out["containers"][0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert out["args"] == ["y"]  # lists without a merge key are replaced


def test_server_side_apply_field_sets() -> None:
    applied = {"spec": {"a": 1, "containers": [{"name": "c", "image": "x"}]}}
    fs = patching.field_set(applied)
    assert fs == {
        "f:spec": {"f:a": {}, "f:containers": {'k:{"name":"c"}': {".": {}, "f:name": {}, "f:image": {}}}}
    }
    current = {"spec": {"a": 1, "b": 2, "containers": [{"name": "c", "image": "x"}]}}
    # Previously applied a and b; now applies only a: b goes.
    stale = patching.field_set({"spec": {"a": 1, "b": 2}})
    assert patching.remove_fields(current, stale, patching.field_set({"spec": {"a": 1}})) == {
        "spec": {"a": 1, "containers": [{"name": "c", "image": "x"}]}
    }


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"type": "integer", "minimum": 1, "maximum": 10},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 4},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "minItems": 1},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "opt": {"type": "string", "nullable": True},
                "ios": {"x-kubernetes-int-or-string": True},
                "nested": {
                    "type": "object",
                    "default": {},
                    "properties": {"x": {"type": "integer", "default": 7}},
                },
            },
        },
    },
}
INFO = ResourceInfo("example.dev", "v1", "widgets", "Widget", True, "widget", schema=SCHEMA, crd_name="w")


def _cr(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


@pytest.mark.parametrize(
    "spec,field,reason,message",
    [
        ({}, "spec.port", "FieldValueRequired", "Required value"),
        (
            {"port": "x"},
            "spec.port",
            "FieldValueTypeInvalid",
            'Invalid value: "string": spec.port in body must be of type integer: "string"',
        ),
        (
            {"port": 0},
            "spec.port",
            "FieldValueInvalid",
            "Invalid value: 0: spec.port in body should be greater than or equal to 1",
        ),
        (
            {"port": 11},
            "spec.port",
            "FieldValueInvalid",
            "Invalid value: 11: spec.port in body should be less than or equal to 10",
        ),
        (
            {"port": 1, "mode": "c"},
            "spec.mode",
            "FieldValueNotSupported",
            'Unsupported value: "c": supported values: "a", "b"',
        ),
        (
            {"port": 1, "name": "AB"},
            "spec.name",
            "FieldValueInvalid",
            "Invalid value: \"AB\": spec.name in body should match '^[a-z]+$'",
        ),
        (
            {"port": 1, "name": "a"},
            "spec.name",
            "FieldValueInvalid",
            'Invalid value: "a": spec.name in body should be at least 2 chars long',
        ),
        (
            {"port": 1, "name": "abcde"},
            "spec.name",
            "FieldValueTooLong",
            "Too long: may not be more than 4 bytes",
        ),
        (
            {"port": 1, "tags": []},
            "spec.tags",
            "FieldValueInvalid",
            "Invalid value: 0: spec.tags in body should have at least 1 items",
        ),
        (
            {"port": 1, "tags": ["a", "b", "c"]},
            "spec.tags",
            "FieldValueTooMany",
            "Too many: 3: must have at most 2 items",
        ),
        (
            {"port": 1, "tags": [1]},
            "spec.tags[0]",
            "FieldValueTypeInvalid",
            'Invalid value: "integer": spec.tags[0] in body must be of type string: "integer"',
        ),
        (
            {"port": 1, "env": {"A": 1}},
            "spec.env.A",
            "FieldValueTypeInvalid",
            'Invalid value: "integer": spec.env.A in body must be of type string: "integer"',
        ),
        (
            {"port": 1, "ios": [1]},
            "spec.ios",
            "FieldValueTypeInvalid",
            'Invalid value: "array": spec.ios in body must be of type integer,string: "array"',
        ),
    ],
)
def test_schema_rejections(spec: dict[str, Any], field: str, reason: str, message: str) -> None:
    with pytest.raises(ApiError) as e:
        schema.admit(INFO, _cr(**spec), None, None, None)
    assert e.value.code == 422
    assert e.value.details is not None
    assert e.value.details["causes"] == [{"reason": reason, "message": message, "field": field}]
    assert e.value.message == f'Widget.example.dev "w" is invalid: {field}: {message}'


def test_schema_defaults_prunes_and_preserves() -> None:
    warnings: list[str] = []
    out = schema.admit(
        INFO,
        {**_cr(port=3, junk=1, free={"any": {"thing": 1}}, opt=None, ios="50%"), "top": 1},
        None,
        None,
        warnings,
    )
    assert out["spec"] == {
        "port": 3,
        "mode": "a",
        "free": {"any": {"thing": 1}},
        "opt": None,
        "ios": "50%",
        "nested": {"x": 7},
    }
    assert "top" not in out
    assert warnings == ['unknown field "spec.junk"', 'unknown field "top"']
    with pytest.raises(ApiError) as e:
        schema.admit(INFO, _cr(port=3, junk=1), None, "Strict", None)
    assert e.value.code == 400 and 'strict decoding error: unknown field "spec.junk"' in e.value.message
    assert schema.admit(INFO, _cr(port=3, junk=1), None, "Ignore", warnings)["spec"] == {
        "port": 3,
        "mode": "a",
        "nested": {"x": 7},
    }


@pytest.mark.parametrize(
    "path,expected",
    [
        (".spec.port", [5]),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[*].type", ["Ready", "Built"]),
        (".status.conditions[1].type", ["Built"]),
        (".missing.x", []),
    ],
)
def test_printer_column_jsonpath(path: str, expected: list[Any]) -> None:
    obj = {
        "spec": {"port": 5},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Built", "status": "False"}]},
    }
    assert tables.jsonpath(obj, path) == expected


def _pod(name: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **meta}, "spec": {"containers": [{"name": "c", "image": "i"}]}}


def test_store_versions_and_noop_writes() -> None:
    s = Store()
    a = s.create(CM, {"metadata": {"name": "a"}, "data": {"x": "1"}}, "default")
    rv = a["metadata"]["resourceVersion"]
    same = s.replace(CM, "default", "a", a)
    assert same["metadata"]["resourceVersion"] == rv  # nothing changed: no new version
    b = s.patch(CM, "default", "a", {"data": {"x": "2"}}, "merge")
    assert int(b["metadata"]["resourceVersion"]) > int(rv)
    with pytest.raises(ApiError) as e:
        s.replace(CM, "default", "a", a)
    assert e.value.code == 409
    with pytest.raises(ApiError) as e:
        s.create(CM, {"metadata": {"name": "Bad_Name"}}, "default")
    assert e.value.code == 422
    with pytest.raises(ApiError) as e:
        s.create(CM, {"metadata": {}}, "default")
    assert e.value.code == 422 and "name or generateName is required" in e.value.message


def test_store_pod_graceful_deletion_needs_node() -> None:
    s = Store()
    s.create(PODS, _pod("unbound"), "default")
    s.delete(PODS, "default", "unbound")
    assert s.get(PODS, "default", "unbound") is None
    s.create(NODES, {"metadata": {"name": "n1"}})
    p = s.create(
        PODS,
        {**_pod("bound"), "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}},
        "default",
    )
    out = s.delete(PODS, "default", "bound")
    assert out["metadata"]["deletionTimestamp"] and out["metadata"]["deletionGracePeriodSeconds"] == 30
    assert s.get(PODS, "default", "bound") is not None
    s.delete(PODS, "default", "bound", grace_period_seconds=0)
    assert s.get(PODS, "default", "bound") is None
    assert p["status"]["phase"] == "Pending"


def test_store_job_defaults_and_validation() -> None:
    s = Store()
    j = s.create(
        JOBS,
        {
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}
            },
        },
        "default",
    )
    uid = j["metadata"]["uid"]
    assert j["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert j["spec"]["template"]["metadata"]["labels"]["job-name"] == "j"
    assert (j["spec"]["backoffLimit"], j["spec"]["completions"], j["spec"]["parallelism"]) == (6, 1, 1)
    with pytest.raises(ApiError) as e:
        s.create(
            JOBS,
            {
                "metadata": {"name": "k"},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            },
            "default",
        )
    assert e.value.code == 422 and "spec.template.spec.restartPolicy" in e.value.message


def test_store_subscribe_and_watch_expiry() -> None:
    async def run() -> None:
        s = Store(history_size=3)
        seen: list[tuple[str, str]] = []
        unsubscribe = s.subscribe(CM, lambda ev: seen.append((ev.type, ev.object["metadata"]["name"])))
        start = s.resource_version
        w = s.watch(CM, "default", start)
        s.create(CM, {"metadata": {"name": "a"}}, "default")
        s.delete(CM, "default", "a")
        assert seen == [("ADDED", "a"), ("DELETED", "a")]
        assert [(ev.type, ev.object["metadata"]["name"]) async for ev in _take(w, 2)] == [
            ("ADDED", "a"),
            ("DELETED", "a"),
        ]
        unsubscribe()
        for i in range(4):
            s.create(CM, {"metadata": {"name": f"x{i}"}}, "default")
        assert len(seen) == 2
        with pytest.raises(ApiError) as e:
            s.watch(CM, "default", start)
        assert e.value.code == 410 and e.value.reason == "Expired"
        w.close()

    asyncio.run(run())


async def _take(w: Any, n: int) -> Any:
    for _ in range(n):
        yield await w.__anext__()


def test_store_watch_selector_transitions() -> None:
    async def run() -> None:
        s = Store()
        s.create(CM, {"metadata": {"name": "a"}}, "default")
        w = s.watch(CM, "default", s.resource_version, label_selector="on=yes")
        s.patch(CM, "default", "a", {"metadata": {"labels": {"on": "yes"}}}, "merge")
        s.patch(CM, "default", "a", {"metadata": {"labels": {"on": "no"}}}, "merge")
        assert [ev.type async for ev in _take(w, 2)] == ["ADDED", "DELETED"]
        w.close()

    asyncio.run(run())


def test_registry_crd_lifecycle() -> None:
    s = Store()
    crd = {
        "metadata": {"name": "things.x.dev"},
        "spec": {
            "group": "x.dev",
            "scope": "Cluster",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    s.create(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), crd)
    t = s.create(("x.dev", "v1", "things"), {"metadata": {"name": "t"}, "anything": 1})
    assert t["anything"] == 1 and t["kind"] == "Thing"
    s.delete(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, "things.x.dev")
    assert s.registry.get(("x.dev", "v1", "things")) is None
    bad = {"metadata": {"name": "wrong"}, "spec": {**crd["spec"]}}  # type: ignore[dict-item]
    with pytest.raises(ApiError) as e:
        s.create(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), bad)
    assert e.value.code == 422 and 'must be spec.names.plural+"."+spec.group' in e.value.message
    assert isinstance(Registry().copy(), Registry)


def test_store_add_event_aggregates_and_is_bounded() -> None:
    s = Store()
    pod = s.create(PODS, _pod("p"), "default")
    first = s.add_event(
        "default",
        pod,
        "FailedScheduling",
        "0/1 nodes are available",
        type="Warning",
        component="default-scheduler",
    )
    again = s.add_event(
        "default",
        pod,
        "FailedScheduling",
        "0/1 nodes are available",
        type="Warning",
        component="default-scheduler",
    )
    assert again["metadata"]["name"] == first["metadata"]["name"] and again["count"] == 2
    assert first["involvedObject"] == {
        "kind": "Pod",
        "namespace": "default",
        "name": "p",
        "uid": pod["metadata"]["uid"],
        "apiVersion": "v1",
        "resourceVersion": pod["metadata"]["resourceVersion"],
    }
    s.max_events = 3
    for i in range(5):
        s.add_event("default", pod, "Tick", f"tick {i}")
    messages = sorted(e["message"] for e in s.list(("", "v1", "events"))[0])
    assert messages == ["tick 2", "tick 3", "tick 4"]


def test_pod_and_job_immutability() -> None:
    s = Store()
    s.create(
        PODS, {**_pod("p"), "spec": {"containers": [{"name": "c", "image": "i:1", "args": ["a"]}]}}, "default"
    )
    s.patch(PODS, "default", "p", {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}, "strategic")
    s.patch(
        PODS, "default", "p", {"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}, "strategic"
    )
    with pytest.raises(ApiError) as e:
        s.patch(PODS, "default", "p", {"spec": {"containers": [{"name": "c", "args": ["b"]}]}}, "strategic")
    assert e.value.code == 422
    assert e.value.message.startswith(
        'Pod "p" is invalid: spec: Forbidden: pod updates may not change fields'
    )
    # Trusted writers (the kubelet binding the pod) are not held to it.
    s.update(PODS, "default", "p", lambda o: o["spec"].update(nodeName="n1"))
    assert s.read(PODS, "default", "p")["spec"]["nodeName"] == "n1"
    s.create(
        JOBS,
        {
            "metadata": {"name": "j"},
            "spec": {
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}
            },
        },
        "default",
    )
    s.patch(JOBS, "default", "j", {"spec": {"suspend": True}}, "merge")
    with pytest.raises(ApiError) as e:
        s.patch(
            JOBS,
            "default",
            "j",
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}},
            "strategic",
        )
    assert e.value.code == 422 and "spec.template: Invalid value" in e.value.message
    assert e.value.message.endswith("field is immutable")


def _printed(status: dict[str, Any], **meta: Any) -> list[Any]:
    info = Registry().get(PODS)
    assert info is not None
    pod = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z", **meta},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
        "status": status,
    }
    return tables.table(info, [pod], "1")["rows"][0]["cells"][1:4]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "status,meta,expected",
    [
        ({"phase": "Pending"}, {}, ["0/2", "Pending", 0]),
        (
            {"phase": "Pending", "initContainerStatuses": [{"state": {"running": {}}}]},
            {},
            ["0/2", "Init:0/1", 0],
        ),
        (
            {
                "phase": "Running",
                "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
                "containerStatuses": [
                    {"ready": True, "state": {"running": {}}, "restartCount": 1},
                    {"ready": True, "state": {"running": {}}, "restartCount": 2},
                ],
            },
            {},
            ["2/2", "Running", 3],
        ),
        (
            {
                "phase": "Running",
                "containerStatuses": [
                    {"ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 4},
                    {"ready": True, "state": {"running": {}}},
                ],
            },
            {},
            ["1/2", "CrashLoopBackOff", 4],
        ),
        (
            {
                "phase": "Succeeded",
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                ],
            },
            {},
            ["0/2", "Completed", 0],
        ),
        (
            {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]},
            {},
            ["0/2", "ExitCode:3", 0],
        ),
        (
            {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull"}}}]},
            {},
            ["0/2", "ErrImagePull", 0],
        ),
        (
            {"phase": "Running", "containerStatuses": [{"ready": True, "state": {"running": {}}}]},
            {"deletionTimestamp": "2026-01-01T00:00:01Z"},
            ["1/2", "Terminating", 0],
        ),
    ],
)
def test_pod_status_column(status: dict[str, Any], meta: dict[str, Any], expected: list[Any]) -> None:
    assert _printed(status, **meta) == expected


def test_watch_from_another_incarnation_expires() -> None:
    async def run() -> None:
        old = Store(start_resource_version=100)
        old.create(CM, {"metadata": {"name": "a"}}, "default")
        seen = old.resource_version
        new = Store(start_resource_version=50)  # a restarted server behind the old versions
        for rv in (seen, "10"):
            with pytest.raises(ApiError) as e:
                new.watch(CM, "default", rv)
            assert e.value.code == 410
        later = Store()
        assert int(later.resource_version) > int(seen)  # versions come from the clock by default
        later.watch(CM, "default", later.resource_version).close()

    asyncio.run(run())


@pytest.mark.parametrize(
    "kind_key,selector,ok",
    [
        (PODS, "metadata.name=a,metadata.namespace=b,status.phase=Running,spec.nodeName=n", True),
        (PODS, "spec.containers=x", False),
        (CM, "data.x=1", False),
        (("", "v1", "events"), "involvedObject.uid=u,reason=Failed,type=Warning", True),
        (("", "v1", "secrets"), "type=Opaque", True),
        (JOBS, "status.successful=1", True),
    ],
)
def test_field_selectors_the_real_server_refuses(kind_key: Any, selector: str, ok: bool) -> None:
    s = Store()
    if ok:
        s.list(kind_key, "default", field_selector=selector)
        return
    with pytest.raises(ApiError) as e:
        s.list(kind_key, "default", field_selector=selector)
    assert e.value.code == 400 and e.value.message.startswith("field label not supported: ")


def test_crd_selectable_fields() -> None:
    s = Store()
    crd = {
        "metadata": {"name": "things.x.dev"},
        "spec": {
            "group": "x.dev",
            "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "selectableFields": [{"jsonPath": ".spec.color"}],
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    s.create(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), crd)
    things = ("x.dev", "v1", "things")
    s.create(things, {"metadata": {"name": "red"}, "spec": {"color": "red"}}, "default")
    s.create(things, {"metadata": {"name": "blue"}, "spec": {"color": "blue"}}, "default")
    assert [t["metadata"]["name"] for t in s.list(things, "default", field_selector="spec.color=red")[0]] == [
        "red"
    ]
    with pytest.raises(ApiError):
        s.list(things, "default", field_selector="spec.size=1")


def test_status_writes_during_pod_grace_period_keep_the_pod() -> None:
    s = Store()
    s.create(NODES, {"metadata": {"name": "n1"}})
    s.create(
        PODS,
        {**_pod("p"), "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}},
        "default",
    )
    s.delete(PODS, "default", "p")
    s.update_status(PODS, "default", "p", lambda o: o["status"].update(phase="Running"))
    s.update(PODS, "default", "p", lambda o: o["metadata"].setdefault("labels", {}).update(a="b"))
    assert s.get(PODS, "default", "p") is not None
    s.delete(PODS, "default", "p", grace_period_seconds=0)
    assert s.get(PODS, "default", "p") is None


def test_history_keeps_each_version_intact() -> None:
    async def run() -> None:
        s = Store()
        start = s.resource_version
        # A careless subscriber mutating what it gets must not change the history.
        s.subscribe(CM, lambda ev: ev.object["data"].update(evil="1") if ev.object.get("data") else None)
        s.create(CM, {"metadata": {"name": "a"}, "data": {"v": "1"}}, "default")
        s.patch(CM, "default", "a", {"data": {"v": "2"}}, "merge")
        s.replace(CM, "default", "a", {"metadata": {"name": "a"}, "data": {"v": "3"}})
        s.update(CM, "default", "a", lambda o: o["data"].update(v="4"))
        s.delete(CM, "default", "a")
        w = s.watch(CM, "default", start)
        got = [(ev.type, ev.object["data"]) async for ev in _take(w, 5)]
        assert got == [
            ("ADDED", {"v": "1"}),
            ("MODIFIED", {"v": "2"}),
            ("MODIFIED", {"v": "3"}),
            ("MODIFIED", {"v": "4"}),
            ("DELETED", {"v": "4"}),
        ]
        w.close()

    asyncio.run(run())
