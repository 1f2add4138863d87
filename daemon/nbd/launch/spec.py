"""What a launch asks for: the notebook's name, its spec and its Notebook manifest.

Pure functions only: the directory name, the optional `notebook.yaml` (already read into text) and
the command-line overrides go in; a validated spec and the Notebook object to apply come out. The
orchestrator does the I/O. Keeping this pure lets every rule (DNS-safe names, which layer wins, what
a bad file says) be tested by table.

The rules themselves (names, env names, GPU bounds, ports) are the Notebook contract's (`nbdcontract`),
the very ones the CRD makes the API server enforce: a spec refused here is refused before anything
is packaged or uploaded, and a spec accepted here is never refused by the cluster for its shape.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from nbd.errors import InvalidArgument
from nbd.session import DEFAULT_SYNC_MAX_FILE_SIZE, NotebookSpec
from nbdcontract import ANNOTATION_LOCAL_DIRECTORY as LOCAL_DIRECTORY_ANNOTATION

# Re-exported: the launch modules take the spec's defaults and the directory annotation from here.
from nbdcontract import ANNOTATION_WRITTEN_BY as WRITTEN_BY_ANNOTATION
from nbdcontract import (
    API_VERSION,
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    DNS_LABEL_MAX,
    ENV_NAME_MAX,
    GPU_COUNT_MAX,
    GPU_TYPE_MAX,
    KIND,
    LABEL_MANAGED_BY,
    MANAGED_BY_DAEMON,
    PORT_MAX,
    PORT_MIN,
    duration_seconds,
    human_duration,
    label_key_problem,
    label_value_problem,
    priority_class_problem,
    size_problem,
    storage_class_problem,
    toleration_problem,
    valid_env_name,
    valid_gpu_count,
    valid_gpu_type,
    valid_notebook_name,
    valid_port,
    valid_workdir,
    volumes_problem,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_WORKDIR",
    "FIELD_MANAGER",
    "LOCAL_DIRECTORY_ANNOTATION",
    "LOCAL_ONLY_FIELDS",
    "WRITTEN_BY_ANNOTATION",
    "NotebookFileError",
    "merge_spec",
    "notebook_manifest",
    "notebook_name_for",
    "parse_notebook_file",
    "sync_max_file_size",
    "validate_name",
]

_SPEC_KEYS = {
    "image",
    "resources",
    "env",
    "command",
    "workdir",
    "port",
    "tolerations",
    "nodeSelector",
    "priorityClassName",
    "workspace",
    "volumes",
    "idle",
    "sync",
}
_RESOURCE_KEYS = {"gpu", "cpu", "memory", "shm"}
_WORKSPACE_KEYS = {"size", "storageClass"}
_IDLE_KEYS = {"stopAfter"}
# Spec fields only the daemon reads (how the local directory syncs): never sent to the cluster.
LOCAL_ONLY_FIELDS = frozenset({"sync"})
_SYNC_KEYS = {"maxFileSize"}
_BYTES = re.compile(r"([0-9]+(?:\.[0-9]+)?)(k|M|G|T|Ki|Mi|Gi|Ti)?")
_BYTE_SUFFIX = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_GPU_KEYS = {"count", "type"}


class NotebookFileError(InvalidArgument):
    """notebook.yaml (or the -f file) is not a valid Notebook spec."""

    default_reason = "InvalidNotebookFile"


def notebook_name_for(directory_name: str) -> str:
    """Make a DNS-1123 label from a directory's name ("My Project_2" -> "my-project-2").

    The result is non-empty, at most 63 characters, lowercase alphanumerics and '-', and starts and
    ends with an alphanumeric, which is what Kubernetes accepts as an object name.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", directory_name.strip().lower())
    name = re.sub(r"-{2,}", "-", name).strip("-")
    name = name[:DNS_LABEL_MAX].strip("-")
    return name or "notebook"


