# mypy: disable-error-code="no-untyped-call"
"""`nbd-controller`: wires the configuration, the store, the watches, the work queue and the
reconciler together, and runs until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbdcontract import LABEL_FOR_NAMESPACE, LABEL_REQUESTED_BY_KIND, LABEL_RUN, RUN_KIND, RUN_PLURAL

from .config import Config, ConfigError
from .naming import (
    GROUP,
    KIND,
    LABEL_CONTEXT_MD5,
    LABEL_MANAGED_BY,
    LABEL_NOTEBOOK,
    LABEL_REQUESTED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)

__all__ = ["main", "run", "owner_keys"]

log = logging.getLogger("nbd_controller")

# (kind, namespace, name): a Notebook and a Run of the same name are different keys.
Key = tuple[str, str, str]


def owner_keys(namespace: str, labels: dict[str, str], by_md5: dict[tuple[str, str], set[Key]]) -> set[Key]:
    """The Notebooks and Runs to look at when an object the controller made (a pod, a Job) changes:
    the one it belongs to, the one that asked for a build, and every one waiting on that build."""
    keys: set[Key] = set()
    if labels.get(LABEL_NOTEBOOK):
        keys.add((KIND, namespace, labels[LABEL_NOTEBOOK]))
    if labels.get(LABEL_RUN):
        keys.add((RUN_KIND, namespace, labels[LABEL_RUN]))
    if labels.get(LABEL_REQUESTED_BY):
        # A build Job without the kind label was requested by a Notebook.
        keys.add((labels.get(LABEL_REQUESTED_BY_KIND) or KIND, namespace, labels[LABEL_REQUESTED_BY]))
    md5 = labels.get(LABEL_CONTEXT_MD5)
    if md5:
        keys |= by_md5.get((namespace, md5), set())
    return keys


def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    return client.ApiClient()


async def _check_permissions(kube: Any, cfg: Config, loop: asyncio.AbstractEventLoop, executor: Any) -> None:
    """Refuses to start (ConfigError) when the controller's role lacks a permission it needs."""
    from kubernetes.client.exceptions import ApiException

    from .permissions import describe, missing

    try:
        denied = await loop.run_in_executor(executor, missing, kube.can, cfg.namespaces)
    except (ApiException, OSError) as e:
        # Without the review API the check cannot answer; the calls themselves will tell.
        log.warning("cannot check the controller's permissions (%s); going on", getattr(e, "reason", e))
        return
    if denied:
        raise ConfigError(describe(denied))


