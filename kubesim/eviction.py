"""The Eviction API (`POST pods/NAME/eviction`, policy/v1 Eviction): how a drain takes a pod away.

As kube-apiserver does, an eviction marks the pod with condition `DisruptionTarget`
(reason `EvictionByEvictionAPI`, message `Eviction API: evicting`) and then deletes it
gracefully; the kubelet stops it, and a pod whose containers will not run again ends `Failed`
with that condition, which a Job's `podFailurePolicy` can match. A pod that already finished is
deleted without the condition. The answer is a `Status` Success (201). kubesim keeps no
PodDisruptionBudgets, so no eviction is refused with 429.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from kubesim.apiserver import ApiServer, json_response
from kubesim.errors import ApiError, now_rfc3339
from kubesim.store import PODS

__all__ = ["register"]


def register(api: ApiServer) -> None:
    store = api.store

    async def evict(request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            raise ApiError(400, "BadRequest", "the body of the eviction is not JSON") from None
        named = ((body or {}).get("metadata") or {}).get("name")
        if named and named != name:
            raise ApiError(
                400, "BadRequest", f"name in URL does not match name in Eviction object: {name} != {named}"
            )
        pod = store.read(PODS, namespace, name)
        uid = pod["metadata"].get("uid")
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):

            def mark(obj: dict[str, Any]) -> None:
                if obj["metadata"].get("uid") != uid:
                    return
                status = obj.setdefault("status", {})
                conditions = [
                    c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"
                ]
                conditions.append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "EvictionByEvictionAPI",
                        "message": "Eviction API: evicting",
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    }
                )
                status["conditions"] = conditions

            store.update_status(PODS, namespace, name, mark)
        options = (body or {}).get("deleteOptions") or {}
        grace = options.get("gracePeriodSeconds")
        store.delete(
            PODS,
            namespace,
            name,
            grace_period_seconds=None if grace is None else int(grace),
            preconditions={"uid": uid},
        )
        return json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
            status=201,
        )

    api.register_subresource("", "v1", "pods", "eviction", evict, ("POST",))