def validate_name(name: str) -> str:
    """Check an explicit notebook name; return it unchanged or raise a clear error."""
    if not valid_notebook_name(name):
        raise InvalidArgument(
            f"invalid notebook name {name!r}: use at most {DNS_LABEL_MAX} lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def parse_notebook_file(text: str, source: str) -> dict[str, Any]:
    """Parse a notebook.yaml into a Notebook spec dict.

    The file may be a bare spec (`resources:`, `env:`, ...) or a whole Notebook manifest
    (`apiVersion: nbd.dev/v1alpha1`, `kind: Notebook`, `spec:`); either way the spec is returned,
    validated, with env normalised to a list of {name, value}.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NotebookFileError(f"{source} is not valid YAML: {_one_line(str(e))}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise NotebookFileError(
            f"{source} must be a mapping of Notebook spec fields, not {type(doc).__name__}"
        )
    if "kind" in doc or "apiVersion" in doc:
        if doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
            raise NotebookFileError(
                f"{source} describes {doc.get('apiVersion')}/{doc.get('kind')}; "
                f"expected apiVersion {API_VERSION} and kind {KIND}, or a bare spec"
            )
        spec = doc.get("spec") or {}
        if not isinstance(spec, dict):
            raise NotebookFileError(f"{source}: spec must be a mapping")
    else:
        spec = doc
    return _validate_spec(spec, source)


def _validate_spec(spec: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise NotebookFileError(
            f"{source}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SPEC_KEYS))}"
        )
    out: dict[str, Any] = {}
    if "image" in spec and spec["image"] is not None:
        out["image"] = _string(spec["image"], f"{source}: image")
    if "workdir" in spec and spec["workdir"] is not None:
        workdir = _string(spec["workdir"], f"{source}: workdir")
        if not valid_workdir(workdir):
            raise NotebookFileError(f"{source}: workdir must be an absolute path, got {workdir!r}")
        out["workdir"] = workdir
    if "port" in spec and spec["port"] is not None:
        out["port"] = _port(spec["port"], f"{source}: port")
    if "command" in spec and spec["command"] is not None:
        command = spec["command"]
        if isinstance(command, str):
            command = ["sh", "-c", command]
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command) or not command:
            raise NotebookFileError(f"{source}: command must be a non-empty list of strings (or one string)")
        out["command"] = list(command)
    if "env" in spec and spec["env"] is not None:
        out["env"] = _env(spec["env"], source)
    if "resources" in spec and spec["resources"] is not None:
        out["resources"] = _resources(spec["resources"], source)
    out.update(_placement(spec, source))
    if spec.get("workspace") is not None:
        out["workspace"] = _workspace(spec["workspace"], source)
    if spec.get("volumes") is not None:
        problem = volumes_problem(spec["volumes"], out.get("workdir") or DEFAULT_WORKDIR)
        if problem is not None:
            raise NotebookFileError(f"{source}: {problem}")
        out["volumes"] = [
            {"claim": v["claim"], "mountPath": v["mountPath"], "readOnly": bool(v.get("readOnly"))}
            for v in spec["volumes"]
        ]
    if "idle" in spec and spec["idle"] is not None:
        out["idle"] = _idle(spec["idle"], source)
    if "sync" in spec and spec["sync"] is not None:
        out["sync"] = _sync(spec["sync"], source)
    return out


def _workspace(value: Any, source: str) -> dict[str, str]:
    """spec.workspace: {size, storageClass}; a bare size ("50Gi") is accepted as the size."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = {"size": value}
    if not isinstance(value, dict) or set(value) - _WORKSPACE_KEYS:
        raise NotebookFileError(f"{source}: workspace must be a mapping with size and storageClass")
    if value.get("size") is None:
        raise NotebookFileError(f"{source}: workspace.size is required (e.g. size: 50Gi)")
    return _workspace_fields(str(value["size"]), value.get("storageClass"), f"{source}: workspace")


def _workspace_fields(size: str, storage_class: Any, what: str) -> dict[str, str]:
    problem = size_problem(size, f"{what}.size", zero=False)
    if problem is not None:
        raise NotebookFileError(problem)
    out = {"size": size}
    if storage_class is not None:
        problem = storage_class_problem(storage_class)
        if problem is not None:
            raise NotebookFileError(f"{what}: {problem}")
        out["storageClass"] = str(storage_class)
    return out


def _shm(value: Any, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    problem = size_problem(value, what)
    if problem is not None:
        raise NotebookFileError(f"{problem} (0 leaves the runtime's 64Mi)")
    return str(value)


def _sync(value: Any, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NotebookFileError(f"{source}: sync must be a mapping, for example sync: {{maxFileSize: 100Mi}}")
    unknown = sorted(set(value) - _SYNC_KEYS)
    if unknown:
        raise NotebookFileError(
            f"{source}: unknown sync field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SYNC_KEYS))}"
        )
    out: dict[str, Any] = {}
    if value.get("maxFileSize") is not None:
        out["maxFileSize"] = _byte_size(value["maxFileSize"], f"{source}: sync.maxFileSize")
    return out


def _byte_size(value: Any, what: str) -> int:
    """Bytes from a number or a Kubernetes quantity ("100Mi", "2G"); whole bytes, at least 0."""
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _BYTES.fullmatch(value.strip())
        if match is not None:
            size = float(match.group(1)) * _BYTE_SUFFIX[match.group(2) or ""]
    if size is None or size < 0 or size != int(size):
        raise NotebookFileError(
            f"{what} must be a size in bytes or a quantity like 100Mi or 2Gi (0: no limit), got {value!r}"
        )
    return int(size)


def sync_max_file_size(spec: dict[str, Any]) -> int:
    """The sync's size limit in bytes for a validated spec (0: no limit)."""
    size = (spec.get("sync") or {}).get("maxFileSize")
    return DEFAULT_SYNC_MAX_FILE_SIZE if size is None else int(size)


def _idle(value: Any, source: str) -> dict[str, Any]:
    """idle: {stopAfter: 2h}: suspend the notebook after that long idle ("0": never)."""
    if not isinstance(value, dict):
        raise NotebookFileError(f"{source}: idle must be a mapping, e.g. idle: {{stopAfter: 2h}}")
    unknown = sorted(set(value) - _IDLE_KEYS)
    if unknown:
        raise NotebookFileError(
            f"{source}: unknown idle field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(_IDLE_KEYS))}"
        )
    out: dict[str, Any] = {}
    if value.get("stopAfter") is not None:
        out["stopAfter"] = idle_stop_after(value["stopAfter"], f"{source}: idle.stopAfter")
    return out


def idle_stop_after(value: Any, what: str) -> str:
    """A checked idle duration in the form the CRD takes ("2h", "1h30m", "0")."""
    try:
        seconds = duration_seconds(value)
    except ValueError as e:
        raise NotebookFileError(f"{what}: {e}") from None
    return human_duration(seconds) if seconds % 60 == 0 or seconds < 3600 else f"{seconds}s"


def _placement(spec: dict[str, Any], source: str) -> dict[str, Any]:
    """tolerations, nodeSelector and priorityClassName, checked with the API server's rules."""
    out: dict[str, Any] = {}
    tolerations = spec.get("tolerations")
    if tolerations is not None:
        if not isinstance(tolerations, list):
            raise NotebookFileError(
                f"{source}: tolerations must be a list of {{key, operator, value, effect}} mappings"
            )
        for i, toleration in enumerate(tolerations):
            problem = toleration_problem(toleration)
            if problem is not None:
                raise NotebookFileError(f"{source}: tolerations[{i}]: {problem}")
        out["tolerations"] = [{k: v for k, v in t.items() if v is not None and v != ""} for t in tolerations]
    selector = spec.get("nodeSelector")
    if selector is not None:
        if not isinstance(selector, dict):
            raise NotebookFileError(f"{source}: nodeSelector must be a mapping of node label keys to values")
        for key, value in selector.items():
            problem = label_key_problem(key)
            if problem is None and not isinstance(value, str):
                problem = f"the value of {key} must be a string (quote it), got {value!r}"
            if problem is None:
                problem = label_value_problem(value)
            if problem is not None:
                raise NotebookFileError(f"{source}: nodeSelector: {problem}")
        out["nodeSelector"] = dict(selector)
    priority = spec.get("priorityClassName")
    if priority is not None:
        problem = priority_class_problem(priority)
        if problem is not None:
            raise NotebookFileError(f"{source}: priorityClassName: {problem}")
        out["priorityClassName"] = priority
    return out


def _resources(value: Any, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NotebookFileError(f"{source}: resources must be a mapping with gpu, cpu, memory")
    unknown = sorted(set(value) - _RESOURCE_KEYS)
    if unknown:
        raise NotebookFileError(
            f"{source}: unknown resources field(s) {', '.join(unknown)}; allowed: cpu, gpu, memory, shm"
        )
    out: dict[str, Any] = {}
    for key in ("cpu", "memory"):
        if value.get(key) is not None:
            out[key] = str(value[key])
    if value.get("shm") is not None:
        out["shm"] = _shm(value["shm"], f"{source}: resources.shm")
    gpu = value.get("gpu")
    if gpu is not None:
        if isinstance(gpu, int) and not isinstance(gpu, bool):
            gpu = {"count": gpu}
        if not isinstance(gpu, dict) or set(gpu) - _GPU_KEYS:
            raise NotebookFileError(
                f"{source}: resources.gpu must be a number or a mapping with count and type"
            )
        g: dict[str, Any] = {}
        if gpu.get("count") is not None:
            g["count"] = _gpu_count(gpu["count"], f"{source}: resources.gpu.count")
        if gpu.get("type"):
            what = f"{source}: resources.gpu.type"
            g["type"] = _gpu_type(_string(gpu["type"], what), what)
        out["gpu"] = g
    return out


def _env(value: Any, source: str) -> list[dict[str, str]]:
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, dict) or "name" not in item:
                raise NotebookFileError(f"{source}: env entries must be {{name: ..., value: ...}}")
            pairs.append((item["name"], item.get("value", "")))
    else:
        raise NotebookFileError(f"{source}: env must be a mapping or a list of {{name, value}}")
    out = []
    for name, val in pairs:
        if not isinstance(name, str) or not valid_env_name(name):
            raise NotebookFileError(f"{source}: {_env_name_problem(name)}")
        out.append({"name": name, "value": "" if val is None else str(val)})
    return out


def merge_spec(file_spec: dict[str, Any], overrides: NotebookSpec) -> dict[str, Any]:
    """Layer command-line overrides over the file's spec (flags win, env merges by name).

    `overrides` holds only what the client gave: empty / None fields are "not given".
    """
    spec: dict[str, Any] = {k: v for k, v in file_spec.items()}
    if overrides.image:
        spec["image"] = overrides.image
    if overrides.workdir:
        if not valid_workdir(overrides.workdir):
            raise InvalidArgument(f"workdir must be an absolute path, got {overrides.workdir!r}")
        spec["workdir"] = overrides.workdir
    if overrides.port is not None:
        spec["port"] = _port(overrides.port, "port")
    if overrides.command:
        spec["command"] = list(overrides.command)
    if overrides.idle_stop_after:
        spec["idle"] = {
            **(spec.get("idle") or {}),
            "stopAfter": idle_stop_after(overrides.idle_stop_after, "--idle-stop"),
        }
    resources = dict(spec.get("resources") or {})
    if overrides.cpu:
        resources["cpu"] = overrides.cpu
    if overrides.memory:
        resources["memory"] = overrides.memory
    if overrides.shm:
        resources["shm"] = _shm(overrides.shm, "--shm")
    if overrides.gpu_count is not None or overrides.gpu_type:
        gpu = dict(resources.get("gpu") or {})
        if overrides.gpu_count is not None:
            gpu["count"] = _gpu_count(overrides.gpu_count, "--gpus")
        if overrides.gpu_type:
            gpu["type"] = _gpu_type(overrides.gpu_type, "--gpu-type")
        resources["gpu"] = gpu
    if resources:
        spec["resources"] = resources
    if overrides.workspace_storage_class and not (overrides.workspace_size or spec.get("workspace")):
        raise InvalidArgument(
            "--workspace-storage-class needs a workspace: pass --workspace-size too (e.g. 50Gi)"
        )
    if overrides.workspace_size or overrides.workspace_storage_class:
        workspace = dict(spec.get("workspace") or {})
        spec["workspace"] = _workspace_fields(
            overrides.workspace_size or str(workspace["size"]),
            overrides.workspace_storage_class or workspace.get("storageClass"),
            "--workspace",
        )
    if "volumes" in spec:
        problem = volumes_problem(spec["volumes"], str(spec.get("workdir") or DEFAULT_WORKDIR))
        if problem is not None:
            raise InvalidArgument(problem)
    if overrides.env:
        env = {e["name"]: e["value"] for e in spec.get("env") or []}
        for name, value in overrides.env.items():
            if not valid_env_name(name):
                raise InvalidArgument(_env_name_problem(name))
            env[name] = value
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return spec


def session_spec(spec: dict[str, Any]) -> NotebookSpec:
    """What a session records of a merged (validated) spec: the notebook's shape, defaults filled in."""
    resources = spec.get("resources") or {}
    gpu = resources.get("gpu") or {}
    return NotebookSpec(
        image=str(spec.get("image") or ""),
        gpu_count=gpu.get("count"),
        gpu_type=str(gpu.get("type") or ""),
        cpu=str(resources.get("cpu") or ""),
        memory=str(resources.get("memory") or ""),
        env={e["name"]: e["value"] for e in spec.get("env") or []},
        command=tuple(spec.get("command") or ()),
        workdir=str(spec.get("workdir") or DEFAULT_WORKDIR),
        port=int(spec.get("port") or DEFAULT_PORT),
        workspace_size=str((spec.get("workspace") or {}).get("size") or ""),
        workspace_storage_class=str((spec.get("workspace") or {}).get("storageClass") or ""),
        shm=str(resources.get("shm") or ""),
        idle_stop_after=str((spec.get("idle") or {}).get("stopAfter") or ""),
    )


# The field manager of every write the daemon makes to a Notebook (server-side apply and patches).
FIELD_MANAGER = "nbd"


def notebook_manifest(
    name: str, namespace: str, spec: dict[str, Any], *, directory: str = "", written_by: str = ""
) -> dict[str, Any]:
    """The Notebook object the daemon applies (server-side apply) for a launch.

    `written_by` is the applying daemon's identity (see `WRITTEN_BY_ANNOTATION`).
    """
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {LABEL_MANAGED_BY: MANAGED_BY_DAEMON},
    }
    annotations = {}
    if directory:
        annotations[LOCAL_DIRECTORY_ANNOTATION] = directory
    if written_by:
        annotations[WRITTEN_BY_ANNOTATION] = written_by
    if annotations:
        metadata["annotations"] = annotations
    full = {k: v for k, v in spec.items() if k not in LOCAL_ONLY_FIELDS}
    full["suspend"] = False
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": full}


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise NotebookFileError(f"{what} must be a non-empty string")
    return value


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not valid_port(value):
        raise NotebookFileError(
            f"{what} must be a port number between {PORT_MIN} and {PORT_MAX}, got {value!r}"
        )
    return int(value)


def _gpu_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not valid_gpu_count(value):
        raise NotebookFileError(f"{what} must be a whole number ≥ 0 and ≤ {GPU_COUNT_MAX}, got {value!r}")
    return int(value)


def _gpu_type(value: str, what: str) -> str:
    if not valid_gpu_type(value):
        raise NotebookFileError(f"{what} must be at most {GPU_TYPE_MAX} characters, got {len(value)}")
    return value


def _env_name_problem(name: Any) -> str:
    return (
        f"invalid environment variable name {name!r}: use letters, digits and '_' "
        f"(at most {ENV_NAME_MAX}), not starting with a digit"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
