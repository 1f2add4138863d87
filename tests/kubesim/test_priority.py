"""Priority admission: resolving priorityClassName as the upstream plugin does."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubesim import priority
from kubesim.store import PODS, PRIORITY_CLASSES, ApiError, Store


def pc(name: str, value: int, default: bool = False, policy: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": value,
    }
    if default:
        obj["globalDefault"] = True
    if policy:
        obj["preemptionPolicy"] = policy
    return obj


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nb"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


HIGH = pc("notebooks-high", 1000)
LOW_DEFAULT = pc("low", -10, default=True, policy="Never")


@pytest.mark.parametrize(
    "spec, classes, fields, refusal",
    [
        ({}, [], {"priority": 0, "preemptionPolicy": "PreemptLowerPriority"}, None),
        ({}, [HIGH], {"priority": 0}, None),
        (
            {},
            [HIGH, LOW_DEFAULT],
            {"priorityClassName": "low", "priority": -10, "preemptionPolicy": "Never"},
            None,
        ),
        ({"priorityClassName": "notebooks-high"}, [HIGH, LOW_DEFAULT], {"priority": 1000}, None),
        ({"priorityClassName": "system-node-critical"}, [], {"priority": 2000001000}, None),
        ({"priorityClassName": "system-cluster-critical"}, [], {"priority": 2000000000}, None),
        ({"priorityClassName": "gpu-batch"}, [HIGH], {}, "no PriorityClass with name gpu-batch was found"),
        ({"priorityClassName": "notebooks-high", "priority": 1000}, [HIGH], {"priority": 1000}, None),
        (
            {"priorityClassName": "notebooks-high", "priority": 5},
            [HIGH],
            {},
            "the integer value of priority (5) must not be provided in pod spec; "
            "priority admission controller computed 1000 from the given PriorityClass name",
        ),
        (
            {"priorityClassName": "low", "preemptionPolicy": "PreemptLowerPriority"},
            [LOW_DEFAULT],
            {},
            "the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; "
            "priority admission controller computed Never from the given PriorityClass name",
        ),
    ],
)
def test_resolve(
    spec: dict[str, Any], classes: list[dict[str, Any]], fields: dict[str, Any], refusal: str | None
) -> None:
    p = pod(**spec)
    before = copy.deepcopy(classes)
    result = priority.resolve(p, classes)
    assert classes == before
    if refusal is None:
        assert result is None
        for k, v in fields.items():
            assert p["spec"][k] == v
    else:
        assert result is not None and result.message == refusal


def test_store_refuses_a_pod_naming_a_missing_class_and_admits_once_it_exists() -> None:
    store = Store()
    with pytest.raises(ApiError) as e:
        store.create(PODS, pod(priorityClassName="notebooks-high"), "default")
    assert e.value.code == 403
    assert (
        str(e.value.message) == 'pods "nb" is forbidden: no PriorityClass with name notebooks-high was found'
    )
    store.create(PRIORITY_CLASSES, HIGH)
    created = store.create(PODS, pod(priorityClassName="notebooks-high"), "default")
    assert created["spec"]["priority"] == 1000
