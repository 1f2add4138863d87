"""The Run's objects tested by dict equality: its Job (plain and Indexed), headless Service,
outputs claim and outputs reader pod, and the build Job a Run asks for."""

from __future__ import annotations

import dataclasses
from typing import Any

from nbd_controller.config import Config
from nbd_controller.manifests import build_job, outputs_claim, outputs_reader_pod, run_job, run_service

CONFIG = Config(bucket="b", registry="reg.example/proj", gpu_label_key="gpu.example/type")
IMAGE = "reg.example/proj/nbd/team-context:0123456789abcdef0123456789abcdef"
OWNER = {
    "apiVersion": "nbd.dev/v1alpha1",
    "kind": "Run",
    "name": "train",
    "uid": "u-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
LABELS = {
    "nbd.dev/run": "train",
    "nbd.dev/component": "run",
    "app.kubernetes.io/managed-by": "nbd-controller",
}
OUTPUT_LABELS = {**LABELS, "nbd.dev/component": "outputs"}
INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "run", "operator": "NotIn", "values": [0]}},
    ]
}


def _run(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nbd.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "train", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": {"command": ["python", "train.py"], **spec},
    }


def test_one_node_job() -> None:
    run = _run(
        build={"upload": {"md5": "0" * 32, "requestID": "r"}},
        env=[{"name": "LR", "value": "0.1"}, {"name": "WORLD_SIZE", "value": "9"}],
        resources={"cpu": "2", "memory": "4Gi"},
        ttlSecondsAfterFinished=600,
    )
    assert run_job(CONFIG, run, IMAGE) == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "train",
            "namespace": "team",
            "labels": LABELS,
            "annotations": {"nbd.dev/image": IMAGE},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "backoffLimit": 3,
            "podFailurePolicy": POLICY,
            "completions": 1,
            "parallelism": 1,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [
                        {
                            "name": "run",
                            "image": IMAGE,
                            "command": ["python", "train.py"],
                            "workingDir": "/content",
                            "env": [
                                {"name": "MASTER_ADDR", "value": "127.0.0.1"},
                                {"name": "MASTER_PORT", "value": "29500"},
                                {"name": "WORLD_SIZE", "value": "1"},
                                {"name": "NODE_RANK", "value": "0"},
                                {"name": "NPROC_PER_NODE", "value": "1"},
                                {"name": "PET_NNODES", "value": "1"},
                                {"name": "PET_NODE_RANK", "value": "0"},
                                {"name": "PET_MASTER_ADDR", "value": "127.0.0.1"},
                                {"name": "PET_MASTER_PORT", "value": "29500"},
                                {"name": "PET_NPROC_PER_NODE", "value": "1"},
                                {"name": "NBD_RUN", "value": "train"},
                                {"name": "LR", "value": "0.1"},
                            ],
                            "volumeMounts": [
                                {"name": "outputs", "mountPath": "/content/outputs"},
                                {"name": "dshm", "mountPath": "/dev/shm"},
                            ],
                            "imagePullPolicy": "Always",
                            "resources": {
                                # the spec's cpu and memory over the configured defaults
                                "requests": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"},
                                "limits": {"ephemeral-storage": "50Gi", "cpu": "2", "memory": "4Gi"},
                            },
                        }
                    ],
                    "volumes": [
                        {"name": "outputs", "persistentVolumeClaim": {"claimName": "train-outputs"}},
                        # /dev/shm is half the 4Gi memory limit (DataLoader workers use it).
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
                    ],
                    "securityContext": {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"},
                },
            },
        },
    }


