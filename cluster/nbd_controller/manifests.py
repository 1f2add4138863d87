"""Pure builders of the objects the controller creates: the token Secret, the build Job, the notebook
Pod. Data in, dicts out (kubespawner's `make_pod` style), tested by dict equality.

Invariants: every object carries the `nbd.dev/*` labels and an ownerReference to the Notebook that
asked for it, so deleting the Notebook removes it by cascade; names come from `naming`, never from
randomness, so a restarted controller finds what was already created. The notebook's working
directory (`/content`, what the daemon syncs) is a volume of the Pod, never the container's own
filesystem: a restarted container starts from its image again, and a workdir in its filesystem
would be back to the build's files, taking every edit since with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

from nbdcontract import (
    ANNOTATION_COMPLETION_INDEX,
    ANNOTATION_FETCH_REQUEST,
    ANNOTATION_IMAGE,
    ANNOTATION_SPEC_HASH,
    COMPONENT_BUILD,
    COMPONENT_NOTEBOOK,
    COMPONENT_OUTPUTS,
    COMPONENT_RUN,
    COMPONENT_WORKSPACE,
    DEFAULT_MASTER_PORT,
    DEFAULT_OUTPUTS,
    DEFAULT_OUTPUTS_SIZE,
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    GPU_COUNT_DEFAULT,
    LABEL_FOR_NAMESPACE,
    LABEL_REQUESTED_BY_KIND,
    LABEL_RUN,
    NOTEBOOK_CONTAINER,
    RUN_CONTAINER,
    RUN_NODES_DEFAULT,
    RUN_TORCHRUN_ENV,
    SHM_DEFAULT,
    SHM_OFF,
    SHM_PATH,
    parse_size,
)

from .config import Config
from .naming import (
    API_VERSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_CONTEXT_MD5,
    LABEL_MANAGED_BY,
    LABEL_NOTEBOOK,
    LABEL_REQUESTED_BY,
    MANAGED_BY,
    TOKEN_KEY,
    build_job_name,
    outputs_claim_name,
    outputs_reader_name,
    pod_name,
    rank0_address,
    run_job_name,
    run_service_name,
    token_secret_name,
    workspace_claim_name,
)

__all__ = [
    "owner_reference",
    "token_secret",
    "build_job",
    "notebook_pod",
    "pod_spec_hash",
    "placement",
    "gpu_toleration",
    "jupyter_command",
    "fetch_script",
    "seed_script",
    "ANNOTATION_SPEC_HASH",
    "WORKSPACE",
    "BUILD_POD_FAILURE_POLICY",
    "RUN_POD_FAILURE_POLICY",
    "RUN_BACKOFF_LIMIT",
    "READER_SECONDS",
    "run_job",
    "run_service",
    "outputs_claim",
    "outputs_reader_pod",
    "run_env",
    "workspace_claim",
    "shm_size",
    "SHM_VOLUME",
    "data_volumes",
]

WORKSPACE = "/workspace"
FETCH_CONTAINER = "fetch"
# How long a finished build Job in a separate build namespace stays (nothing owns it there).
BUILD_JOB_TTL = 24 * 3600
BUILD_CONTAINER = "build"
# The notebook's working directory lives in this volume, at SUBPATH; the seed init container
# mounts the whole volume at SEED_MOUNT (the marker sits beside the workdir, out of the sync).
WORKDIR_VOLUME = "workdir"
WORKDIR_SUBPATH = "workdir"
SEED_CONTAINER = "seed-workdir"
SEED_MOUNT = "/nbd-workdir-volume"
SEEDED_MARKER = ".nbd-seeded"
# The memory-backed emptyDir mounted at /dev/shm, and the data claims' volumes (data-0, data-1, ...).
SHM_VOLUME = "dshm"
DATA_VOLUME_PREFIX = "data-"
# The registry Secret's volume and where each builder reads it ($DOCKER_CONFIG).
REGISTRY_AUTH_VOLUME = "registry-auth"
BUILDKIT_DOCKER_CONFIG = "/home/user/.docker"
KANIKO_DOCKER_CONFIG = "/kaniko/.docker"


@cache
def fetch_script() -> str:
    """The source of `nbd_controller.fetch`, run in the init container as `python3 -c`."""
    return resources.files("nbd_controller").joinpath("fetch.py").read_text()


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """The reference to a Notebook or a Run (its `kind`; a Notebook when the dict has none)."""
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": str(owner.get("kind") or KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(notebook_name: str, component: str) -> dict[str, str]:
    return {
        LABEL_NOTEBOOK: notebook_name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def token_secret(notebook: dict[str, Any], token: str) -> dict[str, Any]:
    """The Secret with the Jupyter token under key `token`."""
    name = notebook["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(name),
            "namespace": notebook["metadata"]["namespace"],
            "labels": _labels(name, COMPONENT_NOTEBOOK),
            "ownerReferences": [owner_reference(notebook)],
        },
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def _build_resources(config: Config) -> dict[str, Any]:
    """`{"resources": ...}` of the build pod's containers (empty when the admin configured none)."""
    out: dict[str, Any] = {}
    if config.build_requests:
        out["requests"] = dict(config.build_requests)
    if config.build_limits:
        out["limits"] = dict(config.build_limits)
    return {"resources": out} if out else {}


