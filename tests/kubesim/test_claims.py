"""PersistentVolumeClaims: validation, provisioning and binding, scheduling, persistence, protection, reclaim."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

from kubesim.kubelet.scheduler import claims_problem, volume_binding_message
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)

NOT_HELPFUL = "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."


def claim_body(name: str, modes: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accessModes": modes or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    body.update(spec)
    return {"metadata": {"name": name}, "spec": body}


def pod_body(name: str, claim: str, script: str, restart: str = "Never") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def test_claims_problem_is_the_volume_binding_verdict() -> None:
    pod = pod_body("p", "data", "true")
    claims = {
        "bound": {"metadata": {}, "status": {"phase": "Bound"}},
        "pending": {"metadata": {}, "status": {"phase": "Pending"}},
    }
    assert claims_problem(pod, claims.get) == 'persistentvolumeclaim "data" not found'
    claims["data"] = {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert claims_problem(pod, claims.get) == 'persistentvolumeclaim "data" is being deleted'
    claims["data"] = claims["pending"]
    assert claims_problem(pod, claims.get) == "pod has unbound immediate PersistentVolumeClaims"
    claims["data"] = claims["bound"]
    assert claims_problem(pod, claims.get) is None
    assert volume_binding_message("x") == f"0/1 nodes are available: x. {NOT_HELPFUL}"


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("claims"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def events(core: Any, kind: str, name: str) -> list[Any]:
    return [
        e
        for e in core.list_namespaced_event("default").items
        if e.involved_object.name == name and e.involved_object.kind == kind
    ]


def scheduled_message(core: Any, name: str) -> str:
    for c in core.read_namespaced_pod(name, "default").status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False":
            return str(c.message)
    return ""


def phase(core: Any, name: str) -> str:
    return str(core.read_namespaced_pod(name, "default").status.phase)


def test_the_api_refuses_a_claim_without_modes_or_size(core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as caught:
        core.create_namespaced_persistent_volume_claim("default", {"metadata": {"name": "bad"}, "spec": {}})
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["message"] == (
        'PersistentVolumeClaim "bad" is invalid: [spec.accessModes: Required value: at least 1 access mode is '
        "required, spec.resources[storage]: Required value]"
    )
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_persistent_volume_claim("default", claim_body("bad", ["ReadWriteSometimes"]))
    assert (
        'spec.accessModes: Unsupported value: "ReadWriteSometimes"'
        in json.loads(caught.value.body)["message"]
    )


def test_a_claim_is_provisioned_and_bound(core: Any, ks: KubesimServer) -> None:
    created = core.create_namespaced_persistent_volume_claim(
        "default", claim_body("bound", ["ReadWriteMany"])
    )
    assert created.status.phase == "Pending" and "kubernetes.io/pvc-protection" in created.metadata.finalizers
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim("bound", "default").status.phase == "Bound",
        what="Bound",
    )
    c = core.read_namespaced_persistent_volume_claim("bound", "default")
    assert c.status.capacity == {"storage": "1Gi"} and c.status.access_modes == ["ReadWriteMany"]
    assert c.spec.volume_name == f"pvc-{c.metadata.uid}" and c.spec.storage_class_name == "standard"
    assert c.metadata.annotations["pv.kubernetes.io/bind-completed"] == "yes"
    pv = core.read_persistent_volume(c.spec.volume_name)
    assert pv.status.phase == "Bound" and pv.spec.claim_ref.uid == c.metadata.uid
    assert pv.spec.persistent_volume_reclaim_policy == "Delete" and Path(pv.spec.host_path.path).is_dir()
    assert "standard" in ks.kubectl("get", "storageclass").stdout


def test_a_pod_waits_for_its_claim_to_exist(core: Any) -> None:
    core.create_namespaced_pod("default", pod_body("early", "later", "echo ok"))
    expected = f'0/1 nodes are available: persistentvolumeclaim "later" not found. {NOT_HELPFUL}'
    wait_for(lambda: scheduled_message(core, "early") == expected, what="the FailedScheduling condition")
    assert phase(core, "early") == "Pending"
    assert any(e.reason == "FailedScheduling" and e.message == expected for e in events(core, "Pod", "early"))
    core.create_namespaced_persistent_volume_claim("default", claim_body("later"))
    wait_for(
        lambda: phase(core, "early") == "Succeeded", timeout=30, what="the pod to run once its claim is bound"
    )


def test_an_unbound_claim_keeps_its_pod_pending(core: Any) -> None:
    core.create_namespaced_persistent_volume_claim("default", claim_body("noclass", storageClassName="gold"))
    want = 'storageclass.storage.k8s.io "gold" not found'
    wait_for(
        lambda: any(
            e.reason == "ProvisioningFailed" and e.message == want
            for e in events(core, "PersistentVolumeClaim", "noclass")
        ),
        what="ProvisioningFailed",
    )
    core.create_namespaced_pod("default", pod_body("stuck", "noclass", "echo never"))
    expected = f"0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. {NOT_HELPFUL}"
    wait_for(lambda: scheduled_message(core, "stuck") == expected, what="unbound claim message")
    assert core.read_namespaced_persistent_volume_claim("noclass", "default").status.phase == "Pending"
    core.delete_namespaced_pod("stuck", "default")


def test_a_claim_of_no_class_binds_to_a_static_volume(core: Any, tmp_path: Path) -> None:
    core.create_namespaced_persistent_volume_claim("default", claim_body("static", storageClassName=""))
    msg = "no persistent volumes available for this claim and no storage class is set"
    wait_for(
        lambda: any(
            e.reason == "FailedBinding" and e.message == msg
            for e in events(core, "PersistentVolumeClaim", "static")
        ),
        what="FailedBinding",
    )
    core.create_persistent_volume(
        {
            "metadata": {"name": "handmade"},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": str(tmp_path)},
            },
        }
    )
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim("static", "default").status.phase == "Bound",
        what="Bound to the static PV",
    )
    c = core.read_namespaced_persistent_volume_claim("static", "default")
    assert c.spec.volume_name == "handmade" and c.status.capacity == {"storage": "2Gi"}


def test_data_outlives_pods_and_goes_with_its_claim(core: Any) -> None:
    core.create_namespaced_persistent_volume_claim("default", claim_body("keep"))
    core.create_namespaced_pod("default", pod_body("writer", "keep", "echo precious > /data/f"))
    wait_for(lambda: phase(core, "writer") == "Succeeded", timeout=30, what="writer done")
    core.delete_namespaced_pod("writer", "default")
    wait_for(
        lambda: not [p for p in core.list_namespaced_pod("default").items if p.metadata.name == "writer"],
        what="writer gone",
    )
    core.create_namespaced_pod("default", pod_body("reader", "keep", "cat /data/f; exec sleep 300"))
    wait_for(
        lambda: core.read_namespaced_pod_log("reader", "default") == "precious\n",
        timeout=30,
        what="the data read by a later pod",
        retry_on=(Exception,),
    )
    c = core.read_namespaced_persistent_volume_claim("keep", "default")
    folder = Path(core.read_persistent_volume(c.spec.volume_name).spec.host_path.path)
    assert (folder / "f").read_text() == "precious\n"

    # In use: the claim is marked, not removed, and a new pod cannot use it.
    core.delete_namespaced_persistent_volume_claim("keep", "default")
    marked = core.read_namespaced_persistent_volume_claim("keep", "default")
    assert marked.metadata.deletion_timestamp is not None and (folder / "f").exists()
    core.create_namespaced_pod("default", pod_body("latecomer", "keep", "true"))
    expected = f'0/1 nodes are available: persistentvolumeclaim "keep" is being deleted. {NOT_HELPFUL}'
    wait_for(lambda: scheduled_message(core, "latecomer") == expected, what="is being deleted")
    core.delete_namespaced_pod("latecomer", "default")

    core.delete_namespaced_pod("reader", "default")
    claims = lambda: [x.metadata.name for x in core.list_namespaced_persistent_volume_claim("default").items]  # noqa: E731
    wait_for(lambda: "keep" not in claims(), timeout=30, what="the claim to go once no pod uses it")
    wait_for(lambda: not folder.exists(), what="the data to be deleted (reclaim policy Delete)")
    assert c.spec.volume_name not in [v.metadata.name for v in core.list_persistent_volume().items]


def test_retain_keeps_the_data_and_releases_the_volume(core: Any) -> None:
    from kubernetes import client

    client.StorageV1Api(core.api_client).create_storage_class(
        {"metadata": {"name": "keeper"}, "provisioner": "kubesim.dev/host-path", "reclaimPolicy": "Retain"}
    )
    core.create_namespaced_persistent_volume_claim("default", claim_body("kept", storageClassName="keeper"))
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim("kept", "default").status.phase == "Bound",
        what="Bound",
    )
    c = core.read_namespaced_persistent_volume_claim("kept", "default")
    folder = Path(core.read_persistent_volume(c.spec.volume_name).spec.host_path.path)
    (folder / "x").write_text("stay")
    core.delete_namespaced_persistent_volume_claim("kept", "default")
    wait_for(
        lambda: core.read_persistent_volume(c.spec.volume_name).status.phase == "Released", what="Released"
    )
    assert (folder / "x").read_text() == "stay"


def test_two_pods_of_one_node_share_a_read_write_once_claim(core: Any) -> None:
    core.create_namespaced_persistent_volume_claim("default", claim_body("shared"))
    core.create_namespaced_pod("default", pod_body("one", "shared", "echo 1 > /data/one; exec sleep 300"))
    core.create_namespaced_pod(
        "default", pod_body("two", "shared", "until [ -f /data/one ]; do sleep 0.1; done; cat /data/one")
    )
    wait_for(
        lambda: phase(core, "two") == "Succeeded",
        timeout=30,
        what="the second pod on the node to see the first's file",
    )
    assert core.read_namespaced_pod_log("two", "default") == "1\n"
    core.delete_namespaced_pod("one", "default")


def test_a_read_only_claim_volume_refuses_writes(core: Any) -> None:
    core.create_namespaced_persistent_volume_claim("default", claim_body("ro"))
    body = pod_body("looker", "ro", "ls /data; (echo x > /data/x) 2>/dev/null && echo wrote || echo refused")
    body["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = True
    core.create_namespaced_pod("default", body)
    wait_for(lambda: phase(core, "looker") == "Succeeded", timeout=30, what="looker done")
    assert core.read_namespaced_pod_log("looker", "default") == "refused\n"


def test_claims_that_cannot_bind_say_why(core: Any) -> None:
    from kubernetes import client

    client.StorageV1Api(core.api_client).create_storage_class(
        {"metadata": {"name": "elsewhere"}, "provisioner": "ebs.csi.aws.com"}
    )
    core.create_namespaced_persistent_volume_claim(
        "default", claim_body("cloudy", storageClassName="elsewhere")
    )
    core.create_namespaced_persistent_volume_claim(
        "default", claim_body("named", storageClassName="", volumeName="nosuch")
    )
    want = (
        "Waiting for a volume to be created either by the external provisioner 'ebs.csi.aws.com' or manually by the "
        "system administrator. If volume creation is delayed, please verify that the provisioner is running and "
        "correctly registered."
    )

    def said(name: str, reason: str, message: str) -> bool:
        return any(
            e.reason == reason and e.message == message for e in events(core, "PersistentVolumeClaim", name)
        )

    wait_for(lambda: said("cloudy", "ExternalProvisioning", want), what="ExternalProvisioning")
    wait_for(lambda: said("named", "FailedBinding", 'volume "nosuch" not found'), what="FailedBinding")
    for name in ("cloudy", "named"):
        assert core.read_namespaced_persistent_volume_claim(name, "default").status.phase == "Pending"
