"""The daemon's side of the Notebook protocol: apply, watch, patch and read what the controller made.

The controller owns the cluster objects; the daemon only writes the Notebook's spec (server-side
apply with its own field manager, so edits by others survive), reads its status, follows the pods
the controller created (by label) and reads the token Secret. Writes go through the `kubernetes`
client in the daemon's thread pool; watches and log streams use the target's aiohttp transport so
that following a build never holds a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from nbd.errors import DeadlineExceeded, NbdError, NotFound
from nbd.kube import NOTEBOOK, KubeClient, ResourceRef
from nbd.launch.spec import FIELD_MANAGER, WRITTEN_BY_ANNOTATION
from nbd.session import NotebookRecord
from nbdcontract import (
    ANNOTATION_DELETED_BY,
    COMPONENT_BUILD,
    COMPONENT_WORKSPACE,
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_CONTEXT_MD5,
    LABEL_NOTEBOOK,
    PLURAL,
    SINGULAR,
    TOKEN_KEY,
    VERSION,
)

log = logging.getLogger(__name__)

WATCH_SECONDS = 60
POD = ResourceRef(kind="Pod")
JOB = ResourceRef(kind="Job", group="batch")
CLAIM = ResourceRef(kind="PersistentVolumeClaim")
# The reason of a delete refused because the Notebook's workspace claim would go with it (clients
# ask for confirmation on it: nbdclient.errors.REASON_WORKSPACE_KEPT, the same string).
REASON_WORKSPACE_KEPT = "WorkspaceKept"

Notebook = dict[str, Any]


class NotebookClient:
    """One namespace's Notebooks (and the pods, logs and Secrets behind them) for one cluster.

    `identity` is the daemon's (see `nbd.launch.spec.WRITTEN_BY_ANNOTATION`): every write of a
    Notebook's spec carries it, and a delete records it first, so that other daemons following the
    Notebook can say who changed it. `written` is the Notebook as the last write through this
    client left it (its uid and generation), what the session records to follow it.
    """

    # The resource this client writes: Notebooks here, Runs in `nbd.runs.client.RunClient`, which
    # go through the same upload and build handshake.
    plural = PLURAL
    singular = SINGULAR
    noun = KIND
    resource = NOTEBOOK

    def __init__(self, kube: KubeClient, namespace: str, identity: str = "") -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.written: NotebookRecord | None = None

    # --- the Notebook --------------------------------------------------------------------------

    @property
    def _path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{self.plural}"

    async def apply(self, manifest: Notebook) -> None:
        """Server-side apply of the daemon's fields of a Notebook (creates it when missing)."""
        name = manifest["metadata"]["name"]
        if self.identity:
            annotations = manifest["metadata"].setdefault("annotations", {})
            annotations[WRITTEN_BY_ANNOTATION] = self.identity
        await self._notebook_call(
            self.kube.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            self.plural,
            name,
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    async def _notebook_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A blocking call about Notebooks (a 404 of the type reads "the CRD is not installed");
        a write's answer (the object after it) becomes `written`."""

        def call() -> Any:
            # The raw answer: the client's own decoding of these calls drops the object.
            response = fn(*args, _preload_content=False, **kwargs)
            try:
                return json.loads(response.data or b"null")
            except ValueError:
                return None

        result = await self.kube.run(call, nbd_resource=self.resource)  # type: ignore[call-arg]
        meta = result.get("metadata") if isinstance(result, dict) else None
        if isinstance(meta, dict) and meta.get("uid") and isinstance(meta.get("generation"), int):
            self.written = NotebookRecord(str(meta["uid"]), int(meta["generation"]))

    async def get(self, name: str) -> Notebook | None:
        try:
            return await self.kube.transport.get_json(f"{self._path}/{name}", resource=self.resource)
        except NotFound:
            return None

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        """A merge patch of the Notebook's spec (e.g. the upload request, `uploaded`, `suspend`)."""
        body: dict[str, Any] = {"spec": spec}
        if self.identity:
            body["metadata"] = {"annotations": {WRITTEN_BY_ANNOTATION: self.identity}}
        await self._notebook_call(
            self.kube.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            self.plural,
            name,
            body,
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
        )

    async def delete(self, name: str) -> None:
        """Deletes the Notebook (gone already is fine), first annotating it with who deletes it."""
        try:
            if self.identity:
                await self._notebook_call(
                    self.kube.custom.patch_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    self.plural,
                    name,
                    {"metadata": {"annotations": {ANNOTATION_DELETED_BY: self.identity}}},
                    field_manager=FIELD_MANAGER,
                    _content_type="application/merge-patch+json",
                )
            await self._notebook_call(
                self.kube.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                self.plural,
                name,
                propagation_policy="Background",
            )
        except NotFound:
            pass

    async def watch(self, name: str) -> AsyncIterator[Notebook]:
        """The Notebook now, then each new state of it, forever (re-watching after drops).

        A deleted Notebook raises NotFound. The caller bounds the wait.
        """
        version = ""
        backoff = 0.1
        while True:
            try:
                if not version:
                    obj = await self.get(name)
                    if obj is None:
                        raise NotFound(
                            f"the {self.noun} {self.namespace}/{name} was deleted", reason="NotebookDeleted"
                        )
                    version = str(obj["metadata"].get("resourceVersion") or "")
                    yield obj
                params = {
                    "fieldSelector": f"metadata.name={name}",
                    "watch": "true",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(WATCH_SECONDS),
                }
                async for event in self.kube.transport.stream_json_lines(
                    self._path, params, read_timeout=WATCH_SECONDS + 15, resource=self.resource
                ):
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        version = ""  # 410 Expired or similar: list again
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind == "DELETED":
                        raise NotFound(
                            f"the {self.noun} {self.namespace}/{name} was deleted", reason="NotebookDeleted"
                        )
                    if kind in ("ADDED", "MODIFIED"):
                        backoff = 0.1
                        yield obj
            except NbdError as e:
                if e.reason in ("NotebookDeleted", "CRDNotInstalled") or e.code.value in (
                    "permission-denied",
                    "not-found",
                ):
                    raise
                log.info(
                    "%s watch of %s/%s interrupted (%s); watching again", self.noun, self.namespace, name, e
                )
                version = ""
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def wait_for(
        self, name: str, predicate: Callable[[Notebook], Any], *, timeout: float, what: str
    ) -> Any:
        """Return the first truthy `predicate(notebook)`; DeadlineExceeded naming `what` after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                async for obj in self.watch(name):
                    result = predicate(obj)
                    if result:
                        return result
        except TimeoutError as e:
            raise DeadlineExceeded(
                f"timed out after {timeout:.0f}s waiting for {what}; is nbd-controller running? "
                f"see `kubectl get {self.singular} {name} -n {self.namespace} -o yaml`",
                reason="ControllerTimeout",
            ) from e
        raise AssertionError("unreachable: the watch never ends")

    # --- pods, logs, secrets -------------------------------------------------------------------

    async def pods(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        data = await self.kube.transport.get_json(
            f"/api/v1/namespaces/{self.namespace}/pods", {"labelSelector": sel}, resource=POD
        )
        items = [p for p in data.get("items") or [] if isinstance(p, dict)]
        items.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        return items

    async def pod(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.kube.transport.get_json(
                f"/api/v1/namespaces/{self.namespace}/pods/{name}", resource=POD
            )
        except NotFound:
            return None

    async def workspace_claims(self, name: str) -> list[dict[str, Any]]:
        """The workspace PersistentVolumeClaim of Notebook `name` (found by the contract's labels,
        as the controller names it), or none."""
        sel = f"{LABEL_NOTEBOOK}={name},{LABEL_COMPONENT}={COMPONENT_WORKSPACE}"
        data = await self.kube.transport.get_json(
            f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims",
            {"labelSelector": sel},
            resource=CLAIM,
        )
        return [c for c in data.get("items") or [] if isinstance(c, dict)]

    async def build_jobs(self, md5: str) -> list[dict[str, Any]]:
        """The build Jobs of a context (one, or an old one going while its rebuild starts)."""
        sel = f"{LABEL_COMPONENT}={COMPONENT_BUILD},{LABEL_CONTEXT_MD5}={md5}"
        data = await self.kube.transport.get_json(
            f"/apis/batch/v1/namespaces/{self.namespace}/jobs", {"labelSelector": sel}, resource=JOB
        )
        items = [j for j in data.get("items") or [] if isinstance(j, dict)]
        items.sort(key=lambda j: str((j.get("metadata") or {}).get("creationTimestamp") or ""))
        return items

    async def build_pods(self, md5: str) -> list[dict[str, Any]]:
        return await self.pods({LABEL_COMPONENT: COMPONENT_BUILD, LABEL_CONTEXT_MD5: md5})

    async def notebook_pods(self, name: str) -> list[dict[str, Any]]:
        return [p for p in await self.pods({LABEL_NOTEBOOK: name}) if _component(p) != COMPONENT_BUILD]

    async def token(self, secret: str) -> str:
        """The Jupyter token from the Secret the controller created (never logged)."""
        import base64

        data = await self.kube.transport.get_json(
            f"/api/v1/namespaces/{self.namespace}/secrets/{secret}", resource=ResourceRef(kind="Secret")
        )
        raw = (data.get("data") or {}).get(TOKEN_KEY)
        if not raw:
            raise NotFound(
                f"the token Secret {self.namespace}/{secret} has no key {TOKEN_KEY!r}", reason="NoToken"
            )
        return base64.b64decode(raw).decode()

    async def log_lines(
        self, pod: str, container: str, *, follow: bool, tail_lines: int = 0
    ) -> AsyncIterator[str]:
        """The container's log, line by line (following until the container ends when asked)."""
        params = {"container": container}
        if follow:
            params["follow"] = "true"
        if tail_lines > 0:
            params["tailLines"] = str(tail_lines)
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log"
        async for line in self.kube.transport.stream_lines(path, params, resource=POD):
            yield line


def _component(pod: dict[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_COMPONENT) or "")


def condition(notebook: Notebook, type_: str) -> dict[str, Any] | None:
    for c in (notebook.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def containers_of(pod: dict[str, Any]) -> list[str]:
    """Init containers then containers, in the order they run."""
    spec = pod.get("spec") or {}
    return [
        str(c["name"])
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
        if c.get("name")
    ]


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
