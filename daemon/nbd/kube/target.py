"""Which cluster the daemon talks to, and as whom: kubeconfig resolution into a `KubeTarget`.

The `kubernetes` client's own loader does the real work (contexts, tokens, token files, client
certificates, exec credential plugins with their refresh hook, CA bundles, insecure-skip-tls-verify,
proxy-url), so nbd authenticates exactly as the Python client does. This module adds what the user
sees: a resolved path, clear errors for a missing file, an unknown context or invalid YAML, and the
namespace (explicit, else the context's, else "default").

Loading may run an exec credential plugin, so it is blocking: `load_target` runs it in a thread.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

from nbd.errors import FailedPrecondition, InvalidArgument

__all__ = ["KubeTarget", "load_target", "load_target_blocking", "resolve_kubeconfig_path"]

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(eq=False)
class KubeTarget:
    """A resolved (kubeconfig, context, namespace) with the `kubernetes` Configuration built from it.

    Identity matters: `nbd.kube.transport.transport_for` keeps one aiohttp session per target and
    event loop, so every channel opened for it reuses connections, TLS settings and cached
    credentials.

    Attributes:
        kubeconfig: The kubeconfig path as resolved (may be a KUBECONFIG-style list).
        context: The context name in use.
        namespace: The namespace in use.
        configuration: The `kubernetes.client.Configuration` loaded from that context.
    """

    kubeconfig: str
    context: str
    namespace: str
    configuration: Configuration

    @property
    def host(self) -> str:
        """The API server URL, e.g. https://127.0.0.1:6443."""
        return str(self.configuration.host).rstrip("/")


def resolve_kubeconfig_path(kubeconfig: str | None) -> str:
    """Explicit path, else $KUBECONFIG (a `:`-separated list is kept whole), else ~/.kube/config."""
    if kubeconfig:
        return kubeconfig
    env = os.environ.get("KUBECONFIG", "")
    if env.strip(os.pathsep):
        return env
    return DEFAULT_KUBECONFIG


def _existing_paths(spec: str) -> list[str]:
    paths = [os.path.expanduser(p) for p in spec.split(os.pathsep) if p]
    return [p for p in paths if os.path.exists(p)]


def _context_names(merged: Any) -> list[str]:
    names: list[str] = []
    for item in merged.value.get("contexts") or []:
        name = item.value.get("name") if hasattr(item, "value") else item.get("name")
        if isinstance(name, str):
            names.append(name)
    return names


def _context_entry(merged: Any, name: str) -> dict[str, Any]:
    for item in merged.value.get("contexts") or []:
        raw = item.value if hasattr(item, "value") else item
        if raw.get("name") == name:
            ctx = raw.get("context") or {}
            return ctx if isinstance(ctx, dict) else {}
    return {}


def load_target_blocking(kubeconfig: str | None, context: str | None, namespace: str | None) -> KubeTarget:
    """Load a kubeconfig context into a `KubeTarget` (blocking: may run an exec plugin).

    Raises:
        FailedPrecondition: no kubeconfig file (reason NoKubeconfig), or no context chosen and no
            current-context (reason NoContext).
        InvalidArgument: the file is not a valid kubeconfig (reason InvalidKubeconfig), or the
            context is not in it (reason UnknownContext; the message lists the available ones).
    """
    spec = resolve_kubeconfig_path(kubeconfig)
    shown = spec
    if not _existing_paths(spec):
        raise FailedPrecondition(
            f"no kubeconfig at {shown}; set KUBECONFIG or pass --kubeconfig",
            reason="NoKubeconfig",
        )
    try:
        merger = KubeConfigMerger(spec)  # type: ignore[no-untyped-call]
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise InvalidArgument(
            f"the kubeconfig {shown} is not valid YAML ({detail}); fix or replace the file",
            reason="InvalidKubeconfig",
        ) from e
    except (ConfigException, OSError, AttributeError, TypeError, KeyError) as e:
        raise InvalidArgument(
            f"the kubeconfig {shown} cannot be read ({e}); fix or replace the file",
            reason="InvalidKubeconfig",
        ) from e
    merged = merger.config
    if merged is None or not isinstance(getattr(merged, "value", None), dict):
        raise InvalidArgument(
            f"the kubeconfig {shown} holds no configuration; fix or replace the file",
            reason="InvalidKubeconfig",
        )
    available = _context_names(merged)
    shown_available = ", ".join(available) if available else "none"
    if context is None:
        current = merged.value.get("current-context")
        if not current:
            raise FailedPrecondition(
                f"the kubeconfig {shown} has no current-context; pass --context "
                f"(available contexts: {shown_available})",
                reason="NoContext",
            )
        context = str(current)
    if context not in available:
        raise InvalidArgument(
            f'context "{context}" is not in the kubeconfig {shown}; available contexts: {shown_available}',
            reason="UnknownContext",
        )
    configuration = Configuration()
    try:
        loader = KubeConfigLoader(  # type: ignore[no-untyped-call]
            config_dict=merged, active_context=context, config_base_path=None
        )
        loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
    except (ConfigException, KeyError, TypeError, ValueError, OSError) as e:
        raise InvalidArgument(
            f'the kubeconfig {shown} is invalid for context "{context}" ({e}); fix the file',
            reason="InvalidKubeconfig",
        ) from e
    if not configuration.host or configuration.host == "http://localhost":
        server = ((_cluster_of(merged, context) or {}).get("server")) if context else None
        if not server:
            raise InvalidArgument(
                f'context "{context}" in the kubeconfig {shown} names a cluster without a '
                "server URL; fix the file",
                reason="InvalidKubeconfig",
            )
    ns = namespace or _context_entry(merged, context).get("namespace") or "default"
    return KubeTarget(kubeconfig=spec, context=context, namespace=str(ns), configuration=configuration)


def _cluster_of(merged: Any, context: str) -> dict[str, Any] | None:
    cluster_name = _context_entry(merged, context).get("cluster")
    for item in merged.value.get("clusters") or []:
        raw = item.value if hasattr(item, "value") else item
        if raw.get("name") == cluster_name:
            cluster = raw.get("cluster")
            return cluster if isinstance(cluster, dict) else None
    return None


async def load_target(kubeconfig: str | None, context: str | None, namespace: str | None) -> KubeTarget:
    """`load_target_blocking` in a thread: the event loop never waits on an exec plugin."""
    return await asyncio.to_thread(load_target_blocking, kubeconfig, context, namespace)
