"""The controller's one configuration, read from environment variables.

In the cluster every variable comes from one ConfigMap (`nbd-config`, loaded with `envFrom`), so an
admin edits a single object to change the bucket, the registry or the builder. Parsing is pure: it
takes a mapping, so tests pass dicts and never touch `os.environ`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbdcontract import (
    duration_seconds,
    label_key_problem,
    label_value_problem,
    priority_class_problem,
    toleration_problem,
)

__all__ = ["Config", "ConfigError", "BUILDERS", "AUTOSCALER_MODES", "MAX_UPLOAD_URL_TTL", "STORES"]

# The longest a signed PUT URL may live: a leaked URL is useful to nobody for long.
MAX_UPLOAD_URL_TTL = 900
BUILDERS = ("buildkit", "kaniko")
POD_SECURITY = ("auto", "restricted", "baseline")
# NBD_AUTOSCALER: `auto` finds the cluster autoscaler by its status ConfigMap and its events on the
# pod; `present` says some autoscaler (Karpenter, a cloud's own) adds nodes even without them;
# `none` says the nodes are all there will be.
AUTOSCALER_MODES = ("auto", "present", "none")
# Where build contexts live: Google Cloud Storage, an S3-compatible service (S3, MinIO, Ceph RGW,
# R2), or the controller's own store on a volume (no bucket, reached through the API server).
STORES = ("gcs", "s3", "incluster")
DEFAULT_STORE_SERVICE = "nbd-system/nbd-store:http"
DEFAULT_STORE_URL = "http://nbd-store.nbd-system.svc:8080"

# The builders run every user's Dockerfile with the registry's credentials: pinned by tag (to read)
# and digest (what runs), so a re-pushed tag never changes them. Raise both together.
DEFAULT_BUILDKIT_IMAGE = (
    "moby/buildkit:v0.23.2-rootless@sha256:cab936745de5d673465948f1e93ff4d6e372bbe33f218afd3314eba45a6f85a9"
)
# Kaniko was archived upstream in 2025; this is a maintained fork's image. Override as needed.
DEFAULT_KANIKO_IMAGE = (
    "ghcr.io/osscontainertools/kaniko:v1.27.6-alpine"
    "@sha256:795a358f6c22a9fcd66bb7e14bd97728155e1c171ca951f3c3ba6501054234ce"
)
# The init container only needs python3 (stdlib) to fetch, check and unpack the context.
DEFAULT_UTILITY_IMAGE = "python:3.12-alpine"


# Requests small enough that a shared node holds many idle notebooks, and ephemeral-storage so the
# kubelet evicts a runaway container rather than letting it fill the node's disk. An admin sizes
# them for the cluster (a quota that demands limits, a LimitRange) in nbd-config.
DEFAULT_NOTEBOOK_REQUESTS = (("cpu", "100m"), ("memory", "256Mi"), ("ephemeral-storage", "1Gi"))
DEFAULT_NOTEBOOK_LIMITS = (("ephemeral-storage", "50Gi"),)
# A build unpacks and writes image layers (pip wheels, CUDA libraries): memory and disk.
DEFAULT_BUILD_REQUESTS = (("cpu", "250m"), ("memory", "512Mi"), ("ephemeral-storage", "5Gi"))
DEFAULT_BUILD_LIMITS = (("memory", "8Gi"), ("ephemeral-storage", "50Gi"))

_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_SUFFIX = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def quantity_value(text: str) -> float:
    """The number a Kubernetes quantity stands for (`500m` is 0.5, `1Gi` 1073741824)."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


