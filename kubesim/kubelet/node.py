"""The one Node of kubesim: its labels, capacity and status, built from the node's configuration.

Pure: the caller measures the machine (cpu count, memory) and passes it in.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeConfig", "machine_arch", "node_object", "parse_label", "parse_taint"]

GPU_RESOURCE = "nvidia.com/gpu"


def machine_arch() -> str:
    """This machine's architecture in Kubernetes' vocabulary (GOARCH)."""
    m = platform.machine().lower()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
    }.get(m, m)


def parse_label(text: str) -> tuple[str, str]:
    """`k=v` -> (k, v); ValueError with a one-line message otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(
            f"node label {text!r} must look like key=value (e.g. nvidia.com/gpu.product=NVIDIA-L4)"
        )
    return key.strip(), value.strip()


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def parse_taint(text: str) -> dict[str, str]:
    """`key[=value]:Effect` (kubectl taint's form) -> a Node `spec.taints` item; ValueError otherwise."""
    body, sep, effect = text.rpartition(":")
    key, _, value = body.partition("=")
    if not sep or not key.strip() or effect not in TAINT_EFFECTS:
        raise ValueError(
            f"node taint {text!r} must look like key[=value]:Effect with Effect one of "
            f"{', '.join(TAINT_EFFECTS)} (e.g. nvidia.com/gpu=present:NoSchedule)"
        )
    taint = {"key": key.strip(), "effect": effect}
    if value.strip():
        taint["value"] = value.strip()
    return taint


@dataclass
class NodeConfig:
    """What the node offers. `gpus` is the `nvidia.com/gpu` capacity (changeable at run time)."""

    name: str = "kubesim-node"
    cpu: int = 2
    memory_bytes: int = 8 * 2**30
    pods: int = 110
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    # `spec.taints` items, e.g. {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}.
    taints: list[dict[str, str]] = field(default_factory=list)

    def all_labels(self) -> dict[str, str]:
        base = {
            "kubernetes.io/arch": machine_arch(),
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": self.name,
            "beta.kubernetes.io/arch": machine_arch(),
            "beta.kubernetes.io/os": "linux",
            "node-role.kubernetes.io/control-plane": "",
        }
        base.update(self.labels)
        return base

    def allocatable(self) -> dict[str, str]:
        return {
            "cpu": str(self.cpu),
            "memory": f"{self.memory_bytes // 1024}Ki",
            "pods": str(self.pods),
            "ephemeral-storage": "100Gi",
            GPU_RESOURCE: str(self.gpus),
        }


def node_object(cfg: NodeConfig, now: str, kubelet_port: int = 10250) -> dict[str, Any]:
    """The Node as the kubelet registers it (Ready, addresses on loopback only)."""
    cond = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.name, "labels": cfg.all_labels()},
        "spec": {"taints": [dict(t) for t in cfg.taints]} if cfg.taints else {},
        "status": {
            "capacity": cfg.allocatable(),
            "allocatable": cfg.allocatable(),
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for t, s, r, m in cond
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": cfg.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": {
                "architecture": machine_arch(),
                "operatingSystem": "linux",
                "kubeletVersion": "v1.32.0-kubesim",
                "kubeProxyVersion": "v1.32.0-kubesim",
                "containerRuntimeVersion": "kubesim://0.1.0",
                "osImage": "kubesim",
                "kernelVersion": platform.release(),
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