def _builder_container(config: Config, image: str, namespace: str, import_cache: bool) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    env: list[dict[str, str]] = []
    docker_config = KANIKO_DOCKER_CONFIG if config.builder == "kaniko" else BUILDKIT_DOCKER_CONFIG
    if config.registry_secret:
        # Both builders read $DOCKER_CONFIG/config.json, the file the Secret's key becomes.
        mounts.append({"name": REGISTRY_AUTH_VOLUME, "mountPath": docker_config, "readOnly": True})
        env.append({"name": "DOCKER_CONFIG", "value": docker_config})
    cache = config.cache_ref(namespace)
    if config.builder == "kaniko":
        args = [
            f"--context=dir://{WORKSPACE}",
            f"--dockerfile={WORKSPACE}/Dockerfile",
            f"--destination={image}",
        ]
        if config.build_cache and import_cache:
            args += ["--cache=true", f"--cache-repo={cache}"]
        else:
            args.append("--cache=false")
        if config.insecure_registry:
            args.append("--insecure")
        container: dict[str, Any] = {
            "name": BUILD_CONTAINER,
            "image": config.kaniko_image,
            "args": args,
            "volumeMounts": mounts,
        }
        if env:
            container["env"] = env
        return container
    insecure = ",registry.insecure=true" if config.insecure_registry else ""
    args = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={WORKSPACE}",
        "--local",
        f"dockerfile={WORKSPACE}",
        "--output",
        f"type=image,name={image},push=true{insecure}",
    ]
    if config.build_cache:
        # mode=max exports every layer, the dependency layers under the final COPY included.
        args += ["--export-cache", f"type=registry,ref={cache},mode=max{insecure}"]
        if import_cache:
            args += ["--import-cache", f"type=registry,ref={cache}{insecure}"]
    return {
        "name": BUILD_CONTAINER,
        "image": config.buildkit_image,
        "command": ["buildctl-daemonless.sh"],
        "args": args,
        # Rootless BuildKit inside an unprivileged pod: no process sandbox, unconfined profiles
        # (as in BuildKit's examples/kubernetes/job.rootless.yaml).
        "env": [{"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}, *env],
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
        },
        "volumeMounts": mounts + [{"name": "buildkitd", "mountPath": "/home/user/.local/share/buildkit"}],
    }


# A pod the cluster took away (preemption, eviction, a node drain) is retried: such a failure says
# nothing about the build. Any other failure fails the Job (backoffLimit 0).
BUILD_POD_FAILURE_POLICY: dict[str, Any] = {
    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
}


def build_job(
    config: Config,
    notebook: dict[str, Any],
    md5: str,
    image: str,
    context_url: str,
    *,
    import_cache: bool = True,
) -> dict[str, Any]:
    """The Job building context `md5` into `image`, for the Notebook or Run `notebook`.

    Its init container fetches the context through `context_url` (a signed GET URL), checks the MD5
    and unpacks it into the shared emptyDir; the builder then builds and pushes. backoffLimit is 0: a
    build of fixed content fails the same way twice, and the first failure's log is what the user
    needs; a pod the cluster disrupted is not counted (`BUILD_POD_FAILURE_POLICY`). With the cache
    on, the build imports and exports the namespace's layer cache; `import_cache=False` (a forced
    rebuild) runs every step and still exports.
    """
    name = notebook["metadata"]["name"]
    labels = {
        LABEL_REQUESTED_BY: name,
        LABEL_REQUESTED_BY_KIND: str(notebook.get("kind") or KIND),
        LABEL_COMPONENT: COMPONENT_BUILD,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_CONTEXT_MD5: md5,
    }
    namespace, for_namespace = config.build_location(notebook["metadata"]["namespace"])
    if for_namespace:
        labels[LABEL_FOR_NAMESPACE] = for_namespace
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    if config.builder == "buildkit":
        volumes.append({"name": "buildkitd", "emptyDir": {}})
    if config.registry_secret:
        volumes.append(
            {
                "name": REGISTRY_AUTH_VOLUME,
                "secret": {
                    "secretName": config.registry_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if config.build_service_account:
        # The account's token is what Workload Identity (GKE) or IRSA (EKS) exchanges for a cloud
        # identity that may push to the registry.
        pod_spec["serviceAccountName"] = config.build_service_account
        pod_spec["automountServiceAccountToken"] = True
    metadata: dict[str, Any] = {
        "name": build_job_name(md5, for_namespace),
        "namespace": namespace,
        "labels": labels,
        "annotations": {ANNOTATION_IMAGE: image},
    }
    lifetime: dict[str, Any] = {}
    if for_namespace:
        # An owner must be in the dependent's namespace: a Job in the build namespace has none,
        # and goes a day after it finished (its image is recorded by then).
        lifetime["ttlSecondsAfterFinished"] = BUILD_JOB_TTL
    else:
        metadata["ownerReferences"] = [owner_reference(notebook)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            **lifetime,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 3600,
            "podFailurePolicy": BUILD_POD_FAILURE_POLICY,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **pod_spec,
                    "initContainers": [
                        {
                            "name": FETCH_CONTAINER,
                            "image": config.utility_image,
                            "command": ["python3", "-c", fetch_script()],
                            "env": [
                                {"name": "NBD_CONTEXT_URL", "value": context_url},
                                {"name": "NBD_CONTEXT_MD5", "value": md5},
                                {"name": "NBD_WORKSPACE", "value": WORKSPACE},
                            ],
                            "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
                            # The builder's own: an init container's never adds to the pod's.
                            **_build_resources(config),
                        }
                    ],
                    "containers": [
                        {
                            **_builder_container(config, image, namespace, import_cache),
                            **_build_resources(config),
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


# JupyterLab when the image has it, else the notebook UI, else the bare server: each sets its own
# default URL (/lab, /tree), so the server root leads to the UI a person works in.
_JUPYTER_SCRIPT = (
    'if command -v jupyter-lab >/dev/null 2>&1; then exec jupyter lab "$@"; fi; '
    'if command -v jupyter-notebook >/dev/null 2>&1; then exec jupyter notebook "$@"; fi; '
    'exec jupyter server "$@"'
)


# $1 = the volume as the seed container sees it, $2 = the working directory in the image.
_SEED_SCRIPT = (
    "set -eu; "
    f'if [ ! -e "$1/{SEEDED_MARKER}" ]; then '
    f'rm -rf "$1/{WORKDIR_SUBPATH}"; mkdir "$1/{WORKDIR_SUBPATH}"; '
    f'if [ -d "$2" ]; then cp -a "$2/." "$1/{WORKDIR_SUBPATH}/"; fi; '
    f'chmod -R g+rwX "$1/{WORKDIR_SUBPATH}"; '
    f': > "$1/{SEEDED_MARKER}"; '
    "fi"
)


def seed_script(workdir: str) -> list[str]:
    """The seed init container's command: fill the workdir volume from the image's `workdir`, once.

    It runs from the notebook's own image, so `workdir` there is what the image was built with.
    `cp -a` keeps modes, times and links; the group (the pod's fsGroup, through the volume's
    setgid folders) gets write access, as the kubelet gives it on the volume itself. The marker
    is written after the copy, so a copy cut short is redone from scratch at the next start, and a completed one is never redone: an
    init container that runs again (a new sandbox for the same pod) leaves the user's work alone.
    """
    return ["/bin/sh", "-c", _SEED_SCRIPT, "seed-workdir", SEED_MOUNT, workdir]


def jupyter_command(port: int, workdir: str) -> list[str]:
    """The default command: JupyterLab (or what the image has of Jupyter) on the pod's port.

    The options are the aliases JupyterLab, the notebook UI and the bare server all accept. The
    token comes from the JUPYTER_TOKEN environment variable (read by jupyter_server), so it never
    shows in `ps`.
    """
    return [
        "/bin/sh",
        "-c",
        _JUPYTER_SCRIPT,
        "jupyter",
        "--ip=0.0.0.0",
        f"--port={port}",
        "--port-retries=0",
        "--allow-root",
        "--no-browser",
        f"--notebook-dir={workdir}",
    ]


def _resources(config: Config, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Container resources and the node selector from spec.resources, over the configured defaults
    (spec cpu and memory set both the request and the limit)."""
    wanted = spec.get("resources") or {}
    requests: dict[str, str] = dict(config.notebook_requests)
    limits: dict[str, str] = dict(config.notebook_limits)
    for key in ("cpu", "memory"):
        if wanted.get(key) not in (None, ""):
            requests[key] = str(wanted[key])
            limits[key] = str(wanted[key])
    selector: dict[str, str] = {}
    gpu = wanted.get("gpu") or {}
    count = int(gpu.get("count", GPU_COUNT_DEFAULT)) if gpu else 0
    if count > 0:
        limits[config.gpu_resource] = str(count)
        if gpu.get("type"):
            selector[config.gpu_label_key] = str(gpu["type"])
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out, selector


def _env(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    name = notebook["metadata"]["name"]
    env: list[dict[str, Any]] = [
        {
            "name": "JUPYTER_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret_name(name), "key": TOKEN_KEY}},
        },
        {"name": "NBD_NOTEBOOK", "value": name},
    ]
    reserved = {"JUPYTER_TOKEN", "NBD_NOTEBOOK"}
    for item in notebook["spec"].get("env") or []:
        if item["name"] not in reserved:
            env.append({"name": item["name"], "value": str(item.get("value", ""))})
    return env


def gpu_toleration(config: Config) -> dict[str, str]:
    """What a GPU pod tolerates by itself: the taint GKE and EKS put on GPU nodes (`nvidia.com/gpu`,
    any value, NoSchedule), named after the GPU resource so another resource's nodes work alike."""
    return {"key": config.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}


def placement(config: Config, spec: dict[str, Any], gpu_selector: dict[str, str]) -> dict[str, Any]:
    """nodeSelector, tolerations and priorityClassName of a notebook or run pod.

    The cluster's defaults (nbd-config) come first; the spec's nodeSelector keys override the
    default's, and the GPU type's label (spec.resources.gpu.type) overrides both; tolerations are
    the union of the defaults', the spec's and, when GPUs are asked for, the GPU taint's; the spec's
    priorityClassName replaces the default's.
    """
    out: dict[str, Any] = {}
    selector = {**config.default_node_selector, **dict(spec.get("nodeSelector") or {}), **gpu_selector}
    if selector:
        out["nodeSelector"] = selector
    tolerations: list[dict[str, Any]] = []
    wanted = [*config.default_tolerations, *(spec.get("tolerations") or [])]
    if _gpu_count(spec) > 0:
        wanted.append(gpu_toleration(config))
    for toleration in wanted:
        if dict(toleration) not in tolerations:
            tolerations.append(dict(toleration))
    if tolerations:
        out["tolerations"] = tolerations
    priority = spec.get("priorityClassName") or config.default_priority_class
    if priority:
        out["priorityClassName"] = str(priority)
    return out


def pod_spec_hash(pod: dict[str, Any]) -> str:
    """A digest of what the controller wants of the Pod; a Pod whose annotation differs is replaced."""
    wanted = {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": pod["spec"]}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def restrict(pod_spec: dict[str, Any]) -> None:
    """Make a pod spec pass the `restricted` Pod Security level: no privilege escalation, every
    capability dropped, the runtime's default seccomp profile, and a non-root user (the kubelet
    refuses to start an image whose user is root, so the failure names the image)."""
    context = pod_spec.setdefault("securityContext", {})
    context["runAsNonRoot"] = True
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    for key in ("initContainers", "containers"):
        for container in pod_spec.get(key) or []:
            container["securityContext"] = {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }


_BINARY_UNITS = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def _quantity(size: int) -> str:
    """`size` bytes in the largest binary unit that divides it ("4Gi", "1536Mi", "1000")."""
    for unit, scale in _BINARY_UNITS:
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def shm_size(spec: dict[str, Any], resources_: dict[str, Any]) -> str | None:
    """The sizeLimit of /dev/shm: spec.resources.shm, else half the container's memory limit, else
    SHM_DEFAULT; None when spec.resources.shm is 0 (the runtime's own 64 MiB /dev/shm stays).

    A memory-backed emptyDir counts against the container's memory limit, so half of it leaves the
    other half to the processes; DataLoader workers pass batches through /dev/shm."""
    wanted = (spec.get("resources") or {}).get("shm")
    if wanted not in (None, ""):
        return None if parse_size(str(wanted)) == 0 or str(wanted) == SHM_OFF else str(wanted)
    limit = parse_size(str(((resources_.get("limits") or {}).get("memory")) or ""))
    if limit:
        return _quantity(limit // 2)
    return SHM_DEFAULT


def data_volumes(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts) of spec.volumes: existing claims, read-only when asked (the
    volume source too, so nothing in the pod can mount it writable)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for i, wanted in enumerate(spec.get("volumes") or []):
        name = f"{DATA_VOLUME_PREFIX}{i}"
        read_only = bool(wanted.get("readOnly"))
        claim: dict[str, Any] = {"claimName": str(wanted["claim"])}
        mount: dict[str, Any] = {"name": name, "mountPath": str(wanted["mountPath"])}
        if read_only:
            claim["readOnly"] = True
            mount["readOnly"] = True
        volumes.append({"name": name, "persistentVolumeClaim": claim})
        mounts.append(mount)
    return volumes, mounts


def _shm_volume(size: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if size is None:
        return [], []
    return (
        [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}],
        [{"name": SHM_VOLUME, "mountPath": SHM_PATH}],
    )


def workspace_claim(notebook: dict[str, Any]) -> dict[str, Any]:
    """The PersistentVolumeClaim of spec.workspace (ReadWriteOnce: one pod mounts it), owned by the
    Notebook: a suspend or a new pod keeps it, deleting the Notebook deletes it."""
    meta = notebook["metadata"]
    workspace = notebook["spec"]["workspace"]
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": str(workspace["size"])}},
    }
    if workspace.get("storageClass"):
        claim_spec["storageClassName"] = str(workspace["storageClass"])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": workspace_claim_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": _labels(meta["name"], COMPONENT_WORKSPACE),
            "ownerReferences": [owner_reference(notebook)],
        },
        "spec": claim_spec,
    }


def notebook_pod(
    config: Config, notebook: dict[str, Any], image: str, *, restricted: bool = False
) -> dict[str, Any]:
    """The notebook Pod running `image`.

    The workdir volume is an emptyDir, or the workspace claim when spec.workspace is set: the seed
    fills it from the image once (the marker is in the volume's root), so a later pod on the same
    claim keeps what is there. /dev/shm is a memory-backed emptyDir (`shm_size`); spec.volumes
    are mounted in the notebook container only (the seed copies nothing from them)."""
    meta = notebook["metadata"]
    spec = notebook["spec"]
    name = meta["name"]
    port = int(spec.get("port", DEFAULT_PORT))
    workdir = str(spec.get("workdir") or DEFAULT_WORKDIR)
    resources_, selector = _resources(config, spec)
    shm_volumes, shm_mounts = _shm_volume(shm_size(spec, resources_))
    extra_volumes, extra_mounts = data_volumes(spec)
    workdir_source: dict[str, Any] = {"emptyDir": {}}
    if spec.get("workspace"):
        workdir_source = {"persistentVolumeClaim": {"claimName": workspace_claim_name(name)}}
    container: dict[str, Any] = {
        "name": NOTEBOOK_CONTAINER,
        "image": image,
        "command": list(spec["command"]) if spec.get("command") else jupyter_command(port, workdir),
        "workingDir": workdir,
        "env": _env(notebook),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": WORKDIR_VOLUME, "mountPath": workdir, "subPath": WORKDIR_SUBPATH},
            *shm_mounts,
            *extra_mounts,
        ],
        "readinessProbe": {
            "httpGet": {"path": "/api", "port": port},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
    }
    seed: dict[str, Any] = {
        "name": SEED_CONTAINER,
        "image": image,
        "command": seed_script(workdir),
        "workingDir": "/",
        "volumeMounts": [{"name": WORKDIR_VOLUME, "mountPath": SEED_MOUNT}],
    }
    if not spec.get("image"):
        # A forced rebuild pushes the same tag again: a node that pulled it before must look at
        # the registry (a manifest request; layers it has are not downloaded again).
        container["imagePullPolicy"] = "Always"
        seed["imagePullPolicy"] = "Always"
    if resources_:
        container["resources"] = resources_
        # The same cpu and memory keep the pod's QoS class; copying files needs no GPU.
        seed_resources = {
            k: {r: q for r, q in v.items() if r in ("cpu", "memory")} for k, v in resources_.items()
        }
        if any(seed_resources.values()):
            seed["resources"] = {k: v for k, v in seed_resources.items() if v}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "initContainers": [seed],
        "containers": [container],
        "volumes": [{"name": WORKDIR_VOLUME, **workdir_source}, *shm_volumes, *extra_volumes],
    }
    if config.notebook_fs_group is not None:
        # The workspace volume belongs to this group, with group write and setgid folders, and every
        # container of the pod has the group: the seed, Jupyter and the sync agent (exec'd as the
        # image's user) can write /content whatever user the image runs as. OnRootMismatch keeps
        # a large volume from being walked again at every container start.
        pod_spec["securityContext"] = {
            "fsGroup": config.notebook_fs_group,
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    if restricted:
        restrict(pod_spec)
    pod_spec.update(placement(config, spec, selector))
    if config.registry_secret:
        pod_spec["imagePullSecrets"] = [{"name": config.registry_secret}]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name),
            "namespace": meta["namespace"],
            "labels": _labels(name, COMPONENT_NOTEBOOK),
            "annotations": {},
            "ownerReferences": [owner_reference(notebook)],
        },
        "spec": pod_spec,
    }
    pod["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = pod_spec_hash(pod)
    return pod


# --- runs ----------------------------------------------------------------------------------------

# A pod the cluster took away (preemption, eviction, a drain) is replaced and not counted; a
# non-zero exit of the command fails the whole Job at once (every other rank is stopped), so a
# failing script is never run twice. What neither rule classifies (a pod lost with its node, a
# failure before the command ran) counts against RUN_BACKOFF_LIMIT.
RUN_POD_FAILURE_POLICY: dict[str, Any] = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": RUN_CONTAINER, "operator": "NotIn", "values": [0]},
        },
    ]
}
RUN_BACKOFF_LIMIT = 3
# The outputs reader pod lives at most this long (its activeDeadlineSeconds and its sleep).
READER_SECONDS = 3600
# The run's pods mount the outputs claim through this volume.
OUTPUTS_VOLUME = "outputs"


def _run_labels(run_name: str, component: str) -> dict[str, str]:
    return {LABEL_RUN: run_name, LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY}


def _nodes(spec: dict[str, Any]) -> int:
    return int(spec.get("nodes") or RUN_NODES_DEFAULT)


def _outputs(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(spec.get("outputs") or {})


def run_env(config: Config, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The environment of every pod of a run: torchrun's variables (also as the PET_* options a bare
    `torchrun` reads), then the spec's env.

    NODE_RANK is the pod's completion index, read through the downward API from the annotation the
    Job controller puts on an Indexed Job's pods; one node is rank 0 talking to itself.
    """
    meta = run["metadata"]
    spec = run["spec"]
    name = meta["name"]
    nodes = _nodes(spec)
    gpus = _gpu_count(spec)
    if nodes > 1:
        master = rank0_address(name, meta["namespace"], config.cluster_domain)
        rank: dict[str, Any] = {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_COMPLETION_INDEX}']"}
            },
        }
    else:
        master = "127.0.0.1"
        rank = {"name": "NODE_RANK", "value": "0"}
    env: list[dict[str, Any]] = [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(int(spec.get("masterPort") or DEFAULT_MASTER_PORT))},
        {"name": "WORLD_SIZE", "value": str(nodes)},
        rank,
        {"name": "NPROC_PER_NODE", "value": str(gpus if gpus > 0 else 1)},
    ]
    by_name = {e["name"]: e for e in env}
    env += [{**by_name[source], "name": pet} for pet, source in RUN_TORCHRUN_ENV.items()]
    env.append({"name": "NBD_RUN", "value": name})
    reserved = {e["name"] for e in env}
    for item in spec.get("env") or []:
        if item["name"] not in reserved:
            env.append({"name": item["name"], "value": str(item.get("value", ""))})
    return env


def _gpu_count(spec: dict[str, Any]) -> int:
    gpu = (spec.get("resources") or {}).get("gpu") or {}
    return int(gpu.get("count", GPU_COUNT_DEFAULT)) if gpu else 0


def run_job(config: Config, run: dict[str, Any], image: str, *, restricted: bool = False) -> dict[str, Any]:
    """The Job of a Run: one pod (completions 1), or an Indexed Job of `nodes` pods at once.

    /content is the image's own (what the build copied in): a run's pod never restarts
    (restartPolicy Never), so nothing can reset it under the command, and nothing syncs into it.
    Only the outputs claim, mounted at outputs.path, outlives the pod.
    """
    meta = run["metadata"]
    spec = run["spec"]
    name = meta["name"]
    nodes = _nodes(spec)
    workdir = str(spec.get("workdir") or DEFAULT_WORKDIR)
    outputs_path = str(_outputs(spec).get("path") or DEFAULT_OUTPUTS)
    resources_, selector = _resources(config, spec)
    shm_volumes, shm_mounts = _shm_volume(shm_size(spec, resources_))
    extra_volumes, extra_mounts = data_volumes(spec)
    labels = _run_labels(name, COMPONENT_RUN)
    container: dict[str, Any] = {
        "name": RUN_CONTAINER,
        "image": image,
        "command": [str(word) for word in spec["command"]],
        "workingDir": workdir,
        "env": run_env(config, run),
        "volumeMounts": [{"name": OUTPUTS_VOLUME, "mountPath": outputs_path}, *shm_mounts, *extra_mounts],
    }
    if nodes > 1:
        container["ports"] = [
            {"name": "master", "containerPort": int(spec.get("masterPort") or DEFAULT_MASTER_PORT)}
        ]
    if not spec.get("image"):
        container["imagePullPolicy"] = "Always"
    if resources_:
        container["resources"] = resources_
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [
            {"name": OUTPUTS_VOLUME, "persistentVolumeClaim": {"claimName": outputs_claim_name(name)}},
            *shm_volumes,
            *extra_volumes,
        ],
    }
    if nodes > 1:
        # Indexed Job pods get hostname JOB-INDEX; with the headless Service as subdomain, rank 0
        # is JOB-0.SERVICE.NAMESPACE.svc.DOMAIN.
        pod_spec["subdomain"] = run_service_name(name)
    if config.notebook_fs_group is not None:
        # The claim's root is the volume's: fsGroup makes it writable whatever user the image runs as.
        pod_spec["securityContext"] = {
            "fsGroup": config.notebook_fs_group,
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    if restricted:
        restrict(pod_spec)
    pod_spec.update(placement(config, spec, selector))
    if config.registry_secret:
        pod_spec["imagePullSecrets"] = [{"name": config.registry_secret}]
    job_spec: dict[str, Any] = {
        "backoffLimit": RUN_BACKOFF_LIMIT,
        "podFailurePolicy": RUN_POD_FAILURE_POLICY,
        "completions": nodes,
        "parallelism": nodes,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.get("ttlSecondsAfterFinished") is not None:
        job_spec["ttlSecondsAfterFinished"] = int(spec["ttlSecondsAfterFinished"])
    if spec.get("activeDeadlineSeconds") is not None:
        job_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run_job_name(name),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {ANNOTATION_IMAGE: image},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": job_spec,
    }


def run_service(run: dict[str, Any]) -> dict[str, Any]:
    """The headless Service that gives a multi-node run's pods their DNS names.

    publishNotReadyAddresses: the ranks look each other up before any is ready (they have no
    readiness probe, and a rendezvous happens before the training loop)."""
    meta = run["metadata"]
    name = meta["name"]
    port = int(run["spec"].get("masterPort") or DEFAULT_MASTER_PORT)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": run_service_name(name),
            "namespace": meta["namespace"],
            "labels": _run_labels(name, COMPONENT_RUN),
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_RUN: name, LABEL_COMPONENT: COMPONENT_RUN},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "master", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def outputs_claim(config: Config, run: dict[str, Any]) -> dict[str, Any]:
    """The PersistentVolumeClaim of a run's outputs: ReadWriteOnce for one node, ReadWriteMany for
    more (every rank mounts it), owned by the Run so that it goes with it."""
    meta = run["metadata"]
    spec = run["spec"]
    name = meta["name"]
    outputs = _outputs(spec)
    many = _nodes(spec) > 1
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany" if many else "ReadWriteOnce"],
        "resources": {"requests": {"storage": str(outputs.get("size") or DEFAULT_OUTPUTS_SIZE)}},
    }
    storage_class = outputs.get("storageClass") or (
        config.outputs_rwx_storage_class if many else config.outputs_storage_class
    )
    if storage_class:
        claim_spec["storageClassName"] = str(storage_class)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": outputs_claim_name(name),
            "namespace": meta["namespace"],
            "labels": _run_labels(name, COMPONENT_OUTPUTS),
            "ownerReferences": [owner_reference(run)],
        },
        "spec": claim_spec,
    }


def outputs_reader_pod(config: Config, run: dict[str, Any], request_id: str) -> dict[str, Any]:
    """A pod that mounts a run's outputs claim read-only at outputs.path, for the daemon to exec
    into and copy files out of with its sync agent.

    It runs the utility image (python3, which the agent needs, whatever the run's image holds) and
    only sleeps; it ends by itself after READER_SECONDS (activeDeadlineSeconds)."""
    meta = run["metadata"]
    name = meta["name"]
    path = str(_outputs(run["spec"]).get("path") or DEFAULT_OUTPUTS)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": outputs_reader_name(name),
            "namespace": meta["namespace"],
            "labels": _run_labels(name, COMPONENT_OUTPUTS),
            "annotations": {ANNOTATION_FETCH_REQUEST: request_id},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": READER_SECONDS,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            # A ReadWriteOnce claim in use mounts only on its pod's node: go there if a rank runs.
            "affinity": {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {
                                    "matchLabels": {LABEL_RUN: name, LABEL_COMPONENT: COMPONENT_RUN}
                                },
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }
                    ]
                }
            },
            "containers": [
                {
                    "name": "reader",
                    "image": config.utility_image,
                    "command": ["sleep", str(READER_SECONDS)],
                    "workingDir": path,
                    "volumeMounts": [{"name": OUTPUTS_VOLUME, "mountPath": path, "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": OUTPUTS_VOLUME,
                    "persistentVolumeClaim": {"claimName": outputs_claim_name(name), "readOnly": True},
                }
            ],
        },
    }
