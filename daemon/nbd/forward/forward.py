"""A persistent port-forward: a 127.0.0.1 listener whose connections reach the current pod.

A `Forward` is (target, namespace, pod label selector, remote port) plus a local port that stays
the same across pod restarts, relaunches and daemon restarts. Each accepted connection opens its
own `pods/portforward` v4 stream to the newest Ready pod matching the selector, looked up at connect
time in a watch-fed `PodCache`; while no pod is Ready, or the API server fails transiently, a new
connection waits (bounded by `connect_timeout`) instead of failing. The listener is closed only by
`stop()`.

Health is a real probe through the tunnel (TCP connect to the listener, HTTP GET `probe_path`,
any HTTP answer counts) every `probe_interval`; the result and the pod cache's state become a
`ForwardStatus` pushed to `on_change` listeners. `record()` returns what the daemon persists;
`Forward.from_record` rebuilds the forward on the same port after a restart.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nbd.aio import wait_event
from nbd.errors import DeadlineExceeded, InvalidArgument, NbdError, NotFound, Unavailable
from nbd.forward.ports import LOOPBACK, bind_port
from nbd.forward.relay import RelayResult, relay_v4
from nbd.kube.channel import PORTFORWARD_PROTOCOLS, Channel, open_channel
from nbd.kube.client import KubeClient
from nbd.kube.pods import PodCache, PodChange, selector_string
from nbd.session import ForwardRecord
from nbd.status import ForwardState, ForwardStatus, from_epoch

__all__ = [
    "Forward",
    "ForwardRecord",
]

log = logging.getLogger(__name__)

RETRY_START = 0.05
RETRY_MAX = 1.0


@dataclass
class _Health:
    probe_ok: bool | None = None
    probe_message: str = ""
    last_probe: float | None = None
    connect_error: str = ""


class Forward:
    """A 127.0.0.1 listener relaying each connection to the current pod's `remote_port`.

    Args:
        kube: Client of the cluster (its target gives credentials and the shared session).
        namespace: Namespace of the pods.
        selector: Labels of the pod (the newest Ready match is used).
        remote_port: Port in the pod.
        local_port: Preferred local port (remembered for this notebook); the next free one is used
            if it is taken. None: any free port.
        explicit_port: A port the user asked for; taken means an error (reason PortInUse).
        probe_path: HTTP path probed through the tunnel (None: no probe).
        probe_interval: Seconds between probes.
        connect_timeout: How long a new connection waits for a Ready pod / a healthy API server.
        eof_linger: After local EOF, how long a silent pod side is waited for before closing.
        pods: A shared `PodCache` for (namespace, selector); by default the forward owns one.
    """

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        selector: Mapping[str, str],
        remote_port: int,
        *,
        local_port: int | None = None,
        explicit_port: int | None = None,
        probe_path: str | None = "/api",
        probe_interval: float = 10.0,
        probe_timeout: float = 5.0,
        connect_timeout: float = 30.0,
        eof_linger: float = 10.0,
        pods: PodCache | None = None,
    ) -> None:
        if not 0 < remote_port < 65536:
            raise InvalidArgument(f"remote port {remote_port} is not a TCP port", reason="InvalidPort")
        if not selector:
            raise InvalidArgument("a forward needs a pod label selector", reason="InvalidSelector")
        self.kube = kube
        self.namespace = namespace
        self.selector = dict(selector)
        self.remote_port = remote_port
        self.preferred_port = local_port
        self.explicit_port = explicit_port
        self.probe_path = probe_path
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.connect_timeout = connect_timeout
        self.eof_linger = eof_linger
        self._owns_pods = pods is None
        self.pods = pods if pods is not None else PodCache(kube, namespace, self.selector)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._connections: set[asyncio.Task[None]] = set()
        # Each connection's peer port, the local ports of the latest probes, and whether a person's
        # connection (not a probe's) closed since `take_activity` was last asked.
        self._peers: dict[asyncio.Task[None], int] = {}
        self._probe_ports: collections.deque[int] = collections.deque(maxlen=16)
        self._used = False
        self._health = _Health()
        self._listeners: list[Callable[[ForwardStatus], None]] = []
        self._last_status: ForwardStatus | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._probe_now = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False

    # -- persistence -------------------------------------------------------------------------

    @classmethod
    def from_record(cls, kube: KubeClient, record: ForwardRecord, **options: Any) -> Forward:
        """Rebuild a persisted forward; `start()` binds the recorded port again when free."""
        return cls(
            kube,
            record.namespace,
            record.selector,
            record.remote_port,
            local_port=record.local_port,
            probe_path=record.probe_path,
            **options,
        )

    def record(self) -> ForwardRecord:
        """The persisted form (call after `start()` so local_port is the bound one)."""
        target = self.kube.target
        return ForwardRecord(
            kubeconfig=target.kubeconfig,
            context=target.context,
            namespace=self.namespace,
            selector=dict(self.selector),
            remote_port=self.remote_port,
            local_port=self._port or (self.explicit_port or self.preferred_port or 0),
            probe_path=self.probe_path,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    async def start(self) -> None:
        """Bind the listener and start watching pods and probing.

        Raises:
            FailedPrecondition: the explicit port is taken (reason PortInUse).
            Unavailable: no free port near the preferred one.
        """
        if self._server is not None:
            return
        self._stopped = False
        sock = bind_port(self.preferred_port, self.explicit_port)
        self._port = int(sock.getsockname()[1])
        self._server = await asyncio.start_server(self._accept, sock=sock, limit=256 * 1024)
        self._unsubscribe = self.pods.on_change(self._pod_changed)
        if self._owns_pods:
            await self.pods.start()
        if self.probe_path is not None:
            self._probe_task = asyncio.create_task(self._probe_loop(), name=f"forward-probe-{self._port}")
        log.info(
            "forward 127.0.0.1:%d -> %s/%s:%d started",
            self._port,
            self.namespace,
            selector_string(self.selector),
            self.remote_port,
        )
        self._notify()

    async def stop(self) -> None:
        """Close the listener and every relayed connection; stop watching and probing."""
        self._stopped = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [t for t in (self._probe_task,) if t is not None] + list(self._connections)
        self._probe_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._owns_pods:
            await self.pods.stop()
        self._notify()

    # -- status ------------------------------------------------------------------------------

    def status(self) -> ForwardStatus:
        """The forward's state now."""
        pod = self.pods.ready_pod() or ""
        h = self._health
        err = self.pods.last_error
        if self._stopped or (self._server is None and self._port == 0):
            state, message = ForwardState.STOPPED, "the forward is stopped"
        elif err is not None:
            # The watch cannot reach the cluster: new connections cannot be opened either.
            state, message = ForwardState.ERROR, err.message
        elif not pod:
            state = ForwardState.WAITING_FOR_POD
            message = (
                f"waiting for a Ready pod matching {selector_string(self.selector)} "
                f"in namespace {self.namespace}"
            )
        elif h.probe_ok is False:
            state, message = ForwardState.ERROR, h.probe_message
        elif h.connect_error:
            state, message = ForwardState.ERROR, h.connect_error
        else:
            state, message = ForwardState.ACTIVE, ""
        return ForwardStatus(
            state=state,
            local_port=self._port,
            remote_port=self.remote_port,
            pod=pod,
            message=message,
            open_connections=len(self._connections),
            last_probe=from_epoch(h.last_probe),
        )

    def on_change(self, callback: Callable[[ForwardStatus], None]) -> Callable[[], None]:
        """Call `callback` with the new status whenever it changes; returns an unsubscribe function."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _notify(self) -> None:
        status = self.status()
        # open_connections and last_probe move constantly; only state/pod/port changes are news.
        last = self._last_status
        if last is not None and replace(last, open_connections=0, last_probe=None) == replace(
            status, open_connections=0, last_probe=None
        ):
            self._last_status = status
            return
        self._last_status = status
        for callback in list(self._listeners):
            try:
                callback(status)
            except Exception:
                log.exception("forward status listener failed")

    def _pod_changed(self, change: PodChange) -> None:
        if change.kind != "ERROR" and change.ready_pod is not None:
            self._health.connect_error = ""
            # A new pod deserves a fresh probe rather than the old pod's verdict.
            if self._last_status is None or self._last_status.pod != change.ready_pod:
                self._health.probe_ok = None
                self._probe_now.set()
        self._notify()

    # -- connections -------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        self._peers[task] = int(peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else 0
        task.add_done_callback(self._connection_done)

    def _connection_done(self, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        if self._peers.pop(task, 0) not in self._probe_ports:
            self._used = True

    def take_activity(self) -> bool:
        """Whether a person's connection (a browser's, an editor's; never the forward's own probe)
        is open now or closed since the last call."""
        used, self._used = self._used, False
        return used or any(port not in self._probe_ports for port in self._peers.values())

    async def _open(self) -> Channel:
        """A portforward stream to the current pod, waiting/retrying within connect_timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = RETRY_START
        query = [("ports", str(self.remote_port))]
        last: NbdError | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if last is not None:
                    raise last
                raise DeadlineExceeded(
                    f"no Ready pod matching {selector_string(self.selector)} after "
                    f"{self.connect_timeout:g} s",
                    reason="PodNotReady",
                )
            pod = self.pods.ready_pod() or await self.pods.wait_ready_pod(remaining)
            try:
                return await open_channel(
                    self.kube.target, self.namespace, pod, "portforward", query, PORTFORWARD_PROTOCOLS
                )
            except (Unavailable, NotFound, DeadlineExceeded) as e:
                # 503s, refused connections and a pod deleted under us are transient: retry.
                last = e
                wait = min(delay, max(0.0, deadline - loop.time()))
                await asyncio.sleep(wait)
                delay = min(delay * 2, RETRY_MAX)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                channel = await self._open()
            except NbdError as e:
                log.warning("forward 127.0.0.1:%d: connection not relayed: %s", self._port, e.message)
                if self._health.connect_error != e.message:
                    self._health.connect_error = e.message
                    self._notify()
                writer.close()
                return
            if self._health.connect_error:
                self._health.connect_error = ""
                self._notify()
            result: RelayResult = await relay_v4(reader, writer, channel, eof_linger=self.eof_linger)
            if result.error is not None:
                log.warning(
                    "forward 127.0.0.1:%d -> pod %s:%d: %s",
                    self._port,
                    channel.pod,
                    self.remote_port,
                    result.error.strip(),
                )
        except asyncio.CancelledError:
            writer.close()
            raise
        except Exception:
            log.exception("forward 127.0.0.1:%d: relay failed", self._port)
            writer.close()

    # -- health ------------------------------------------------------------------------------

    async def probe(self) -> tuple[bool, str]:
        """One probe through the tunnel: (ok, message). Any HTTP answer means the path works."""
        path = self.probe_path or "/"
        started = time.monotonic()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.probe_timeout + self.connect_timeout):
                reader, writer = await asyncio.open_connection(LOOPBACK, self._port)
                self._probe_ports.append(int(writer.get_extra_info("sockname")[1]))
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{self._port}\r\n"
                    "User-Agent: nbd-probe\r\nConnection: close\r\n\r\n".encode("ascii")
                )
                await writer.drain()
                line = await reader.readline()
            if line.startswith(b"HTTP/"):
                return True, ""
            if not line:
                return False, f"the pod closed the connection to port {self.remote_port} without answering"
            return False, f"the pod's port {self.remote_port} did not answer HTTP"
        except TimeoutError:
            waited = time.monotonic() - started
            return False, f"no answer through the tunnel after {waited:.0f} s"
        except OSError as e:
            return False, f"probe failed: {e}"
        finally:
            if writer is not None:
                writer.close()

    async def _probe_loop(self) -> None:
        while True:
            if self.pods.ready_pod() is not None:
                ok, message = await self.probe()
                self._health.probe_ok = ok
                self._health.probe_message = (
                    ""
                    if ok
                    else (f"probe GET {self.probe_path} through 127.0.0.1:{self._port} failed: {message}")
                )
                self._health.last_probe = time.time()
                self._notify()
            self._probe_now.clear()
            await wait_event(self._probe_now, self.probe_interval)
