"""Server-side printing: `meta.k8s.io/v1 Table` answers for `kubectl get`.

kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints the cells it gets.
Built-in kinds get the columns the real server prints (pods: NAME READY STATUS RESTARTS AGE, ...),
custom resources their CRD's additionalPrinterColumns (or NAME + AGE). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from kubesim.resources import PrinterColumn, ResourceInfo

__all__ = ["table", "human_age", "jsonpath"]


def _parse_time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return float(time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone)
    except ValueError:
        return None


def human_age(ts: str | None, now: float | None = None) -> str:
    """`5s`, `3m2s`, `4h`, `2d3h` as kubectl's duration.HumanDuration prints them."""
    t = _parse_time(ts)
    if t is None:
        return "<unknown>"
    s = int((now if now is not None else time.time()) - t)
    if s < 0:
        s = 0
    if s < 60 * 2:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 60 * 3:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-/]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset used in printer columns: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for c in current:
            if m.group(1) is not None:
                if isinstance(c, dict) and m.group(1) in c:
                    nxt.append(c[m.group(1)])
            elif m.group(2) is not None:
                if isinstance(c, list):
                    if m.group(2) == "*":
                        nxt.extend(c)
                    elif int(m.group(2)) < len(c):
                        nxt.append(c[int(m.group(2))])
            else:
                if isinstance(c, list):
                    for item in c:
                        if isinstance(item, dict) and str(_get(item, m.group(3))) == m.group(4):
                            nxt.append(item)
        current = nxt
    return current


def _get(obj: Any, dotted: str) -> Any:
    for p in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def _cell(value: list[Any], col: PrinterColumn) -> Any:
    if not value:
        return None
    v = value[0] if len(value) == 1 else value
    if col.type == "date":
        return human_age(v if isinstance(v, str) else None)
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return v


def _pod_cells(o: dict[str, Any]) -> list[Any]:
    """READY, STATUS, RESTARTS, AGE (+ wide columns), following kubectl's printPod."""
    spec, st = o.get("spec") or {}, o.get("status") or {}
    statuses = st.get("containerStatuses") or []
    init_statuses = st.get("initContainerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason = st.get("reason") or st.get("phase") or "Pending"
    initializing = False
    n_init = len(spec.get("initContainers") or [])
    for i, c in enumerate(init_statuses):
        state = c.get("state") or {}
        term = state.get("terminated")
        if term is not None and term.get("exitCode", 0) == 0:
            continue
        initializing = True
        if term is not None:
            reason = "Init:" + (
                term.get("reason")
                or (f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}")
            )
        elif (state.get("waiting") or {}).get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{n_init}"
        break
    ready = 0
    if not initializing:
        has_running = False
        for c in reversed(statuses):
            state = c.get("state") or {}
            waiting, term = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                reason = (
                    f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
                )
            elif c.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
            reason = "Running" if conds.get("Ready") == "True" else "NotReady"
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        restarts,
        human_age(o["metadata"].get("creationTimestamp")),
        st.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _job_cells(o: dict[str, Any]) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = (
        "Complete"
        if conds.get("Complete") == "True"
        else "Failed"
        if conds.get("Failed") == "True"
        else "Suspended"
        if spec.get("suspend")
        else "Running"
    )
    start, end = _parse_time(st.get("startTime")), _parse_time(st.get("completionTime"))
    duration = ""
    if start is not None:
        secs = int((end if end is not None else time.time()) - start)
        duration = human_age(None) if secs < 0 else _short(secs)
    comp = f"{st.get('succeeded', 0)}/{spec.get('completions', 1)}"
    return [status, comp, duration, human_age(o["metadata"].get("creationTimestamp"))]


def _short(secs: int) -> str:
    return human_age(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - secs)))


def _event_cells(o: dict[str, Any]) -> list[Any]:
    io = o.get("involvedObject") or o.get("regarding") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    return [
        human_age(last),
        o.get("type", ""),
        o.get("reason", ""),
        f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}",
        o.get("message") or o.get("note", ""),
    ]


def _node_cells(o: dict[str, Any]) -> list[Any]:
    conds = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
    roles = [
        k.split("/", 1)[1]
        for k in (o["metadata"].get("labels") or {})
        if k.startswith("node-role.kubernetes.io/")
    ]
    return [
        "Ready" if conds.get("Ready") == "True" else "NotReady",
        ",".join(roles) or "<none>",
        human_age(o["metadata"].get("creationTimestamp")),
        ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
    ]


def _svc_cells(o: dict[str, Any]) -> list[Any]:
    spec = o.get("spec") or {}
    ports = (
        ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    )
    return [
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP", "<none>"),
        "<none>",
        ports,
        human_age(o["metadata"].get("creationTimestamp")),
    ]