async def run(cfg: Config, kubeconfig: str | None = None) -> None:
    from .kube import Kube
    from .reconciler import Reconciler
    from .storage import make_store
    from .watching import Watcher
    from .workqueue import WorkQueue

    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=cfg.concurrency * 3 + 4, thread_name_prefix="kube")
    kube = Kube(_api_client(kubeconfig))
    # Before anything else starts (the in-cluster store's listener among it): a role that lacks
    # a permission is told at once.
    await _check_permissions(kube, cfg, loop, executor)
    store = make_store(cfg)
    reconciler = Reconciler(cfg, kube, store, executor)
    # Notebooks and Runs waiting on a shared build Job are found through this index:
    # (namespace, md5) -> keys.
    by_md5: dict[tuple[str, str], set[Key]] = {}
    md5_of: dict[Key, str] = {}
    known: set[Key] = set()

    async def handle(key: Key) -> float | None:
        kind, namespace, name = key
        return await reconciler.reconcile(namespace, name, kind)

    queue: WorkQueue[Key] = WorkQueue(handle, concurrency=cfg.concurrency)

    def on_resource(resource_kind: str) -> Any:
        def on_event(kind: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            key = (resource_kind, meta.get("namespace", ""), meta.get("name", ""))
            old = md5_of.pop(key, None)
            if old is not None:
                by_md5.get((key[1], old), set()).discard(key)
            upload = ((obj.get("spec") or {}).get("build") or {}).get("upload") or {}
            if kind != "DELETED" and upload.get("md5"):
                md5_of[key] = upload["md5"]
                by_md5.setdefault((key[1], upload["md5"]), set()).add(key)
            if kind == "DELETED":
                known.discard(key)
            else:
                known.add(key)
                queue.add(key)

        return on_event

    on_notebook = on_resource(KIND)
    on_run = on_resource(RUN_KIND)

    def on_owned(kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        # A build in the separate build namespace belongs to the namespace it builds for.
        namespace = labels.get(LABEL_FOR_NAMESPACE) or meta.get("namespace", "")
        for key in owner_keys(namespace, labels, by_md5):
            queue.add(key)

    from kubernetes import client

    custom = client.CustomObjectsApi(kube.api_client)
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    watchers: list[Watcher] = []
    scopes: list[str | None] = list(cfg.namespaces) or [None]
    if cfg.namespaces and cfg.build_namespace and cfg.build_namespace not in cfg.namespaces:
        scopes.append(cfg.build_namespace)
    for namespace in scopes:
        if namespace is None:
            specs: list[tuple[str, Any, tuple[Any, ...], dict[str, Any], Any]] = [
                ("notebooks", custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL), {}, on_notebook),
                ("runs", custom.list_cluster_custom_object, (GROUP, VERSION, RUN_PLURAL), {}, on_run),
                ("pods", kube.core.list_pod_for_all_namespaces, (), {"label_selector": selector}, on_owned),
                ("jobs", kube.batch.list_job_for_all_namespaces, (), {"label_selector": selector}, on_owned),
            ]
        else:
            specs = [
                (
                    f"notebooks/{namespace}",
                    custom.list_namespaced_custom_object,
                    (GROUP, VERSION, namespace, PLURAL),
                    {},
                    on_notebook,
                ),
                (
                    f"runs/{namespace}",
                    custom.list_namespaced_custom_object,
                    (GROUP, VERSION, namespace, RUN_PLURAL),
                    {},
                    on_run,
                ),
                (
                    f"pods/{namespace}",
                    kube.core.list_namespaced_pod,
                    (namespace,),
                    {"label_selector": selector},
                    on_owned,
                ),
                (
                    f"jobs/{namespace}",
                    kube.batch.list_namespaced_job,
                    (namespace,),
                    {"label_selector": selector},
                    on_owned,
                ),
            ]
        for name, fn, args, kwargs, callback in specs:
            watchers.append(
                Watcher(
                    name, fn, args, kwargs, callback, loop, kube.to_dict, read_timeout=cfg.watch_read_timeout
                )
            )

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    queue.start()
    for watcher in watchers:
        watcher.start()
    log.info(
        "nbd-controller started: store %s, bucket %s, prefix %s, registry %s, builder %s, namespaces %s",
        cfg.store,
        cfg.bucket or "-",
        cfg.prefix,
        cfg.registry,
        cfg.builder,
        ",".join(cfg.namespaces) or "all",
    )

    async def resync() -> None:
        # Watches relist every few minutes anyway; this also revisits keys a lost event would miss.
        while True:
            await asyncio.sleep(cfg.resync_seconds)
            for key in list(known):
                queue.add(key)

    resync_task = asyncio.create_task(resync())
    collect_task: asyncio.Task[None] | None = None
    from .incluster import InClusterStore

    if isinstance(store, InClusterStore):
        host, _, port = cfg.store_listen.rpartition(":")
        bound = store.serve(host, int(port))
        log.info("in-cluster store serving %s on %s:%d", cfg.store_dir, host, bound)

        async def collect() -> None:
            # Contexts named by an existing Notebook or Run are kept; the rest go oldest first.
            while True:
                await asyncio.sleep(cfg.store_collect_seconds)
                needed = set(md5_of.values())
                try:
                    await loop.run_in_executor(executor, store.collect, needed)
                except OSError as e:
                    log.warning("in-cluster store: collection failed: %s", e)

        collect_task = asyncio.create_task(collect())
    await stop.wait()
    log.info("nbd-controller stopping")
    resync_task.cancel()
    if collect_task is not None:
        collect_task.cancel()
    if isinstance(store, InClusterStore):
        store.close()
    for watcher in watchers:
        watcher.stop()
    await queue.stop()
    executor.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbd-controller", description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else KUBECONFIG)")
    parser.add_argument("--log-level", default=os.environ.get("NBD_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The kubernetes client logs request URLs at DEBUG; signed URLs never reach our log lines.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    try:
        cfg = Config.from_env(os.environ)
    except ConfigError as e:
        print(f"nbd-controller: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(cfg, args.kubeconfig))
    except ConfigError as e:
        print(f"nbd-controller: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
