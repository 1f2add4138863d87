"""Idle auto-stop: when a Ready notebook has been idle for spec.idle.stopAfter, suspend it.

The controller decides, so it works while the laptop is closed and no daemon runs. A notebook is
busy (never idle) while any kernel's `execution_state` is "busy" or "starting", however long ago a
browser last looked: a long training cell is never stopped. Otherwise its last activity is the
newest of:

- Jupyter's own view (`/api/status` `last_activity`, which covers API requests, kernels and
  terminals, and each kernel's and terminal's `last_activity`), asked through the API server's
  `pods/proxy` with `no_track_activity`, so that asking is not itself activity;
- the daemon's `nbd.dev/activity` annotation, refreshed while a connection through its forward is
  open or the sync moves files (what Jupyter cannot see);
- the moment the pod became Ready (a notebook that just started or resumed has its full time).

When Jupyter cannot be asked (it does not answer, the pod runs a command that is not Jupyter), the
notebook is never stopped for idleness, and status.idle says why. `decide_idle` is pure; the
reconciler does the asking (`probe`) at most every `Config.idle_check_seconds` per notebook.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nbdcontract import ANNOTATION_ACTIVITY, DEFAULT_PORT, TOKEN_KEY, duration_seconds, human_duration

from .conditions import rfc3339

__all__ = [
    "JupyterActivity",
    "IdleObserved",
    "IdleVerdict",
    "decide_idle",
    "stop_after",
    "parse_activity",
    "ready_since",
    "BUSY_STATES",
]

# Kernel execution states that mean "working": starting covers a kernel that is being (re)started.
BUSY_STATES = ("busy", "starting")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class JupyterActivity:
    """What Jupyter said of itself; `error` is why it could not be asked ("" when it answered)."""

    last_activity: datetime | None = None
    kernels: tuple[tuple[str, datetime | None], ...] = ()  # (execution_state, last_activity)
    terminals: tuple[datetime | None, ...] = ()
    error: str = ""


def parse_activity(status: Any, kernels: Any, terminals: Any) -> JupyterActivity:
    """The answers of /api/status, /api/kernels and /api/terminals (decoded JSON) as activity."""
    if not isinstance(status, dict) or not isinstance(kernels, list):
        return JupyterActivity(error="Jupyter's API answered something that is not its status")
    return JupyterActivity(
        last_activity=_time(status.get("last_activity")),
        kernels=tuple(
            (str(k.get("execution_state") or ""), _time(k.get("last_activity")))
            for k in kernels
            if isinstance(k, dict)
        ),
        terminals=tuple(_time(t.get("last_activity")) for t in terminals or [] if isinstance(t, dict)),
    )


@dataclass(frozen=True)
class IdleObserved:
    stop_after: int  # seconds; 0: off
    jupyter: JupyterActivity | None  # None: not asked (the pod is not Ready)
    nbd_activity: datetime | None = None
    ready_since: datetime | None = None


@dataclass(frozen=True)
class IdleVerdict:
    status: dict[str, Any]  # status.idle ({} when off)
    stop: bool = False
    idle_seconds: int = 0


def stop_after(spec: dict[str, Any], default: int) -> int:
    """Seconds of spec.idle.stopAfter, else the cluster's default (an unreadable value: off)."""
    raw = (spec.get("idle") or {}).get("stopAfter")
    if raw is None or raw == "":
        return default
    try:
        return duration_seconds(raw)
    except ValueError:
        return 0


def ready_since(pod: dict[str, Any] | None) -> datetime | None:
    """When the pod's Ready condition last became True."""
    for condition in ((pod or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return _time(condition.get("lastTransitionTime"))
    return None


def nbd_activity(notebook: dict[str, Any]) -> datetime | None:
    return _time(((notebook.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ACTIVITY))


def _clock(t: datetime) -> str:
    return t.strftime("%H:%M UTC")


def decide_idle(now: datetime, observed: IdleObserved) -> IdleVerdict:
    """status.idle of a Ready notebook, and whether to stop it now."""
    if observed.stop_after <= 0:
        return IdleVerdict({})
    after = human_duration(observed.stop_after)
    status: dict[str, Any] = {"stopAfter": after}
    jupyter = observed.jupyter
    if jupyter is None:
        return IdleVerdict(status)
    if jupyter.error:
        status["message"] = f"Cannot tell whether the notebook is idle ({jupyter.error}); it is not stopped."
        return IdleVerdict(status)
    busy = sum(1 for state, _ in jupyter.kernels if state in BUSY_STATES)
    if busy:
        status["busy"] = True
        status["message"] = (
            f"{'A kernel is' if busy == 1 else f'{busy} kernels are'} running; a busy notebook is never "
            f"stopped. It stops after {after} idle."
        )
        return IdleVerdict(status)
    times = [
        jupyter.last_activity,
        *(t for _, t in jupyter.kernels),
        *jupyter.terminals,
        observed.nbd_activity,
        observed.ready_since,
    ]
    known = [t for t in times if t is not None]
    last = max(known) if known else now
    last = min(last, now).replace(microsecond=0)
    stop_at = last + timedelta(seconds=observed.stop_after)
    status["lastActivity"] = rfc3339(last)
    status["stopAt"] = rfc3339(stop_at)
    idle = int((now - last).total_seconds())
    if now >= stop_at:
        status["message"] = f"Stopped after {human_duration(idle)} idle (last activity {_clock(last)})."
        return IdleVerdict(status, stop=True, idle_seconds=idle)
    status["message"] = f"Idle since {_clock(last)}; stops at {_clock(stop_at)} unless it is used."
    return IdleVerdict(status)


# --- asking Jupyter through the API server ------------------------------------------------------

PROBE_TIMEOUT = 5.0


def token_of(secret: dict[str, Any] | None) -> str | None:
    data = (secret or {}).get("data") or {}
    raw = data.get(TOKEN_KEY)
    if not raw:
        return None
    try:
        return base64.b64decode(raw).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def probe_paths(pod_name: str, namespace: str, port: int | None) -> dict[str, str]:
    """The pods/proxy paths of the three Jupyter endpoints."""
    base = f"/api/v1/namespaces/{namespace}/pods/{pod_name}:{port or DEFAULT_PORT}/proxy"
    return {name: f"{base}/api/{name}" for name in ("status", "kernels", "terminals")}


def decode(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"Jupyter's /api/{what} did not answer JSON") from None
