"""Growing a PersistentVolumeClaim on kubesim as on a real API server: only a bound claim of a
StorageClass with allowVolumeExpansion grows (its PV and status.capacity follow), a smaller request
is invalid, and the rest of the spec is immutable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.testing import KubesimServer, start_kubesim


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from kubernetes import client

    server: KubesimServer = start_kubesim(tmp_path_factory.mktemp("resize"))
    api_client = server.api_client()
    try:
        storage = client.StorageV1Api(api_client)
        storage.create_storage_class(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "growable"},
                "provisioner": "kubesim.dev/host-path",
                "allowVolumeExpansion": True,
            }
        )
        yield client.CoreV1Api(api_client), storage
    finally:
        api_client.close()
        server.stop()


def _bound_claim(core: Any, name: str, storage_class: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim(name, "default").status.phase == "Bound",
        30,
        f"claim {name} to bind",
    )


def _grow(core: Any, name: str, size: str) -> None:
    core.patch_namespaced_persistent_volume_claim(
        name, "default", {"spec": {"resources": {"requests": {"storage": size}}}}
    )


def test_a_claim_of_an_expandable_class_grows(api: tuple[Any, Any]) -> None:
    core, _ = api
    _bound_claim(core, "grows", "growable")
    _grow(core, "grows", "2Gi")
    wait_for(
        lambda: (
            core.read_namespaced_persistent_volume_claim("grows", "default").status.capacity["storage"]
            == "2Gi"
        ),
        30,
        "the claim's capacity to grow",
    )
    pv = core.read_namespaced_persistent_volume_claim("grows", "default").spec.volume_name
    assert core.read_persistent_volume(pv).spec.capacity["storage"] == "2Gi"


def test_shrinking_is_invalid_and_other_classes_do_not_grow(api: tuple[Any, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    core, _ = api
    _bound_claim(core, "fixed", "standard")
    with pytest.raises(ApiException) as e:
        _grow(core, "fixed", "512Mi")
    assert e.value.status == 422 and "field can not be less than previous value" in str(e.value.body)
    with pytest.raises(ApiException) as e:
        _grow(core, "fixed", "2Gi")
    assert e.value.status == 403 and "storageclass that provisions the pvc must support resize" in str(
        e.value.body
    )
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_persistent_volume_claim(
            "fixed", "default", {"spec": {"accessModes": ["ReadWriteMany"]}}
        )
    assert e.value.status == 422 and "spec is immutable after creation" in str(e.value.body)
    assert (
        core.read_namespaced_persistent_volume_claim("fixed", "default").status.capacity["storage"] == "1Gi"
    )
