"""The pod volumes the manifests make: the workdir on the workspace claim or an emptyDir, /dev/shm
as a memory-backed emptyDir sized from the spec, and spec.volumes' claims, in notebook and run pods."""

from __future__ import annotations

from typing import Any

import pytest

from nbd_controller.config import Config
from nbd_controller.manifests import notebook_pod, run_job, shm_size, workspace_claim

CONFIG = Config(bucket="b", registry="r")


def _nb(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "nb1", "namespace": "team", "uid": "u-1"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "limits", "expected"),
    [
        ({}, {}, "1Gi"),
        ({}, {"memory": "8Gi"}, "4Gi"),
        ({}, {"memory": "3Gi"}, "1536Mi"),
        ({}, {"memory": "1000"}, "500"),
        ({"resources": {"shm": "16Gi"}}, {"memory": "8Gi"}, "16Gi"),
        ({"resources": {"shm": "0"}}, {"memory": "8Gi"}, None),
    ],
)
def test_shm_size(spec: dict[str, Any], limits: dict[str, str], expected: str | None) -> None:
    assert shm_size(spec, {"limits": limits}) == expected


@pytest.mark.parametrize(
    ("spec", "volumes", "mounts"),
    [
        (
            {},
            [
                {"name": "workdir", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            ],
            [{"name": "dshm", "mountPath": "/dev/shm"}],
        ),
        (
            {"workspace": {"size": "50Gi"}, "resources": {"memory": "2Gi"}},
            [
                {"name": "workdir", "persistentVolumeClaim": {"claimName": "nb1-workspace"}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            ],
            [{"name": "dshm", "mountPath": "/dev/shm"}],
        ),
        (
            {
                "resources": {"shm": "0"},
                "volumes": [
                    {"claim": "imagenet", "mountPath": "/data", "readOnly": True},
                    {"claim": "scratch", "mountPath": "/scratch"},
                ],
            },
            [
                {"name": "workdir", "emptyDir": {}},
                {"name": "data-0", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}},
                {"name": "data-1", "persistentVolumeClaim": {"claimName": "scratch"}},
            ],
            [
                {"name": "data-0", "mountPath": "/data", "readOnly": True},
                {"name": "data-1", "mountPath": "/scratch"},
            ],
        ),
    ],
    ids=["default", "workspace", "data volumes without shm"],
)
def test_notebook_pod_volumes(spec: dict[str, Any], volumes: list[Any], mounts: list[Any]) -> None:
    pod = notebook_pod(CONFIG, _nb(**spec), "IMG")
    assert pod["spec"]["volumes"] == volumes
    (container,) = pod["spec"]["containers"]
    assert container["volumeMounts"] == [
        {"name": "workdir", "mountPath": "/content", "subPath": "workdir"},
        *mounts,
    ]
    # The seed sees only the workdir volume; fsGroup makes a claim's root-owned 0755 root writable.
    (seed,) = pod["spec"]["initContainers"]
    assert seed["volumeMounts"] == [{"name": "workdir", "mountPath": "/nbd-workdir-volume"}]
    assert pod["spec"]["securityContext"]["fsGroup"] == 100


def test_the_workspace_claim() -> None:
    assert workspace_claim(_nb(workspace={"size": "50Gi", "storageClass": "fast"})) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "nb1-workspace",
            "namespace": "team",
            "labels": {
                "nbd.dev/notebook": "nb1",
                "nbd.dev/component": "workspace",
                "app.kubernetes.io/managed-by": "nbd-controller",
            },
            "ownerReferences": [
                {
                    "apiVersion": "nbd.dev/v1alpha1",
                    "kind": "Notebook",
                    "name": "nb1",
                    "uid": "u-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "50Gi"}},
            "storageClassName": "fast",
        },
    }
    assert "storageClassName" not in workspace_claim(_nb(workspace={"size": "1Gi"}))["spec"]


def test_run_pods_get_shm_and_data_volumes() -> None:
    run = {
        "kind": "Run",
        "metadata": {"name": "train", "namespace": "team", "uid": "u"},
        "spec": {
            "command": ["python", "train.py"],
            "resources": {"shm": "8Gi"},
            "volumes": [{"claim": "imagenet", "mountPath": "/data", "readOnly": True}],
        },
    }
    spec = run_job(CONFIG, run, "IMG")["spec"]["template"]["spec"]
    assert spec["volumes"][1:] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        {"name": "data-0", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}},
    ]
    assert spec["containers"][0]["volumeMounts"][1:] == [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "data-0", "mountPath": "/data", "readOnly": True},
    ]