def _resource_list(
    name: str, raw: str | None, default: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return default
    if raw.strip().lower() == "none":
        return ()
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in RESOURCE_NAMES or _QUANTITY.fullmatch(value) is None:
            raise ConfigError(
                f"{name}={raw!r}: write RESOURCE=QUANTITY,... with RESOURCE one of "
                f"{', '.join(RESOURCE_NAMES)} (for example cpu=500m,memory=2Gi), or none"
            )
        out[key] = value
    return tuple(out.items())


def _check_within(
    kind: str, requests: tuple[tuple[str, str], ...], limits: tuple[tuple[str, str], ...]
) -> None:
    limit = dict(limits)
    for key, value in requests:
        if key in limit and quantity_value(value) > quantity_value(limit[key]):
            raise ConfigError(
                f"NBD_{kind}_REQUESTS asks {key}={value}, over NBD_{kind}_LIMITS {key}={limit[key]}: "
                "a request must not exceed its limit"
            )


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable to fix."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything an admin can configure. Field docs name the environment variable."""

    # NBD_STORE: gcs | s3 | incluster (see STORES).
    store: str = "gcs"
    bucket: str = ""  # NBD_BUCKET: the bucket holding build contexts (gcs, s3).
    # NBD_S3_ENDPOINT_URL: an S3-compatible endpoint (MinIO, Ceph RGW, R2); None: AWS S3 itself.
    # Signed URLs name it, so it must be reachable from the users' machines and the build pods.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"  # NBD_S3_REGION (R2: auto)
    s3_path_style: bool = False  # NBD_S3_PATH_STYLE: ENDPOINT/BUCKET/KEY instead of BUCKET.ENDPOINT/KEY.
    # NBD_STORE_DIR: where the in-cluster store keeps contexts (the mount of its volume).
    store_dir: str = "/var/lib/nbd-store"
    # NBD_STORE_LISTEN: the in-cluster store's HTTP address inside the controller's pod. Port 10250
    # because the API server's service proxy must reach it, and the control plane of a private GKE
    # cluster reaches nodes and pods only on 443 and 10250 without an extra firewall rule.
    store_listen: str = "0.0.0.0:10250"
    # NBD_STORE_SERVICE: NAMESPACE/SERVICE:PORT of the in-cluster store's Service, which users'
    # machines reach through the API server's service proxy.
    store_service: str = DEFAULT_STORE_SERVICE
    # NBD_STORE_URL: the in-cluster store as build pods reach it directly (the Service's DNS name).
    store_url: str = DEFAULT_STORE_URL
    # NBD_STORE_MAX_BYTES: the in-cluster store removes the least recently used contexts that no
    # Notebook or Run needs once it holds more than this (suffixes Ki, Mi, Gi, Ti).
    store_max_bytes: int = 20 << 30
    # NBD_STORE_COLLECT_SECONDS: how often the in-cluster store checks its size.
    store_collect_seconds: float = 60.0
    prefix: str = "contexts"  # NBD_PREFIX: objects are <prefix>/<md5>.tar.gz.
    registry: str  # NBD_REGISTRY: images are pushed to <registry>/nbd/<namespace>-context:<md5>.
    builder: str = "buildkit"  # NBD_BUILDER: buildkit | kaniko.
    buildkit_image: str = DEFAULT_BUILDKIT_IMAGE  # NBD_BUILDKIT_IMAGE
    kaniko_image: str = DEFAULT_KANIKO_IMAGE  # NBD_KANIKO_IMAGE
    utility_image: str = DEFAULT_UTILITY_IMAGE  # NBD_UTILITY_IMAGE
    insecure_registry: bool = False  # NBD_INSECURE_REGISTRY: push over plain HTTP.
    # NBD_REGISTRY_SECRET: a kubernetes.io/dockerconfigjson Secret, in each namespace notebooks run
    # in, that builders push with and notebook pods pull with (imagePullSecrets). None: no credential
    # is mounted (the registry is open, or the node or workload identity authenticates).
    registry_secret: str | None = None
    # NBD_BUILD_SERVICE_ACCOUNT: the build pods' Kubernetes service account (GKE Workload Identity,
    # EKS IRSA or Pod Identity bind a cloud identity to it); its token is mounted. None: the
    # namespace's default account, with no token mounted.
    build_service_account: str | None = None
    build_cache: bool = True  # NBD_BUILD_CACHE: import and export a layer cache in the registry.
    cache_repo: str = ""  # NBD_CACHE_REPO: default <registry>/nbd/cache.
    # NBD_CACHE_SHARED: one cache for every namespace (`shared`) instead of one per namespace. A
    # cache is only as trusted as whoever may build into it: share it within one team.
    cache_shared: bool = False
    namespaces: tuple[str, ...] = ()  # NBD_NAMESPACES: comma-separated; empty = all namespaces.
    gpu_label_key: str = "nvidia.com/gpu.product"  # NBD_GPU_LABEL_KEY: node label for gpu.type.
    gpu_resource: str = "nvidia.com/gpu"  # NBD_GPU_RESOURCE
    upload_url_ttl: int = MAX_UPLOAD_URL_TTL  # NBD_UPLOAD_URL_TTL seconds (<= 900).
    download_url_ttl: int = 3600  # NBD_DOWNLOAD_URL_TTL seconds, for the build's fetch.
    signing_key_file: str | None = None  # NBD_SIGNING_KEY_FILE, else GOOGLE_APPLICATION_CREDENTIALS.
    signing_service_account: str | None = None  # NBD_SIGNING_SERVICE_ACCOUNT: IAM signBlob signer.
    concurrency: int = 4  # NBD_CONCURRENCY: Notebooks reconciled at once.
    resync_seconds: float = 300.0  # NBD_RESYNC_SECONDS: every Notebook is revisited this often.
    # NBD_WATCH_READ_TIMEOUT seconds: a watch that delivers nothing for this long is taken for a dead
    # connection and listed again. The API server sends a bookmark every minute to a watch that asks.
    watch_read_timeout: float = 90.0
    # NBD_NOTEBOOK_FS_GROUP: the notebook pod's fsGroup, so /content is writable for whatever user
    # the image runs as (100 is "users", the group of Jupyter's docker-stacks user). "off" leaves
    # it to admission (OpenShift's restricted SCC assigns one from the namespace's range).
    notebook_fs_group: int | None = 100
    # NBD_OUTPUTS_STORAGE_CLASS: the storage class of a one-node run's outputs claim (ReadWriteOnce)
    # when its spec.outputs.storageClass is unset; NBD_OUTPUTS_RWX_STORAGE_CLASS the same for runs
    # of several nodes (ReadWriteMany: Filestore, EFS, an NFS provisioner). None: the cluster default.
    outputs_storage_class: str | None = None
    outputs_rwx_storage_class: str | None = None
    # NBD_CLUSTER_DOMAIN: the cluster's DNS domain, in MASTER_ADDR (rank 0's fully qualified name).
    cluster_domain: str = "cluster.local"
    # Container requests and limits, as `cpu=100m,memory=256Mi,ephemeral-storage=1Gi` (`none`: none).
    # NBD_NOTEBOOK_REQUESTS / NBD_NOTEBOOK_LIMITS: the notebook and run containers' defaults; a
    # Notebook's or Run's spec.resources.cpu/memory set both the request and the limit of its own.
    # NBD_BUILD_REQUESTS / NBD_BUILD_LIMITS: the build pod's (its fetch and its builder).
    # NBD_BUILD_NAMESPACE: where build Jobs run, apart from the users' namespaces (builders need the
    # `privileged` Pod Security level, which users' namespaces need not allow). None: each in the
    # namespace of its Notebook or Run. The registry Secret and build service account live there.
    build_namespace: str | None = None
    # NBD_POD_SECURITY: `auto` makes notebook and run pods pass the `restricted` Pod Security level
    # in namespaces labelled for it (pod-security.kubernetes.io/enforce or warn), `restricted` does
    # so everywhere, `baseline` never (root images and `sudo` keep working there).
    pod_security: str = "auto"
    notebook_requests: tuple[tuple[str, str], ...] = DEFAULT_NOTEBOOK_REQUESTS
    notebook_limits: tuple[tuple[str, str], ...] = DEFAULT_NOTEBOOK_LIMITS
    build_requests: tuple[tuple[str, str], ...] = DEFAULT_BUILD_REQUESTS
    build_limits: tuple[tuple[str, str], ...] = DEFAULT_BUILD_LIMITS

    def build_location(self, namespace: str) -> tuple[str, str]:
        """(the namespace a build for `namespace` runs in, the `for_namespace` of its Job's name)."""
        if self.build_namespace and self.build_namespace != namespace:
            return self.build_namespace, namespace
        return namespace, ""

    # NBD_DEFAULT_TOLERATIONS: a JSON list of tolerations every notebook and run pod gets, e.g.
    # [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]; a spec's own
    # tolerations are added to them.
    default_tolerations: tuple[dict[str, Any], ...] = ()
    # NBD_DEFAULT_NODE_SELECTOR: `key=value,key=value` node labels every pod needs; a key the spec's
    # nodeSelector also has takes the spec's value.
    default_node_selector: dict[str, str] = field(default_factory=dict)
    # NBD_DEFAULT_PRIORITY_CLASS: the PriorityClass of pods whose spec names none.
    default_priority_class: str | None = None
    autoscaler: str = "auto"  # NBD_AUTOSCALER: auto | present | none (see AUTOSCALER_MODES).
    # NBD_IDLE_STOP_AFTER: the spec.idle.stopAfter of notebooks whose spec sets none ("4h"; "0", the
    # default, never stops them), in seconds.
    idle_stop_after: int = 0
    # NBD_IDLE_CHECK_SECONDS: how often a Ready notebook with an idle stop is asked whether it is idle.
    idle_check_seconds: float = 60.0

    @property
    def builder_image(self) -> str:
        return self.buildkit_image if self.builder == "buildkit" else self.kaniko_image

    def cache_ref(self, namespace: str) -> str:
        """Where a namespace's layer cache lives: a tag of the cache repository (BuildKit), or a
        repository of its own (kaniko, which tags each cached layer by its key)."""
        repo = self.cache_repo or f"{self.registry}/nbd/cache"
        scope = "shared" if self.cache_shared else namespace
        return f"{repo}:{scope}" if self.builder == "buildkit" else f"{repo}/{scope}"

    @staticmethod
    def from_env(env: Mapping[str, str]) -> Config:
        """Builds a Config from NBD_* variables; raises ConfigError naming the bad variable."""

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def require(name: str) -> str:
            value = get(name)
            if value is None:
                raise ConfigError(f"{name} is not set: put it in the nbd-config ConfigMap")
            return value

        def integer(name: str, default: int, lo: int, hi: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not an integer") from None
            if not lo <= value <= hi:
                raise ConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
            return value

        builder = get("NBD_BUILDER") or "buildkit"
        if builder not in BUILDERS:
            raise ConfigError(f"NBD_BUILDER={builder!r}: choose one of {', '.join(BUILDERS)}")
        store = (get("NBD_STORE") or "gcs").lower()
        if store not in STORES:
            raise ConfigError(f"NBD_STORE={store!r}: choose one of {', '.join(STORES)}")
        bucket = ""
        if store != "incluster":
            bucket = require("NBD_BUCKET")
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
                raise ConfigError(f"NBD_BUCKET={bucket!r} is not a valid bucket name")
        endpoint = get("NBD_S3_ENDPOINT_URL")
        if endpoint is not None and not re.fullmatch(r"https?://[^/?#\s]+/?", endpoint):
            raise ConfigError(f"NBD_S3_ENDPOINT_URL={endpoint!r}: give http(s)://HOST[:PORT], no path")
        path_style_raw = (get("NBD_S3_PATH_STYLE") or "false").lower()
        if path_style_raw not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"NBD_S3_PATH_STYLE={path_style_raw!r}: use true or false")
        region = get("NBD_S3_REGION") or "us-east-1"
        if not re.fullmatch(r"[a-z0-9-]{2,32}", region):
            raise ConfigError(f"NBD_S3_REGION={region!r} is not a region name (e.g. us-east-1, auto)")
        store_service = get("NBD_STORE_SERVICE") or DEFAULT_STORE_SERVICE
        if not re.fullmatch(r"[a-z0-9-]{1,63}/[a-z0-9-]{1,63}:[a-z0-9-]{1,15}", store_service):
            raise ConfigError(f"NBD_STORE_SERVICE={store_service!r}: give NAMESPACE/SERVICE:PORT")
        store_url = (get("NBD_STORE_URL") or DEFAULT_STORE_URL).rstrip("/")
        if not re.fullmatch(r"https?://[^/?#\s]+", store_url):
            raise ConfigError(f"NBD_STORE_URL={store_url!r}: give http(s)://HOST[:PORT], no path")
        listen = get("NBD_STORE_LISTEN") or "0.0.0.0:10250"
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"NBD_STORE_LISTEN={listen!r}: give HOST:PORT")
        max_bytes = _size("NBD_STORE_MAX_BYTES", get("NBD_STORE_MAX_BYTES"), 20 << 30)
        registry = require("NBD_REGISTRY").rstrip("/")
        prefix = (get("NBD_PREFIX") or "contexts").strip("/")
        namespaces = tuple(n.strip() for n in (get("NBD_NAMESPACES") or "").split(",") if n.strip())
        insecure = (get("NBD_INSECURE_REGISTRY") or "false").lower() in ("1", "true", "yes")
        cache_raw = (get("NBD_BUILD_CACHE") or "true").lower()
        if cache_raw not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"NBD_BUILD_CACHE={cache_raw!r}: use true or false")
        names = {}
        for variable in (
            "NBD_REGISTRY_SECRET",
            "NBD_BUILD_SERVICE_ACCOUNT",
            "NBD_OUTPUTS_STORAGE_CLASS",
            "NBD_OUTPUTS_RWX_STORAGE_CLASS",
        ):
            value = get(variable)
            if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
                raise ConfigError(f"{variable}={value!r} is not a valid object name")
            names[variable] = value
        resync_raw = get("NBD_RESYNC_SECONDS")
        try:
            resync = float(resync_raw) if resync_raw else 300.0
        except ValueError:
            raise ConfigError(f"NBD_RESYNC_SECONDS={resync_raw!r} is not a number") from None
        watch_raw = get("NBD_WATCH_READ_TIMEOUT")
        try:
            watch_read_timeout = float(watch_raw) if watch_raw else 90.0
        except ValueError:
            raise ConfigError(f"NBD_WATCH_READ_TIMEOUT={watch_raw!r} is not a number") from None
        if not 1 <= watch_read_timeout <= 3600:
            raise ConfigError(f"NBD_WATCH_READ_TIMEOUT={watch_raw} is out of range [1, 3600]")
        domain = (get("NBD_CLUSTER_DOMAIN") or "cluster.local").strip(".")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", domain):
            raise ConfigError(f"NBD_CLUSTER_DOMAIN={domain!r} is not a DNS domain")
        resources = {
            name: _resource_list(name, get(name), default)
            for name, default in (
                ("NBD_NOTEBOOK_REQUESTS", DEFAULT_NOTEBOOK_REQUESTS),
                ("NBD_NOTEBOOK_LIMITS", DEFAULT_NOTEBOOK_LIMITS),
                ("NBD_BUILD_REQUESTS", DEFAULT_BUILD_REQUESTS),
                ("NBD_BUILD_LIMITS", DEFAULT_BUILD_LIMITS),
            )
        }
        build_namespace = get("NBD_BUILD_NAMESPACE")
        if build_namespace is not None and not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", build_namespace
        ):
            raise ConfigError(f"NBD_BUILD_NAMESPACE={build_namespace!r} is not a valid namespace name")
        pod_security = (get("NBD_POD_SECURITY") or "auto").lower()
        if pod_security not in POD_SECURITY:
            raise ConfigError(f"NBD_POD_SECURITY={pod_security!r}: choose one of {', '.join(POD_SECURITY)}")
        _check_within("NOTEBOOK", resources["NBD_NOTEBOOK_REQUESTS"], resources["NBD_NOTEBOOK_LIMITS"])
        _check_within("BUILD", resources["NBD_BUILD_REQUESTS"], resources["NBD_BUILD_LIMITS"])
        autoscaler = (get("NBD_AUTOSCALER") or "auto").lower()
        if autoscaler not in AUTOSCALER_MODES:
            raise ConfigError(f"NBD_AUTOSCALER={autoscaler!r}: choose one of {', '.join(AUTOSCALER_MODES)}")
        try:
            idle_stop_after = duration_seconds(get("NBD_IDLE_STOP_AFTER") or "0")
        except ValueError as e:
            raise ConfigError(f"NBD_IDLE_STOP_AFTER: {e}") from None
        priority = get("NBD_DEFAULT_PRIORITY_CLASS")
        if priority is not None and priority_class_problem(priority) is not None:
            raise ConfigError(f"NBD_DEFAULT_PRIORITY_CLASS: {priority_class_problem(priority)}")
        return Config(
            store=store,
            bucket=bucket,
            s3_endpoint_url=endpoint.rstrip("/") if endpoint else None,
            s3_region=region,
            s3_path_style=path_style_raw in ("1", "true", "yes"),
            store_dir=get("NBD_STORE_DIR") or "/var/lib/nbd-store",
            store_listen=listen,
            store_service=store_service,
            store_url=store_url,
            store_max_bytes=max_bytes,
            store_collect_seconds=float(integer("NBD_STORE_COLLECT_SECONDS", 60, 1, 86400)),
            prefix=prefix,
            registry=registry,
            builder=builder,
            buildkit_image=get("NBD_BUILDKIT_IMAGE") or DEFAULT_BUILDKIT_IMAGE,
            kaniko_image=get("NBD_KANIKO_IMAGE") or DEFAULT_KANIKO_IMAGE,
            utility_image=get("NBD_UTILITY_IMAGE") or DEFAULT_UTILITY_IMAGE,
            insecure_registry=insecure,
            registry_secret=names["NBD_REGISTRY_SECRET"],
            build_service_account=names["NBD_BUILD_SERVICE_ACCOUNT"],
            build_cache=cache_raw in ("1", "true", "yes"),
            cache_repo=(get("NBD_CACHE_REPO") or "").rstrip("/"),
            cache_shared=(get("NBD_CACHE_SHARED") or "false").lower() in ("1", "true", "yes"),
            namespaces=namespaces,
            gpu_label_key=get("NBD_GPU_LABEL_KEY") or "nvidia.com/gpu.product",
            gpu_resource=get("NBD_GPU_RESOURCE") or "nvidia.com/gpu",
            upload_url_ttl=integer("NBD_UPLOAD_URL_TTL", MAX_UPLOAD_URL_TTL, 60, MAX_UPLOAD_URL_TTL),
            download_url_ttl=integer("NBD_DOWNLOAD_URL_TTL", 3600, 60, 7 * 24 * 3600),
            signing_key_file=get("NBD_SIGNING_KEY_FILE") or get("GOOGLE_APPLICATION_CREDENTIALS"),
            signing_service_account=get("NBD_SIGNING_SERVICE_ACCOUNT"),
            concurrency=integer("NBD_CONCURRENCY", 4, 1, 256),
            resync_seconds=resync,
            watch_read_timeout=watch_read_timeout,
            notebook_fs_group=_fs_group(get("NBD_NOTEBOOK_FS_GROUP")),
            outputs_storage_class=names["NBD_OUTPUTS_STORAGE_CLASS"],
            outputs_rwx_storage_class=names["NBD_OUTPUTS_RWX_STORAGE_CLASS"],
            cluster_domain=domain,
            pod_security=pod_security,
            build_namespace=build_namespace,
            notebook_requests=resources["NBD_NOTEBOOK_REQUESTS"],
            notebook_limits=resources["NBD_NOTEBOOK_LIMITS"],
            build_requests=resources["NBD_BUILD_REQUESTS"],
            build_limits=resources["NBD_BUILD_LIMITS"],
            default_tolerations=_tolerations(get("NBD_DEFAULT_TOLERATIONS")),
            default_node_selector=_node_selector(get("NBD_DEFAULT_NODE_SELECTOR")),
            default_priority_class=priority,
            autoscaler=autoscaler,
            idle_stop_after=idle_stop_after,
            idle_check_seconds=float(integer("NBD_IDLE_CHECK_SECONDS", 60, 1, 3600)),
        )


