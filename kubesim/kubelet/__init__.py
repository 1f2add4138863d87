"""The kubesim node: a kubelet and scheduler that run pod containers as local processes.

Each pod gets a sandbox (private network, UTS and IPC namespaces held by a pause process, see
`kubesim.kubelet.namespaces`); each container instance joins it with a mount namespace of its own,
where its image's files are fresh at every (re)start and only the pod's volumes persist
(`kubesim.kubelet.containerfs`). `Kubelet` is the entry point:

    kubelet = Kubelet(store, KubeletConfig(state_dir=..., node=NodeConfig(gpus=1), api_port=port), faults)
    await kubelet.start(); ...; await kubelet.stop()
    kubelet.add_host_port(4443)     # pods reach the host's 127.0.0.1:4443 at their own 127.0.0.1:4443
    kubelet.set_gpus(2)             # change nvidia.com/gpu capacity; pending pods are retried
    kubelet.images                  # the node's ImageStore (kubesim.images)
"""

from kubesim.kubelet.kubelet import Kubelet, KubeletConfig
from kubesim.kubelet.node import NodeConfig, parse_label

__all__ = ["Kubelet", "KubeletConfig", "NodeConfig", "parse_label"]
