"""One simulated cluster in one process: store + API server + kubelet + Job controller.

`Cluster(ClusterOptions(...))` owns the event loop's share of kubesim: `await cluster.start()`
binds the HTTP(S) listener, writes the kubeconfig and `server.json` into the state directory,
then starts the kubelet half (`kubesim.kubelet.Kubelet`) and the Job controller
(`kubesim.jobs.JobController`) when they are importable; `await cluster.stop()` stops them
(killing pod processes) and closes the listener.

The kubelet half is constructed as
`Kubelet(store=..., api=..., faults=..., state_dir=..., node_name=..., gpus=...)` and the Job
controller as `JobController(store=...)`; both expose `async start()` / `async stop()`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from kubesim import eviction, kubeconfig, streams, tls
from kubesim.apiserver import ApiServer
from kubesim.auth import Auth
from kubesim.faults import Faults
from kubesim.store import Store

__all__ = ["Cluster", "ClusterOptions"]

log = logging.getLogger("kubesim.cluster")


@dataclass
class ClusterOptions:
    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = False
    token: str | None = None
    admin_token: str | None = None
    state_dir: Path = field(default_factory=lambda: Path("kubesim-state"))
    kubeconfig_out: Path | None = None
    gpus: int = 0
    node_name: str = "kubesim-node"
    # Nodes: the first is `node_name`, the others `node_name-2`, ...; each its own kubelet.
    nodes: int = 1
    history_size: int = 10000
    bookmark_interval: float = 10.0
    kubelet: bool = True
    allow_anonymous: bool = False
    # extra (token, user) pairs and (user, namespace) pairs made forbidden at start
    extra_tokens: dict[str, str] = field(default_factory=dict)
    forbidden: list[tuple[str, str]] = field(default_factory=list)
    # users authorized by RBAC objects only (the others may do everything)
    rbac_users: list[str] = field(default_factory=list)
    # (namespace, service, port): a Service whose backend is a process on this machine's
    # 127.0.0.1:port (devstack's controller runs on the host, not in a pod)
    host_services: list[tuple[str, str, int]] = field(default_factory=list)
    kubelet_options: dict[str, Any] = field(default_factory=dict)
    # RBAC authorization of every user outside system:masters (the kubeconfig written is then the
    # admin's); and the OwnerReferencesPermissionEnforcement admission plugin.
    rbac: bool = False
    owner_references_enforcement: bool = False
    # exec'd commands outlive their client, as with a real container runtime
    exec_orphans: bool = False
    # Node pools the simulated cluster autoscaler grows from zero (kubesim.autoscaler.NodePool);
    # none: no autoscaler, and no cluster-autoscaler-status ConfigMap.
    node_pools: list[Any] = field(default_factory=list)


class Cluster:
    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.store = Store(history_size=options.history_size)
        self.faults = Faults()
        admin_token = options.admin_token or options.token or secrets.token_urlsafe(24)
        self.auth = Auth(
            admin_token=admin_token, require_auth=bool(options.token) and not options.allow_anonymous
        )
        if options.token:
            self.auth.add_token(options.token, "kubesim-admin")
        for tok, user in options.extra_tokens.items():
            self.auth.add_token(tok, user)
        for user, ns in options.forbidden:
            self.auth.forbid(user, ns)
        self.auth.rbac_objects = self.store.rbac_objects
        self.auth.rbac_all = options.rbac
        self.auth.rbac_users = set(options.rbac_users)
        if options.owner_references_enforcement:
            self.store.owner_references_check = self.auth.can
        self.faults.exec_orphans = options.exec_orphans
        self.api = ApiServer(self.store, self.faults, self.auth, bookmark_interval=options.bookmark_interval)
        for ns, svc, port in options.host_services:
            self.api.service_proxy.host_backends[(ns, svc)] = port
        self.url = ""
        self.kubeconfig_path: Path | None = None
        self.certs: tls.CertPaths | None = None
        self._runner: web.AppRunner | None = None
        self._components: list[Any] = []
        self.kubelet: Any = None

    @property
    def admin_token(self) -> str:
        return self.auth.admin_token

    async def start(self) -> str:
        o = self.options
        o.state_dir.mkdir(parents=True, exist_ok=True)
        ssl_ctx: ssl.SSLContext | None = None
        if o.tls:
            self.certs = tls.generate(o.state_dir / "pki")
            ssl_ctx = tls.server_ssl_context(self.certs)
        self._runner = web.AppRunner(
            self.api.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, o.host, o.port, ssl_context=ssl_ctx, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        host = f"[{o.host}]" if ":" in o.host else o.host
        self.url = f"{'https' if o.tls else 'http'}://{host}:{port}"
        self.kubeconfig_path = o.kubeconfig_out or (o.state_dir / "kubeconfig")
        ca = self.certs.ca_cert.read_bytes() if self.certs else None
        kubeconfig.write(
            self.kubeconfig_path,
            kubeconfig.build(
                self.url,
                token=o.token or (self.admin_token if o.rbac else None),
                ca_pem=ca,
                client_cert_pem=self.certs.client_cert.read_bytes() if self.certs else None,
                client_key_pem=self.certs.client_key.read_bytes() if self.certs else None,
            ),
        )
        if o.kubelet:
            await self._start_components()
        info = {
            "url": self.url,
            "pid": os.getpid(),
            "kubeconfig": str(self.kubeconfig_path),
            "adminToken": self.admin_token,
            "token": o.token,
            "caFile": str(self.certs.ca_cert) if self.certs else None,
            "stateDir": str(o.state_dir),
        }
        path = o.state_dir / "server.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(tmp, path)
        return self.url

    async def _start_components(self) -> None:
        """Start the kubelet half; a failure there leaves the API server running (pods stay Pending)."""
        o = self.options
        port = int(self.url.rsplit(":", 1)[1])
        try:
            from kubesim.kubelet import Kubelet, KubeletConfig, NodeConfig

            config = KubeletConfig(
                state_dir=o.state_dir / "node",
                node=NodeConfig(name=o.node_name, gpus=o.gpus),
                api_port=port,
                **o.kubelet_options,
            )
            kubelet = Kubelet(self.store, config, self.faults)
            followers = []
            for i in range(2, o.nodes + 1):
                options = dict(o.kubelet_options)
                extra = KubeletConfig(
                    state_dir=o.state_dir / f"node-{i}",
                    node=NodeConfig(name=f"{o.node_name}-{i}", gpus=o.gpus),
                    api_port=port,
                    **options,
                )
                follower = Kubelet(self.store, extra, None)
                follower.leader = kubelet
                followers.append(follower)
            kubelet.peers = [kubelet, *followers]
        except Exception:
            log.exception("kubelet not available: pods will stay Pending")
        else:
            self.kubelet = kubelet
            self._components.append(kubelet)
            self._components.extend(followers)
            # The kubelet half serves pods/log, pods/exec and pods/portforward on the router.
            streams.register(self.api, kubelet)
        eviction.register(self.api)
        if o.node_pools and self.kubelet is not None:
            from kubesim.autoscaler import Autoscaler

            self._components.append(Autoscaler(self.store, list(o.node_pools), self.add_node))
        try:
            from kubesim.claims import ClaimController

            self._components.append(ClaimController(self.store, o.state_dir / "node" / "volumes"))
        except Exception:
            log.exception("claim controller not available: PersistentVolumeClaims stay Pending")
        try:
            from kubesim.jobs import JobController  # type: ignore[import-not-found,unused-ignore]

            self._components.append(
                _construct(JobController, dict(store=self.store, api=self.api, faults=self.faults))
            )
        except Exception:
            log.exception("job controller not available: Jobs will not run")
        for c in list(self._components):
            try:
                res = c.start()
                if inspect.isawaitable(res):
                    await res
            except Exception:
                log.exception("%s failed to start", type(c).__name__)
                self._components.remove(c)

    async def add_node(self, node: Any) -> Any:
        """Start one more node (a kubelet the first one schedules for) from a `NodeConfig`.

        Its images are the first node's (one registry for the cluster); the global `--node-label`
        and `--node-taint` are not applied to it: the caller's NodeConfig says what it is.
        """
        from kubesim.kubelet import Kubelet, KubeletConfig

        leader = self.kubelet
        options = {
            k: v for k, v in self.options.kubelet_options.items() if k not in ("node_labels", "node_taints")
        }
        config = KubeletConfig(
            state_dir=self.options.state_dir / f"pool-{node.name}",
            node=node,
            api_port=int(self.url.rsplit(":", 1)[1]),
            image_dir=leader.images.root,
            **options,
        )
        kubelet = Kubelet(self.store, config, None)
        kubelet.leader = leader
        await kubelet.start()
        leader.peers.append(kubelet)
        # Stopped before the components that were there first (stop goes in reverse).
        self._components.append(kubelet)
        leader._schedule_needed.set()
        return kubelet

    async def stop(self) -> None:
        for c in reversed(self._components):
            try:
                res = c.stop()
                if inspect.isawaitable(res):
                    await asyncio.wait_for(res, timeout=15)
            except Exception:
                log.exception("stopping %s failed", type(c).__name__)
        self._components.clear()
        await self.faults.drop_streams()
        for w in self.store.watches():
            w.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for hook in self.api.on_shutdown:
            await hook()


def _construct(cls: Any, kwargs: dict[str, Any]) -> Any:
    """Call `cls` with the keyword arguments its signature accepts (the halves evolve separately)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return cls(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return cls(**kwargs)
    return cls(**{k: v for k, v in kwargs.items() if k in params})
