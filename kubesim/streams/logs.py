"""`GET pods/{name}/log`: container logs as text/plain, chunked, lines flushed as written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from kubesim.kubelet import logs as logfiles
from kubesim.streams.common import bad_request, flag, get_pod, pick_container, tracked

if TYPE_CHECKING:
    from kubesim.kubelet import Kubelet

__all__ = ["make_log_handler"]


def _int(request: web.Request, name: str) -> int | None:
    v = request.query.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError as e:
        raise bad_request(f"{name}: invalid value {v!r}: must be an integer") from e


def make_log_handler(kubelet: Kubelet):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pod = get_pod(kubelet, namespace, name)
        container = pick_container(pod, request.query.get("container"))
        previous = flag(request, "previous")
        w = kubelet.worker(namespace, name)
        view = w.view(container) if w is not None else None
        if w is None or view is None or container not in w.instances:
            reason = (view.waiting_reason if view is not None else None) or "ContainerCreating"
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                raise bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: '
                    "trying and failing to pull image"
                )
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        instance = w.instances[container]
        live: logfiles.LogFile | None = w.logs.get(container)
        if previous:
            instance -= 1
            live = None
            if instance < 0:
                raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        path = w.log_path(container, instance)
        opts = logfiles.LogOptions(
            follow=flag(request, "follow") and not previous,
            tail_lines=_int(request, "tailLines"),
            since_seconds=_int(request, "sinceSeconds"),
            since_time=request.query.get("sinceTime"),
            timestamps=flag(request, "timestamps"),
            limit_bytes=_int(request, "limitBytes"),
        )
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        with tracked(kubelet.faults, request):
            try:
                async for chunk in logfiles.read(path, live, opts):
                    await resp.write(chunk)
            except (ConnectionError, OSError):
                return resp
        await resp.write_eof()
        return resp

    return handler
