"""Runs as the daemon sees them: the Run it writes, the run it reads back, and what it streams.

Pure: no I/O, no asyncio. A run lives in the cluster (the `Run` resource the controller
reconciles); the daemon keeps nothing about it, so everything here is computed from the Run object
as the API server returns it.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

from nbd.errors import InvalidArgument
from nbd.launch.spec import LOCAL_DIRECTORY_ANNOTATION, WRITTEN_BY_ANNOTATION, notebook_name_for
from nbd.runstate import Rank, RunInfo, RunPhase
from nbdcontract import (
    API_VERSION,
    DEFAULT_OUTPUTS,
    LABEL_MANAGED_BY,
    MANAGED_BY_DAEMON,
    RUN_KIND,
    RUN_NAME_MAX,
    RUN_NODES_MAX,
    RUN_PHASES_FINISHED,
    valid_run_name,
    valid_run_nodes,
)

__all__ = [
    "rank_prefix",
    "run_info",
    "run_manifest",
    "run_name_for",
    "validate_run",
]

# The suffix that makes each run of a directory a new Run: 5 characters of [a-z0-9].
SUFFIX_LENGTH = 5
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


# The controller's phases (nbdcontract.RUN_PHASES) as the API's.
_PHASES = {
    "Pending": RunPhase.PENDING,
    "Uploading": RunPhase.UPLOADING,
    "Building": RunPhase.BUILDING,
    "Starting": RunPhase.STARTING,
    "Running": RunPhase.RUNNING,
    "Succeeded": RunPhase.SUCCEEDED,
    "Failed": RunPhase.FAILED,
    "Stopped": RunPhase.STOPPED,
}
assert set(RUN_PHASES_FINISHED) <= set(_PHASES)


def run_name_for(directory_name: str, suffix: str | None = None) -> str:
    """A new run's name: the directory's name made DNS-safe, then `-` and a random suffix."""
    suffix = (
        suffix
        if suffix is not None
        else "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    )
    base = notebook_name_for(directory_name)
    if not base[:1].isalpha():
        base = f"run-{base}"  # a Run's name starts with a letter (it is a Service's too)
    base = base[: RUN_NAME_MAX - len(suffix) - 1].rstrip("-")
    return f"{base}-{suffix}"


def validate_run(name: str, command: list[str], nodes: int) -> None:
    """The request's own rules, checked before anything is packaged."""
    if not command or not command[0]:
        raise InvalidArgument(
            "no command to run; put it after `--`, e.g. `nbctl run -- python train.py`", reason="NoCommand"
        )
    if not valid_run_nodes(nodes):
        raise InvalidArgument(
            f"--nodes {nodes} is out of range; give 1 to {RUN_NODES_MAX} nodes", reason="BadNodes"
        )
    if not valid_run_name(name):
        raise InvalidArgument(
            f"run name {name!r} is not valid: use at most {RUN_NAME_MAX} lowercase letters, digits and "
            "'-', starting with a letter and ending with a letter or digit",
            reason="BadRunName",
        )


# Fields of notebook.yaml that only a notebook has: its server's command and port, its idle stop, its
# workspace volume and its sync (a run's /content is its image's, its outputs are on their own claim).
NOTEBOOK_ONLY = ("command", "port", "idle", "workspace", "sync")


def run_manifest(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    command: list[str],
    nodes: int,
    *,
    ttl_seconds_after_finished: int | None = None,
    directory: str = "",
    written_by: str = "",
) -> dict[str, Any]:
    """The Run the daemon applies: the notebook spec's image, resources, env and workdir, and the
    run's own command and nodes (a notebook's `command` and `port` are the notebook server's)."""
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
    body = {k: v for k, v in spec.items() if k not in NOTEBOOK_ONLY}
    body["command"] = list(command)
    body["nodes"] = nodes
    if ttl_seconds_after_finished is not None:
        body["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return {"apiVersion": API_VERSION, "kind": RUN_KIND, "metadata": metadata, "spec": body}


def rank_prefix(rank: int, nodes: int) -> str:
    """What a line of a rank's log starts with: `[rank i] ` when the run has several nodes."""
    return f"[rank {rank}] " if nodes > 1 else ""


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return {}


_BUILD_REF = re.compile(r"^[0-9a-f]{32}$")


def run_info(obj: dict[str, Any], context: str = "") -> RunInfo:
    """The run as the API reports it, from the Run object (spec and status)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    gpu = (spec.get("resources") or {}).get("gpu") or {}
    gpus = _int(gpu.get("count"))
    phase = _PHASES.get(str(status.get("phase") or ""), RunPhase.PENDING)
    finished_cond = _condition(status, "Finished")
    reason = str(status.get("reason") or finished_cond.get("reason") or "")
    message = str(status.get("message") or finished_cond.get("message") or "")
    upload = (spec.get("build") or {}).get("upload") or {}
    md5 = str(upload.get("md5") or "")
    ranks = tuple(
        sorted(
            (
                Rank(
                    index=_int(r.get("index")) or 0,
                    pod=str(r.get("pod") or ""),
                    phase=str(r.get("phase") or ""),
                    exit_code=_int(r.get("exitCode")),
                )
                for r in status.get("ranks") or []
                if isinstance(r, dict)
            ),
            key=lambda r: r.index,
        )
    )
    return RunInfo(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        context=context,
        phase=phase,
        reason=reason,
        message=message,
        command=tuple(str(c) for c in spec.get("command") or []),
        nodes=_int(spec.get("nodes")) or 1,
        gpus_per_node=(1 if gpus is None else gpus) if gpu else 0,
        gpu_type=str(gpu.get("type") or ""),
        image=str(status.get("image") or spec.get("image") or ""),
        context_md5=md5 if _BUILD_REF.match(md5) else "",
        created=_time(meta.get("creationTimestamp")),
        started=_time(status.get("startTime")),
        finished=_time(status.get("completionTime")),
        exit_code=_int(status.get("exitCode")),
        failed_rank=_int(status.get("failedRank")),
        ranks=ranks,
        outputs_path=str((spec.get("outputs") or {}).get("path") or DEFAULT_OUTPUTS),
        directory=str((meta.get("annotations") or {}).get(LOCAL_DIRECTORY_ANNOTATION) or ""),
        job=str(status.get("job") or ""),
        uid=str(meta.get("uid") or ""),
        generation=_int(meta.get("generation")) or 0,
        observed_generation=_int(status.get("observedGeneration")) or 0,
    )
