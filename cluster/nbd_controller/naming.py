"""Deterministic names and labels of everything the controller creates.

Names derive only from the Notebook's name and the context MD5, so a controller restarted at any
point finds what it (or its predecessor) already created instead of creating it twice: every create
is "create if absent" and a 409 means "already there".
"""

from __future__ import annotations

import hashlib

# The Notebook contract (group, kind, labels, the token's key, the name bound) is shared with the
# daemon and the CRD; it is re-exported here so the controller's modules name everything from one place.
from nbdcontract import (
    API_VERSION,
    DNS_LABEL_MAX,
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_CONTEXT_MD5,
    LABEL_MANAGED_BY,
    LABEL_NOTEBOOK,
    LABEL_REQUESTED_BY,
    PLURAL,
    TOKEN_KEY,
    VERSION,
)
from nbdcontract import MANAGED_BY_CONTROLLER as MANAGED_BY

__all__ = [
    "GROUP",
    "VERSION",
    "KIND",
    "PLURAL",
    "API_VERSION",
    "LABEL_NOTEBOOK",
    "LABEL_REQUESTED_BY",
    "LABEL_COMPONENT",
    "LABEL_CONTEXT_MD5",
    "LABEL_MANAGED_BY",
    "MANAGED_BY",
    "TOKEN_KEY",
    "BUILDS_CONFIGMAP",
    "pod_name",
    "token_secret_name",
    "build_job_name",
    "image_ref",
    "object_name",
    "run_job_name",
    "run_service_name",
    "outputs_claim_name",
    "outputs_reader_name",
    "rank0_address",
]

# Per namespace, the record of built contexts: data[<md5>] = <image reference>. It outlives Jobs and
# Notebooks, so a context is never built twice in a namespace.
BUILDS_CONFIGMAP = "nbd-builds"


def _bounded(base: str, suffix: str) -> str:
    """`base + suffix`, shortened with a stable hash when it would pass 63 characters."""
    name = base + suffix
    if len(name) <= DNS_LABEL_MAX:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = DNS_LABEL_MAX - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-.')}-{digest}{suffix}"


def pod_name(notebook: str) -> str:
    """The notebook Pod: one per Notebook, recreated under the same name after a suspend."""
    return _bounded(notebook, "-notebook")


def workspace_claim_name(notebook: str) -> str:
    """The PersistentVolumeClaim holding the working directory when spec.workspace asks for one;
    it outlives the pod (suspend, idle stop, replacement) and goes with the Notebook."""
    return _bounded(notebook, "-workspace")


def token_secret_name(notebook: str) -> str:
    """The Secret holding the Jupyter token (key `token`), owned by the Notebook."""
    return _bounded(notebook, "-token")


def build_job_name(md5: str, for_namespace: str = "") -> str:
    """The build Job of a context: one per (namespace, MD5), shared by Notebooks with that MD5. In a
    build namespace shared by several namespaces (`for_namespace` set) the name also says whose."""
    if not for_namespace:
        return f"nbd-build-{md5}"
    return f"nbd-build-{md5}-{hashlib.sha256(for_namespace.encode()).hexdigest()[:8]}"


def image_ref(registry: str, namespace: str, md5: str) -> str:
    """The image built from a context. Tagged by the MD5, so equal contexts share one image."""
    return f"{registry}/nbd/{namespace}-context:{md5}"


def object_name(prefix: str, md5: str) -> str:
    """The object holding an uploaded context."""
    return f"{prefix}/{md5}.tar.gz" if prefix else f"{md5}.tar.gz"


def run_job_name(run: str) -> str:
    """A Run's Job: named after the Run, so an Indexed Job's pods get hostnames `RUN-INDEX`."""
    return run


def run_service_name(run: str) -> str:
    """The headless Service of a run of several nodes: the pods' `subdomain`."""
    return run


def outputs_claim_name(run: str) -> str:
    """The PersistentVolumeClaim holding a run's outputs, owned by the Run."""
    return _bounded(run, "-outputs")


def outputs_reader_name(run: str) -> str:
    """The pod that mounts a run's outputs claim read-only for the daemon to fetch from."""
    return _bounded(run, "-outputs-reader")


def rank0_address(run: str, namespace: str, domain: str) -> str:
    """Rank 0's fully qualified name: hostname `RUN-0` in subdomain `RUN` (the headless Service)."""
    return f"{run_job_name(run)}-0.{run_service_name(run)}.{namespace}.svc.{domain}"
