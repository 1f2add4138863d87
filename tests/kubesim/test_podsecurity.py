"""Pod Security admission in kubesim: the checks by table, then a labelled namespace refusing a pod
(the real message), warning about another, and a Job whose pods are refused (FailedCreate)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubesim import podsecurity
from kubesim.testing import KubesimServer

BARE_RESTRICTED = (
    'allowPrivilegeEscalation != false (container "main" must set securityContext.allowPrivilegeEscalation=false)',
    'unrestricted capabilities (container "main" must set securityContext.capabilities.drop=["ALL"])',
    'runAsNonRoot != true (pod or container "main" must set securityContext.runAsNonRoot=true)',
    'seccompProfile (pod or container "main" must set securityContext.seccompProfile.type to "RuntimeDefault" '
    'or "Localhost")',
)
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


def pod(
    container_sc: dict[str, Any] | None = None,
    pod_sc: dict[str, Any] | None = None,
    name: str = "main",
    **spec: Any,
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "busybox", "command": ["sleep", "60"]}
    if container_sc is not None:
        c["securityContext"] = container_sc
    return {"metadata": {"name": "p"}, "spec": {"containers": [c], "securityContext": pod_sc or {}, **spec}}


@pytest.mark.parametrize(
    ("manifest", "level", "expected"),
    [
        (pod(), "privileged", []),
        (pod(), "baseline", []),
        (pod(), "restricted", list(BARE_RESTRICTED)),
        (pod(RESTRICTED_CONTAINER, RESTRICTED_POD), "restricted", []),
        (
            pod(RESTRICTED_CONTAINER, RESTRICTED_POD, volumes=[{"name": "w", "emptyDir": {}}]),
            "restricted",
            [],
        ),
        (
            pod(RESTRICTED_CONTAINER, {**RESTRICTED_POD, "runAsUser": 0}),
            "restricted",
            ["runAsUser=0 (pod must not set runAsUser=0)"],
        ),
        (pod(hostNetwork=True), "baseline", ["host namespaces (hostNetwork=true)"]),
        (
            pod({"privileged": True}),
            "baseline",
            ['privileged (container "main" must not set securityContext.privileged=true)'],
        ),
        (
            pod({"capabilities": {"add": ["SYS_ADMIN"]}}),
            "baseline",
            [
                'non-default capabilities (container "main" must not include "SYS_ADMIN" in securityContext.capabilities.add)'
            ],
        ),
        (
            pod(volumes=[{"name": "data", "hostPath": {"path": "/data"}}]),
            "baseline",
            ['hostPath volumes (volume "data")'],
        ),
        (
            pod(pod_sc={"seccompProfile": {"type": "Unconfined"}}),
            "baseline",
            ['seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'],
        ),
        (
            pod({"seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}}),
            "baseline",
            [
                'appArmorProfile (pod or container "main" must not set appArmorProfile.type to "Unconfined")',
                'seccompProfile (pod or container "main" must not set securityContext.seccompProfile.type to "Unconfined")',
            ],
        ),
        (pod(), "no-such-level", list(BARE_RESTRICTED)),  # fails closed
    ],
)
def test_the_checks(manifest: dict[str, Any], level: str, expected: list[str]) -> None:
    assert podsecurity.violations(manifest, level) == expected


def _label(core: Any, namespace: str, **labels: str) -> None:
    core.create_namespace(
        {
            "metadata": {
                "name": namespace,
                "labels": {f"pod-security.kubernetes.io/{k}": v for k, v in labels.items()},
            }
        }
    )


def test_an_enforcing_namespace_refuses_with_the_real_message(apiserver: KubesimServer, api: Any) -> None:
    core = client.CoreV1Api(api)
    _label(core, "locked", enforce="restricted")
    bare = pod()
    bare["metadata"]["name"] = "bare"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("locked", bare)
    assert e.value.status == 403
    assert json.loads(e.value.body)["message"] == (
        'pods "bare" is forbidden: violates PodSecurity "restricted:latest": ' + ", ".join(BARE_RESTRICTED)
    )
    good = pod(RESTRICTED_CONTAINER, RESTRICTED_POD)
    core.create_namespaced_pod("locked", good)


def test_a_warning_namespace_admits_and_says_why(apiserver: KubesimServer) -> None:
    apiserver.kubectl("create", "namespace", "loose")
    apiserver.kubectl("label", "namespace", "loose", "pod-security.kubernetes.io/warn=restricted")
    done = apiserver.kubectl(
        "run", "w", "-n", "loose", "--image=busybox", "--restart=Never", "--", "sleep", "60"
    )
    assert (
        'Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false'
        in done.stderr
    )
    assert "pod/w created" in done.stdout


def test_a_job_in_an_enforcing_namespace_fails_to_create_its_pod(kubesim_factory: Any) -> None:
    server = kubesim_factory()  # with its Job controller
    api = server.api_client()
    try:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        _label(core, "locked", enforce="baseline")
        batch.create_namespaced_job(
            "locked",
            {
                "metadata": {"name": "build"},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
                            "containers": [{"name": "main", "image": "busybox"}],
                        }
                    }
                },
            },
        )
        deadline = time.monotonic() + 20
        while not (
            events := core.list_namespaced_event(
                "locked", field_selector="involvedObject.name=build,reason=FailedCreate"
            ).items
        ):
            assert time.monotonic() < deadline, "no FailedCreate event"
            time.sleep(0.1)
        assert events[0].message.endswith(
            'is forbidden: violates PodSecurity "baseline:latest": seccompProfile (pod must not set '
            'securityContext.seccompProfile.type to "Unconfined")'
        )
    finally:
        api.close()