def _tolerations(raw: str | None) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"NBD_DEFAULT_TOLERATIONS is not JSON ({e.msg}): give a list such as "
            '[{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]'
        ) from None
    if not isinstance(value, list):
        raise ConfigError("NBD_DEFAULT_TOLERATIONS must be a JSON list of tolerations")
    for i, toleration in enumerate(value):
        problem = toleration_problem(toleration)
        if problem is not None:
            raise ConfigError(f"NBD_DEFAULT_TOLERATIONS[{i}]: {problem}")
    return tuple({k: v for k, v in t.items() if v is not None and v != ""} for t in value)


def _node_selector(raw: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.strip().partition("=")
        problem = (
            "must look like key=value"
            if not sep
            else label_key_problem(key.strip()) or label_value_problem(value.strip())
        )
        if problem is not None:
            raise ConfigError(f"NBD_DEFAULT_NODE_SELECTOR item {item.strip()!r}: {problem}")
        out[key.strip()] = value.strip()
    return out


def _fs_group(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return 100
    if raw.strip().lower() == "off":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**31 - 1:
        raise ConfigError(f"NBD_NOTEBOOK_FS_GROUP={raw!r}: give a group id (0 to 2147483647) or off")
    return value


_SIZE_SUFFIXES = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def _size(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", raw)
    if match is None:
        raise ConfigError(f"{name}={raw!r}: give a size in bytes, optionally with Ki, Mi, Gi or Ti")
    value = int(match.group(1)) * _SIZE_SUFFIXES[match.group(2) or ""]
    if value < 1 << 20:
        raise ConfigError(f"{name}={raw!r} is below 1Mi: the store could not hold one context")
    return value
