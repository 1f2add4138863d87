"""Pod streams served by the kubelet half: `pods/log`, `pods/exec`, `pods/portforward`.

`register(api, kubelet)` mounts the three subresources on the API server's router
(`ApiServer.register_subresource`). The wire codecs (`channels`, `spdy`) are pure modules.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(api: Any, kubelet: Any) -> None:
    """Mount pods/log, pods/exec and pods/portforward for `kubelet` on `api` (once)."""
    if getattr(kubelet, "_streams_mounted", False):
        return
    from kubesim.streams.exec import make_exec_handler
    from kubesim.streams.logs import make_log_handler
    from kubesim.streams.portforward import make_portforward_handler

    api.register_subresource("", "v1", "pods", "log", make_log_handler(kubelet), ("GET",))
    api.register_subresource("", "v1", "pods", "exec", make_exec_handler(kubelet), ("GET", "POST"))
    api.register_subresource(
        "", "v1", "pods", "portforward", make_portforward_handler(kubelet), ("GET", "POST")
    )
    kubelet._streams_mounted = True
