"""The daemon's authenticated access to a Kubernetes cluster.

- `load_target` resolves kubeconfig/context/namespace into a `KubeTarget` (with clear errors).
- `KubeClient` runs blocking `kubernetes` calls in a bounded pool and maps errors to `nbd.errors`.
- `PodCache` keeps a watch-fed view of the pods matching a label selector.
- `open_channel` / `open_exec` open exec and portforward WebSockets with the target's credentials.
"""

from nbd.kube.channel import Channel, open_channel
from nbd.kube.client import KubeClient
from nbd.kube.exec import ExecChannel, exit_code_from_status, open_exec
from nbd.kube.failures import (
    NOTEBOOK,
    RUN,
    ResourceRef,
    cluster_unreachable,
    crd_not_installed,
    error_from_exception,
    error_from_status,
)
from nbd.kube.pods import PodCache, PodChange, is_ready, newest_ready, selector_string
from nbd.kube.target import KubeTarget, load_target, load_target_blocking, resolve_kubeconfig_path

__all__ = [
    "Channel",
    "ExecChannel",
    "KubeClient",
    "KubeTarget",
    "NOTEBOOK",
    "RUN",
    "PodCache",
    "PodChange",
    "ResourceRef",
    "cluster_unreachable",
    "crd_not_installed",
    "error_from_exception",
    "error_from_status",
    "exit_code_from_status",
    "is_ready",
    "load_target",
    "load_target_blocking",
    "newest_ready",
    "open_channel",
    "open_exec",
    "resolve_kubeconfig_path",
    "selector_string",
]
