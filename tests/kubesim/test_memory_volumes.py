"""Memory-backed volumes on kubesim's kubelet: an emptyDir with `medium: Memory` is a tmpfs of its
sizeLimit shared by the pod's containers (a write beyond it fails), and a container that mounts
nothing at /dev/shm gets the pod's own 64 MiB tmpfs there, as containerd and Docker give it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.testing import KubesimServer, start_kubesim

# df -k of the mount, then a write of 16 MiB into it.
PROBE = "df -k {path} | tail -1 | awk '{{print \"total=\" $2}}'; dd if=/dev/zero of={path}/f bs=1048576 count=16 2>&1; echo rc=$?"


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from kubernetes import client

    server: KubesimServer = start_kubesim(tmp_path_factory.mktemp("memvol"))
    api = server.api_client()
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()
        server.stop()


def _run(core: Any, name: str, spec: dict[str, Any]) -> str:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, **spec},
    }
    core.create_namespaced_pod("default", manifest)
    wait_for(
        lambda: core.read_namespaced_pod(name, "default").status.phase in ("Succeeded", "Failed"),
        60,
        f"pod {name} to finish",
    )
    out = str(core.read_namespaced_pod_log(name, "default", container="c"))
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    return out


def _container(command: str, mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"name": "c", "image": "busybox", "command": ["sh", "-c", command], "volumeMounts": mounts or []}


def test_a_memory_emptydir_is_a_tmpfs_of_its_size_limit_and_refuses_more(core: Any) -> None:
    volume = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}
    out = _run(
        core,
        "shm-limited",
        {
            "containers": [
                _container(PROBE.format(path="/dev/shm"), [{"name": "dshm", "mountPath": "/dev/shm"}])
            ],
            "volumes": [volume],
        },
    )
    assert "total=8192" in out, out
    assert "No space left on device" in out and "rc=1" in out, out


def test_without_a_volume_dev_shm_is_the_runtime_default_64_mib(core: Any) -> None:
    out = _run(core, "shm-default", {"containers": [_container(PROBE.format(path="/dev/shm"))]})
    assert "total=65536" in out, out
    # 16 MiB fit in 64 MiB.
    assert "rc=0" in out, out


def test_a_memory_emptydir_is_shared_by_the_pods_containers_and_is_not_on_disk(core: Any) -> None:
    mounts = [{"name": "m", "mountPath": "/scratch"}]
    out = _run(
        core,
        "shm-shared",
        {
            "initContainers": [
                {
                    "name": "writer",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo from-init > /scratch/note"],
                    "volumeMounts": mounts,
                }
            ],
            "containers": [
                _container("cat /scratch/note; grep ' /scratch ' /proc/mounts | cut -d' ' -f3", mounts)
            ],
            "volumes": [{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        },
    )
    assert out.split() == ["from-init", "tmpfs"], out
