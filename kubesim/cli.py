"""`python -m kubesim serve ...`: run one simulated cluster until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubesim", description="A Kubernetes API server and kubelet double.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the API until stopped")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    s.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    s.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA")
    s.add_argument("--token", help="require this bearer token (else anonymous access is allowed)")
    s.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="accept requests without credentials even with --token (kubectl sends no token over plain http)",
    )
    s.add_argument("--admin-token", help="token for /_kubesim admin calls (default: --token or random)")
    s.add_argument(
        "--extra-token",
        action="append",
        default=[],
        metavar="TOKEN=USER",
        help="accept another token, authenticating as USER",
    )
    s.add_argument(
        "--forbid",
        action="append",
        default=[],
        metavar="USER=NAMESPACE",
        help="answer 403 to USER in NAMESPACE",
    )
    s.add_argument(
        "--rbac-user",
        action="append",
        default=[],
        metavar="USER",
        help="authorize USER by the cluster's Roles, ClusterRoles and bindings only; repeatable",
    )
    s.add_argument(
        "--host-service",
        action="append",
        default=[],
        metavar="NS/NAME=PORT",
        help="the Service NS/NAME is served by a process on this machine's 127.0.0.1:PORT "
        "(its service proxy forwards there); repeatable",
    )
    s.add_argument(
        "--kubeconfig-out", type=Path, help="where to write the kubeconfig (default STATE/kubeconfig)"
    )
    s.add_argument(
        "--state-dir", type=Path, default=Path("kubesim-state"), help="certificates, pods, server.json"
    )
    s.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity of the node")
    s.add_argument(
        "--host-port",
        type=int,
        action="append",
        default=[],
        metavar="PORT",
        help="relay the pod's 127.0.0.1:PORT to the host's (e.g. an object-store emulator); repeatable",
    )
    s.add_argument(
        "--node-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra label of the node (e.g. nvidia.com/gpu.product=nvidia-l4); repeatable",
    )
    s.add_argument(
        "--node-taint",
        action="append",
        default=[],
        metavar="KEY[=VALUE]:EFFECT",
        help="a taint of the node (e.g. nvidia.com/gpu=present:NoSchedule); repeatable",
    )
    s.add_argument(
        "--rbac",
        action="store_true",
        help="authorize users outside system:masters by the cluster's Roles and bindings (needs --tls; the kubeconfig is the admin's)",
    )
    s.add_argument(
        "--enforce-owner-references",
        action="store_true",
        help="the OwnerReferencesPermissionEnforcement admission plugin (blockOwnerDeletion needs update on OWNER/finalizers)",
    )
    s.add_argument(
        "--exec-orphans",
        action="store_true",
        help="exec'd commands outlive their client (stdin open, output unread), as with a real runtime",
    )
    s.add_argument(
        "--node-pool",
        action="append",
        default=[],
        metavar="JSON",
        help=(
            "a node pool the simulated cluster autoscaler grows from zero, e.g. "
            '\'{"name": "l4", "gpus": 1, "maxNodes": 3, "labels": ["cloud.google.com/gke-accelerator=nvidia-l4"], '
            '"taints": ["nvidia.com/gpu=present:NoSchedule"], "scaleUpDelay": 2, "devicePluginDelay": 2}\'; repeatable'
        ),
    )
    s.add_argument("--node-name", default="kubesim-node")
    s.add_argument("--nodes", type=int, default=1, help="nodes (kubelets): NAME, NAME-2, ...")
    s.add_argument("--history-size", type=int, default=10000, help="watch events kept (older → 410 Expired)")
    s.add_argument("--bookmark-interval", type=float, default=10.0, help="seconds between watch BOOKMARKs")
    s.add_argument("--no-kubelet", action="store_true", help="API server only: pods stay Pending")
    s.add_argument("--log-level", default="WARNING")
    return p


def _pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        if "=" not in v:
            raise SystemExit(f"kubesim: {what} must look like A=B, got {v!r}")
        a, b = v.split("=", 1)
        out.append((a, b))
    return out


def _host_service(value: str) -> tuple[str, str, int]:
    where, _, port = value.partition("=")
    ns, _, name = where.partition("/")
    if not ns or not name or not port.isdigit():
        raise SystemExit(f"kubesim: --host-service must look like NS/NAME=PORT, got {value!r}")
    return ns, name, int(port)


async def _serve(args: argparse.Namespace) -> int:
    from kubesim.autoscaler import parse_pool
    from kubesim.cluster import Cluster, ClusterOptions

    try:
        pools = [parse_pool(text) for text in args.node_pool]
    except ValueError as e:
        print(f"kubesim: {e}", file=sys.stderr)
        return 2
    if len({p.name for p in pools}) != len(pools):
        print("kubesim: two --node-pool have the same name; name each pool once", file=sys.stderr)
        return 2
    opts = ClusterOptions(
        host=args.host,
        port=args.port,
        tls=args.tls,
        token=args.token,
        admin_token=args.admin_token,
        state_dir=args.state_dir.resolve(),
        kubeconfig_out=args.kubeconfig_out,
        gpus=args.gpus,
        node_name=args.node_name,
        nodes=max(1, args.nodes),
        history_size=args.history_size,
        bookmark_interval=args.bookmark_interval,
        kubelet=not args.no_kubelet,
        allow_anonymous=args.allow_anonymous,
        extra_tokens=dict(_pairs(args.extra_token, "--extra-token")),
        forbidden=_pairs(args.forbid, "--forbid"),
        rbac=args.rbac,
        owner_references_enforcement=args.enforce_owner_references,
        exec_orphans=args.exec_orphans,
        node_pools=pools,
        rbac_users=list(args.rbac_user),
        host_services=[_host_service(v) for v in args.host_service],
        kubelet_options={
            "host_ports": list(args.host_port),
            "node_labels": [f"{k}={v}" for k, v in _pairs(args.node_label, "--node-label")],
            "node_taints": list(args.node_taint),
        },
    )
    if args.rbac and not args.tls:
        # kubectl sends no credentials over plain HTTP: every kubectl request would be anonymous.
        print(
            "kubesim: --rbac needs --tls (kubectl sends no credentials over plain HTTP); add --tls",
            file=sys.stderr,
        )
        return 2
    cluster = Cluster(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await cluster.start()
    except OSError as e:
        print(
            f"kubesim: cannot listen on {args.host}:{args.port}: {e.strerror}; pick another --port",
            file=sys.stderr,
        )
        return 2
    print(f"kubesim serving {url} kubeconfig={cluster.kubeconfig_path}", flush=True)
    await stop.wait()
    await cluster.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "serve":
        return asyncio.run(_serve(args))
    return 2
