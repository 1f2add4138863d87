"""ResourceQuota admission in kubesim, as the real quota plugin answers: by table on the rule, then
through the API (the official client, kubectl describe) and through a Job whose pods do not fit."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubesim import quota
from kubesim.testing import KubesimServer


def pod(
    name: str, *containers: dict[str, Any], phase: str = "Running", init: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": phase}}


def c(name: str = "main", **resources: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "resources": resources}


def q(name: str, **hard: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"hard": {k.replace("_", "."): v for k, v in hard.items()}}}


GPU = "requests.nvidia.com/gpu"
ONE_GPU = c(requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1"})


@pytest.mark.parametrize(
    ("new", "quotas", "existing", "refusal"),
    [
        (pod("a", c()), [], [], None),
        (pod("a", c()), [q("q", pods="2")], [pod("x", c())], None),
        (
            pod("a", c()),
            [q("q", pods="1")],
            [pod("x", c())],
            "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1",
        ),
        (
            pod("a", c()),
            [q("q", pods="1")],
            [pod("x", c(), phase="Succeeded")],
            None,
        ),  # terminal pods use nothing
        (
            pod("a", ONE_GPU),
            [{"metadata": {"name": "gpu"}, "spec": {"hard": {GPU: "1", "pods": "10"}}}],
            [pod("x", ONE_GPU)],
            "exceeded quota: gpu, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, "
            "limited: requests.nvidia.com/gpu=1",
        ),
        (
            pod("a", c()),
            [{"metadata": {"name": "gpu"}, "spec": {"hard": {GPU: "0"}}}],
            [],
            None,
        ),  # no GPU asked
        (
            pod("a", c("main"), c("side", requests={"cpu": "1"})),
            [
                {
                    "metadata": {"name": "compute"},
                    "spec": {"hard": {"requests.cpu": "4", "limits.memory": "8Gi"}},
                }
            ],
            [],
            "failed quota: compute: must specify limits.memory for: main,side; requests.cpu for: main",
        ),
        (
            pod("a", c(requests={"cpu": "500m"})),
            [{"metadata": {"name": "cpu"}, "spec": {"hard": {"cpu": "1"}}}],
            [pod("x", c(requests={"cpu": "750m"}))],
            "exceeded quota: cpu, requested: requests.cpu=500m, used: requests.cpu=750m, limited: requests.cpu=1",
        ),
        # An init container counts when it asks for more than the containers together.
        (
            pod("a", c(requests={"memory": "1Gi"}), init=[c("fetch", requests={"memory": "3Gi"})]),
            [{"metadata": {"name": "mem"}, "spec": {"hard": {"requests.memory": "2Gi"}}}],
            [],
            "exceeded quota: mem, requested: requests.memory=3Gi, used: requests.memory=0, limited: requests.memory=2Gi",
        ),
    ],
)
def test_the_quota_rule(
    new: dict[str, Any], quotas: list[dict[str, Any]], existing: list[dict[str, Any]], refusal: str | None
) -> None:
    assert quota.check(new, quotas, existing) == refusal


def _gpu_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ]
        },
    }


def test_a_pod_over_quota_is_refused_and_the_usage_shows(apiserver: KubesimServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(
        "default", {"metadata": {"name": "gpus"}, "spec": {"hard": {GPU: "1", "pods": "5"}}}
    )
    first = core.create_namespaced_pod("default", _gpu_pod("first"))
    # Requests default to limits, as on a real server: the quota counts the GPU.
    assert first.spec.containers[0].resources.requests == {"nvidia.com/gpu": "1"}
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("default", _gpu_pod("second"))
    assert e.value.status == 403
    assert json.loads(e.value.body)["message"] == (
        'pods "second" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1"
    )
    status = core.read_namespaced_resource_quota("gpus", "default").status
    assert status.hard == {GPU: "1", "pods": "5"} and status.used == {GPU: "1", "pods": "1"}
    described = apiserver.kubectl("describe", "quota", "gpus").stdout
    assert "requests.nvidia.com/gpu" in described and "pods" in described

    core.delete_namespaced_pod("first", "default", grace_period_seconds=0)
    deadline = time.monotonic() + 10
    while core.read_namespaced_resource_quota("gpus", "default").status.used.get(GPU) != "0":
        assert time.monotonic() < deadline, "the quota's usage did not go back to 0"
        time.sleep(0.05)
    core.create_namespaced_pod("default", _gpu_pod("second"))


def test_a_job_whose_pods_do_not_fit_reports_failed_create(kubesim_factory: Any) -> None:
    server = kubesim_factory()  # with its Job controller
    api = server.api_client()
    try:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        core.create_namespaced_resource_quota(
            "default", {"metadata": {"name": "none"}, "spec": {"hard": {"pods": "0"}}}
        )
        batch.create_namespaced_job(
            "default",
            {
                "metadata": {"name": "train"},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "main", "image": "busybox"}],
                        }
                    }
                },
            },
        )
        deadline = time.monotonic() + 20
        while True:
            events = core.list_namespaced_event(
                "default",
                field_selector="involvedObject.kind=Job,involvedObject.name=train,reason=FailedCreate",
            ).items
            if events:
                break
            assert time.monotonic() < deadline, "no FailedCreate event"
            time.sleep(0.1)
        assert events[0].type == "Warning"
        assert events[0].message.startswith('Error creating: pods "train-')
        assert events[0].message.endswith(
            "is forbidden: exceeded quota: none, requested: pods=1, used: pods=0, limited: pods=0"
        )
        assert core.list_namespaced_pod("default").items == []
    finally:
        api.close()
