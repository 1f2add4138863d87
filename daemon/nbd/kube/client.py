"""`KubeClient`: the daemon's async face of the blocking `kubernetes` client for one target.

Every blocking call runs in a bounded thread pool (`await kube.run(fn, ...)`), so the event loop
never waits on the network and a burst of calls cannot spawn unbounded threads. Errors come back
already mapped to `nbd.errors` by `nbd.kube.failures`. Streams (watches, exec, portforward) go
through the target's aiohttp `Transport` instead, available as `kube.transport`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from kubernetes.client import ApiClient, BatchV1Api, CoreV1Api, CustomObjectsApi

from nbd.kube.failures import ResourceRef, error_from_exception
from nbd.kube.target import KubeTarget
from nbd.kube.transport import Transport, close_transport, transport_for

__all__ = ["KubeClient"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_THREADS = 8


class KubeClient:
    """Async wrapper of the `kubernetes` API client for one `KubeTarget`.

    Args:
        target: The cluster and credentials.
        max_threads: Bound of the thread pool running blocking calls.
    """

    def __init__(self, target: KubeTarget, *, max_threads: int = DEFAULT_THREADS) -> None:
        self.target = target
        self.api_client = ApiClient(configuration=target.configuration)
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="nbd-kube")
        self._core: CoreV1Api | None = None
        self._custom: CustomObjectsApi | None = None
        self._batch: BatchV1Api | None = None

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @property
    def url(self) -> str:
        return self.target.host

    @property
    def core(self) -> CoreV1Api:
        if self._core is None:
            self._core = CoreV1Api(self.api_client)
        return self._core

    @property
    def custom(self) -> CustomObjectsApi:
        if self._custom is None:
            self._custom = CustomObjectsApi(self.api_client)
        return self._custom

    @property
    def batch(self) -> BatchV1Api:
        if self._batch is None:
            self._batch = BatchV1Api(self.api_client)
        return self._batch

    @property
    def transport(self) -> Transport:
        """The target's aiohttp transport for the running loop (streams, watches, channels)."""
        return transport_for(self.target)

    async def run(
        self,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run a blocking `kubernetes` call in the pool; failures raise mapped `NbdError`s.

        Pass `nbd_resource=ResourceRef(...)` as a keyword to say what the call is about (a 404 on a
        custom resource type then reads "the Notebook resource is not installed ...").
        """
        resource = kwargs.pop("nbd_resource", None)
        if resource is not None and not isinstance(resource, ResourceRef):
            raise TypeError("nbd_resource must be a ResourceRef")
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._pool, call)
        except Exception as e:  # every failure leaves here as an NbdError
            raise error_from_exception(e, url=self.url, resource=resource) from e

    async def aclose(self) -> None:
        """Release the pool, the blocking client's connections and this loop's transport."""
        await close_transport(self.target)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_blocking)

    def _shutdown_blocking(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.api_client.close()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"KubeClient(context={self.target.context!r}, url={self.url!r})"