def test_indexed_job_of_two_gpu_nodes() -> None:
    config = dataclasses.replace(CONFIG, registry_secret="pull", cluster_domain="corp.internal")
    run = _run(
        image="pytorch/pytorch:2",
        nodes=2,
        masterPort=29400,
        workdir="/work",
        outputs={"path": "/work/out"},
        resources={"gpu": {"count": 4, "type": "nvidia-h100"}},
        activeDeadlineSeconds=7200,
    )
    job = run_job(config, run, "pytorch/pytorch:2")
    spec = job["spec"]
    pod = spec.pop("template")["spec"]
    assert spec == {
        "backoffLimit": 3,
        "podFailurePolicy": POLICY,
        "completions": 2,
        "parallelism": 2,
        "completionMode": "Indexed",
        "activeDeadlineSeconds": 7200,
    }
    [container] = pod.pop("containers")
    assert pod == {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": [
            {"name": "outputs", "persistentVolumeClaim": {"claimName": "train-outputs"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        ],
        "subdomain": "train",
        "securityContext": {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"},
        "nodeSelector": {"gpu.example/type": "nvidia-h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "pull"}],
    }
    assert container == {
        "name": "run",
        "image": "pytorch/pytorch:2",
        "command": ["python", "train.py"],
        "workingDir": "/work",
        "env": [
            {"name": "MASTER_ADDR", "value": "train-0.train.team.svc.corp.internal"},
            {"name": "MASTER_PORT", "value": "29400"},
            {"name": "WORLD_SIZE", "value": "2"},
            {
                "name": "NODE_RANK",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    }
                },
            },
            {"name": "NPROC_PER_NODE", "value": "4"},
            {"name": "PET_NNODES", "value": "2"},
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": INDEX}}},
            {"name": "PET_MASTER_ADDR", "value": "train-0.train.team.svc.corp.internal"},
            {"name": "PET_MASTER_PORT", "value": "29400"},
            {"name": "PET_NPROC_PER_NODE", "value": "4"},
            {"name": "NBD_RUN", "value": "train"},
        ],
        "volumeMounts": [
            {"name": "outputs", "mountPath": "/work/out"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "ports": [{"name": "master", "containerPort": 29400}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
            "limits": {"ephemeral-storage": "50Gi", "nvidia.com/gpu": "4"},
        },
    }


def test_headless_service() -> None:
    assert run_service(_run(nodes=2)) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "train", "namespace": "team", "labels": LABELS, "ownerReferences": [OWNER]},
        "spec": {
            "clusterIP": "None",
            "selector": {"nbd.dev/run": "train", "nbd.dev/component": "run"},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "master", "port": 29500, "targetPort": 29500, "protocol": "TCP"}],
        },
    }


def test_outputs_claim_access_mode_size_and_storage_class() -> None:
    claim = outputs_claim(CONFIG, _run())
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "train-outputs",
            "namespace": "team",
            "labels": OUTPUT_LABELS,
            "ownerReferences": [OWNER],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
    }
    config = dataclasses.replace(CONFIG, outputs_storage_class="ssd", outputs_rwx_storage_class="nfs")
    assert outputs_claim(config, _run())["spec"]["storageClassName"] == "ssd"
    many = outputs_claim(config, _run(nodes=3, outputs={"size": "1Ti"}))["spec"]
    assert many == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Ti"}},
        "storageClassName": "nfs",
    }
    assert outputs_claim(config, _run(outputs={"storageClass": "fast"}))["spec"]["storageClassName"] == "fast"


def test_outputs_reader_pod() -> None:
    assert outputs_reader_pod(CONFIG, _run(outputs={"path": "/content/res"}), "f-1") == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train-outputs-reader",
            "namespace": "team",
            "labels": OUTPUT_LABELS,
            "annotations": {"nbd.dev/fetch-request": "f-1"},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 3600,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "affinity": {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {
                                    "matchLabels": {"nbd.dev/run": "train", "nbd.dev/component": "run"}
                                },
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }
                    ]
                }
            },
            "containers": [
                {
                    "name": "reader",
                    "image": "python:3.12-alpine",
                    "command": ["sleep", "3600"],
                    "workingDir": "/content/res",
                    "volumeMounts": [{"name": "outputs", "mountPath": "/content/res", "readOnly": True}],
                }
            ],
            "volumes": [
                {"name": "outputs", "persistentVolumeClaim": {"claimName": "train-outputs", "readOnly": True}}
            ],
        },
    }


def test_a_build_job_asked_for_by_a_run_is_labelled_and_owned_by_it() -> None:
    job = build_job(CONFIG, _run(), "0" * 32, IMAGE, "https://signed")
    labels = job["metadata"]["labels"]
    assert labels["nbd.dev/requested-by"] == "train" and labels["nbd.dev/requested-by-kind"] == "Run"
    assert "nbd.dev/run" not in labels  # selecting a run's pods never finds a build pod
    assert job["metadata"]["ownerReferences"] == [OWNER]
    assert job["spec"]["template"]["metadata"]["labels"] == labels