def _deploy_cells(o: dict[str, Any]) -> list[Any]:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    return [
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        human_age(o["metadata"].get("creationTimestamp")),
    ]


_S = "string"
_BUILTIN: dict[tuple[str, str], tuple[list[tuple[str, str, int]], Callable[[dict[str, Any]], list[Any]]]] = {
    ("", "pods"): (
        [
            ("Ready", _S, 0),
            ("Status", _S, 0),
            ("Restarts", "string", 0),
            ("Age", _S, 0),
            ("IP", _S, 1),
            ("Node", _S, 1),
            ("Nominated Node", _S, 1),
            ("Readiness Gates", _S, 1),
        ],
        _pod_cells,
    ),
    ("batch", "jobs"): (
        [("Status", _S, 0), ("Completions", _S, 0), ("Duration", _S, 0), ("Age", _S, 0)],
        _job_cells,
    ),
    ("", "namespaces"): (
        [("Status", _S, 0), ("Age", _S, 0)],
        lambda o: [
            (o.get("status") or {}).get("phase", ""),
            human_age(o["metadata"].get("creationTimestamp")),
        ],
    ),
    ("", "nodes"): ([("Status", _S, 0), ("Roles", _S, 0), ("Age", _S, 0), ("Version", _S, 0)], _node_cells),
    ("", "services"): (
        [("Type", _S, 0), ("Cluster-IP", _S, 0), ("External-IP", _S, 0), ("Port(s)", _S, 0), ("Age", _S, 0)],
        _svc_cells,
    ),
    ("apps", "deployments"): (
        [("Ready", _S, 0), ("Up-to-date", "integer", 0), ("Available", "integer", 0), ("Age", _S, 0)],
        _deploy_cells,
    ),
    ("", "configmaps"): (
        [("Data", "integer", 0), ("Age", _S, 0)],
        lambda o: [
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            human_age(o["metadata"].get("creationTimestamp")),
        ],
    ),
    ("", "secrets"): (
        [("Type", _S, 0), ("Data", "integer", 0), ("Age", _S, 0)],
        lambda o: [
            o.get("type", "Opaque"),
            len(o.get("data") or {}),
            human_age(o["metadata"].get("creationTimestamp")),
        ],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [("Created At", "date", 0)],
        lambda o: [o["metadata"].get("creationTimestamp")],
    ),
}


def _columns(info: ResourceInfo) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    name_col = {
        "name": "Name",
        "type": "string",
        "format": "name",
        "priority": 0,
        "description": "Name must be unique within a namespace.",
    }
    if info.group_resource in _BUILTIN or (info.group == "events.k8s.io" and info.resource == "events"):
        cols, fn = _BUILTIN.get(info.group_resource, (None, None))  # type: ignore[arg-type,unused-ignore]
        if cols is None:
            cols, fn = None, None
        if cols is not None and fn is not None:
            defs = [name_col] + [
                {"name": n, "type": t, "format": "", "priority": p, "description": n} for n, t, p in cols
            ]
            return defs, lambda o: [o["metadata"]["name"]] + fn(o)
    if info.resource == "events" and info.group in ("", "events.k8s.io"):
        defs = [
            {"name": n, "type": "string", "format": "", "priority": 0, "description": n}
            for n in ("Last Seen", "Type", "Reason", "Object", "Message")
        ]
        return defs, _event_cells
    if info.is_custom and info.printer_columns:
        pcs = info.printer_columns
        defs = [name_col] + [
            {
                "name": c.name,
                "type": c.type,
                "format": c.format,
                "priority": c.priority,
                "description": c.description,
            }
            for c in pcs
        ]
        return defs, lambda o: [o["metadata"]["name"]] + [_cell(jsonpath(o, c.json_path), c) for c in pcs]
    defs = [
        name_col,
        {
            "name": "Age",
            "type": "string",
            "format": "",
            "priority": 0,
            "description": "CreationTimestamp is a timestamp representing the server time when this "
            "object was created.",
        },
    ]
    return defs, lambda o: [o["metadata"]["name"], human_age(o["metadata"].get("creationTimestamp"))]


def table(
    info: ResourceInfo,
    items: list[dict[str, Any]],
    resource_version: str,
    include_object: str = "PartialObjectMetadata",
    continue_token: str | None = None,
    headers: bool = True,
) -> dict[str, Any]:
    defs, cells = _columns(info)
    rows = []
    for o in items:
        if include_object == "Object":
            embedded: Any = o
        elif include_object == "None":
            embedded = None
        else:
            embedded = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            }
        row: dict[str, Any] = {"cells": cells(o)}
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    out: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": defs if headers else [],
        "rows": rows,
    }
    return out
