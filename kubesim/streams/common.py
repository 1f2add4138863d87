"""What the pod stream handlers share: finding the pod and container, and closable handles."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kubesim.errors import ApiError
from kubesim.store import PODS

if TYPE_CHECKING:
    from kubesim.kubelet import Kubelet
    from kubesim.kubelet.pod import PodWorker

__all__ = ["StreamHandle", "bad_request", "flag", "get_pod", "pick_container", "tracked"]


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    v = request.query.get(name)
    if v is None:
        return default
    return v.lower() in ("1", "true", "yes", "t")


def get_pod(kubelet: Kubelet, namespace: str, name: str) -> dict[str, Any]:
    pod = kubelet.store.get(PODS, namespace, name)
    if pod is None:
        raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
    return pod


def pick_container(pod: dict[str, Any], requested: str | None) -> str:
    """The container a request addresses, with the real API server's 400 messages."""
    spec = pod.get("spec") or {}
    names = [c["name"] for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    name = pod["metadata"]["name"]
    if not requested:
        if len(names) == 1:
            return str(names[0])
        msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        if init:
            msg += f" or one of the init containers: [{' '.join(init)}]"
        raise bad_request(msg)
    if requested not in names and requested not in init:
        raise bad_request(f"container {requested} is not valid for pod {name}")
    return requested


class StreamHandle:
    """A long-lived response registered with the fault registry: `close()` drops it abruptly."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.task = asyncio.current_task()
        self.dropped = False
        self.stalled = False

    def stall(self) -> None:
        """Make the connection a black hole, as one that died with no FIN or RST (a NAT that forgot
        the flow, a control-plane node that vanished): nothing more is read from the client (so no
        pong answers its pings) and whatever the server writes is lost. Only a client that checks
        the stream's liveness notices."""
        self.stalled = True
        transport = self.request.transport
        if transport is None:
            return
        transport.pause_reading()

        def lost(*_: object) -> None:
            return None

        transport.write = lost  # type: ignore[method-assign,assignment]
        transport.writelines = lost  # type: ignore[method-assign,assignment]

    def close(self) -> None:
        self.dropped = True
        transport = self.request.transport
        if transport is not None:
            transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()


class tracked(contextlib.AbstractContextManager["StreamHandle"]):
    """`with tracked(faults, request) as handle:` registers the stream for the block."""

    def __init__(self, faults: Any, request: web.Request) -> None:
        self.faults = faults
        self.handle = StreamHandle(request)

    def __enter__(self) -> StreamHandle:
        if self.faults is not None:
            self.faults.track(self.handle)
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.faults is not None:
            self.faults.untrack(self.handle)


def worker_or_error(kubelet: Kubelet, pod: dict[str, Any]) -> PodWorker:
    md = pod["metadata"]
    w = kubelet.worker(md.get("namespace", "default"), md["name"])
    if w is None or w.uid != md.get("uid"):
        raise bad_request(
            f"pod {md['name']} does not have a host assigned"
            if not (pod.get("spec") or {}).get("nodeName")
            else f"pod {md['name']} is not running on this node yet"
        )
    return w
