# mypy: disable-error-code="no-untyped-call"
"""The controller's Kubernetes calls, as plain dicts, blocking (run them in a thread).

A thin layer over the `kubernetes` client: reads return camelCase dicts (or None on 404), creates
tolerate 409 (the object already exists: someone, maybe our previous incarnation, made it),
deletes tolerate 404. Nothing here decides anything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nbdcontract import (
    ANNOTATION_ABOUT,
    COMPONENT_RUN,
    LABEL_FOR_NAMESPACE,
    LABEL_RUN,
    MANAGED_BY_CONTROLLER,
    RUN_PLURAL,
)

from .builds import MAX_RECORDS, records_to_drop
from .idle import PROBE_TIMEOUT, JupyterActivity, decode, parse_activity, probe_paths, token_of
from .naming import (
    BUILDS_CONFIGMAP,
    GROUP,
    LABEL_COMPONENT,
    LABEL_CONTEXT_MD5,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from .permissions import Permission
from .scheduling import AUTOSCALER_EVENTS, NodeOffer, SchedulingObserved

__all__ = ["Kube", "api_message"]

log = logging.getLogger(__name__)

# How long the autoscaler's status and the node list are reused for the verdicts on unscheduled pods.
CLUSTER_VIEW_SECONDS = 5.0


def api_message(e: ApiException) -> str:
    """The API server's message of a refusal (its Status body), else the HTTP reason."""
    try:
        body = json.loads(e.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    return f"{e.status} {e.reason}"


def _offer(node: dict[str, Any]) -> NodeOffer:
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    return NodeOffer(
        name=str(meta.get("name") or ""),
        labels=dict(meta.get("labels") or {}),
        taints=tuple(spec.get("taints") or ()),
        capacity=dict(status.get("capacity") or {}),
        allocatable=dict(status.get("allocatable") or {}),
        unschedulable=bool(spec.get("unschedulable")),
    )


# The field manager of the controller's writes of a Notebook's spec (an idle stop's suspend).
FIELD_MANAGER = MANAGED_BY_CONTROLLER


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        # The cluster's side of an unscheduled pod's verdict (the autoscaler's status, the nodes),
        # read at most every CLUSTER_VIEW_SECONDS however many pods wait: (when, status, nodes).
        self._cluster_view: tuple[float, str | None, tuple[NodeOffer, ...] | None] | None = None
        self._cluster_view_lock = threading.Lock()

    def to_dict(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return out

    def _get(self, fn: Any, *args: Any) -> dict[str, Any] | None:
        try:
            return self.to_dict(fn(*args))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    # Notebooks and Runs.
    def get_notebook(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get_custom(PLURAL, namespace, name)

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            out: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            return dict(out)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_notebook_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patch_custom_status(PLURAL, namespace, name, patch)

    def patch_custom_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": patch}
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def patch_notebook(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of the Notebook itself (its spec or metadata), as the controller."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def jupyter_activity(self, namespace: str, pod: str, port: int, token_secret: str) -> JupyterActivity:
        """Jupyter's view of its own activity, asked through the API server's pods/proxy."""
        secret = self._get(self.core.read_namespaced_secret, token_secret, namespace)
        token = token_of(secret)
        if token is None:
            return JupyterActivity(error=f"the token Secret {token_secret} has no token")
        answers: dict[str, Any] = {}
        for what, path in probe_paths(pod, namespace, port).items():
            method, url, headers, body, _ = self.api_client.param_serialize(
                "GET",
                path,
                query_params=[("token", token), ("no_track_activity", "1")],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            try:
                response = self.api_client.call_api(
                    method, url, header_params=headers, body=body, _request_timeout=PROBE_TIMEOUT
                )
                response.read()
            except Exception as e:  # urllib3 errors: timeouts, refused connections
                return JupyterActivity(error=f"Jupyter did not answer: {type(e).__name__}")
            if response.status != 200:
                return JupyterActivity(error=f"Jupyter's /api/{what} answered HTTP {response.status}")
            try:
                answers[what] = decode(response.data or b"", what)
            except ValueError as e:
                return JupyterActivity(error=str(e))
        return parse_activity(answers["status"], answers["kernels"], answers["terminals"])

    def run_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        """The pods of a Run's Job (every rank, every attempt)."""
        selector = f"{LABEL_RUN}={run},{LABEL_COMPONENT}={COMPONENT_RUN}"
        items = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self.to_dict(p) for p in items]

    def claim_exists(self, namespace: str, name: str) -> bool:
        return self._get(self.core.read_namespaced_persistent_volume_claim, name, namespace) is not None

    def service_exists(self, namespace: str, name: str) -> bool:
        return self._get(self.core.read_namespaced_service, name, namespace) is not None

    # Build record.
    def get_builds(self, namespace: str) -> dict[str, str]:
        cm = self._get(self.core.read_namespaced_config_map, BUILDS_CONFIGMAP, namespace)
        return dict((cm or {}).get("data") or {})

    def record_build(self, namespace: str, md5: str, image: str) -> None:
        """Records that `md5` built `image`, dropping old records when the ConfigMap is full.

        A ConfigMap holds at most 1 MiB, so the record is bounded (`builds.MAX_RECORDS`). Dropping a
        record costs little: the build Job, if it is still there, answers again, and otherwise a
        rebuild from the stored context hits the layer cache.
        """
        data = self.get_builds(namespace)
        if data.get(md5) == image:
            return
        victims: list[str] = []
        if len(data) >= MAX_RECORDS:
            items: list[dict[str, Any]] = []
            for plural in (PLURAL, RUN_PLURAL):
                try:
                    listed: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
                except ApiException as e:
                    # The Run CRD may not be installed yet (an upgrade applies it after the controller).
                    if e.status != 404 or plural == PLURAL:
                        raise
                    continue
                items += listed.get("items") or []
            in_use = {
                str((((n.get("spec") or {}).get("build") or {}).get("upload") or {}).get("md5"))
                for n in items
            }
            victims = records_to_drop(data, in_use | {md5})
        patch: Any = {"data": {md5: image, **{v: None for v in victims}}}
        created: Any = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": BUILDS_CONFIGMAP,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY},
                "annotations": {ANNOTATION_ABOUT: "context MD5 -> image built from it"},
            },
            "data": {md5: image},
        }
        for _ in range(3):
            try:
                self.core.patch_namespaced_config_map(BUILDS_CONFIGMAP, namespace, patch)
                return
            except ApiException as e:
                if e.status != 404:
                    raise
            try:
                self.core.create_namespaced_config_map(namespace, created)
                return
            except ApiException as e:
                if e.status != 409:
                    raise
        raise RuntimeError(f"could not record the build of {md5} in ConfigMap {BUILDS_CONFIGMAP}")

    def forget_build(self, namespace: str, md5: str) -> None:
        try:
            self.core.patch_namespaced_config_map(BUILDS_CONFIGMAP, namespace, {"data": {md5: None}})
        except ApiException as e:
            if e.status != 404:
                raise

    # Jobs.
    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(self.batch.read_namespaced_job, name, namespace)

    def delete_job(self, namespace: str, name: str) -> None:
        """Deletes a Job and, in the background, its pods."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def namespace_pod_security(self, namespace: str) -> str:
        """The stricter of the namespace's enforced and warned Pod Security levels."""
        try:
            meta = self.core.read_namespace(namespace).metadata
            labels = (meta.labels if meta is not None else None) or {}
        except ApiException as e:
            if e.status == 404:
                return "privileged"
            raise
        order = ("privileged", "baseline", "restricted")
        levels = [
            labels.get(f"pod-security.kubernetes.io/{mode}", "privileged") for mode in ("enforce", "warn")
        ]
        return max((lv for lv in levels if lv in order), key=order.index, default="privileged")

    def can(self, permission: Permission, namespace: str) -> bool:
        """Whether the controller's identity has `permission` (in `namespace`, "" = every one)."""
        attrs = client.V1ResourceAttributes(
            verb=permission.verb,
            group=permission.group,
            resource=permission.resource,
            subresource=permission.subresource or None,
            namespace=namespace or None,
        )
        body = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
        )
        review = client.AuthorizationV1Api(self.api_client).create_self_subject_access_review(body)
        return bool(review.status and review.status.allowed)

    def create(self, manifest: dict[str, Any]) -> bool:
        """Creates a Pod, Secret, Job, Service or PersistentVolumeClaim; False when it already existed."""
        namespace = manifest["metadata"]["namespace"]
        kind = manifest["kind"]
        body: Any = manifest
        try:
            if kind == "Pod":
                self.core.create_namespaced_pod(namespace, body)
            elif kind == "Secret":
                self.core.create_namespaced_secret(namespace, body)
            elif kind == "Job":
                self.batch.create_namespaced_job(namespace, body)
            elif kind == "Service":
                self.core.create_namespaced_service(namespace, body)
            elif kind == "PersistentVolumeClaim":
                self.core.create_namespaced_persistent_volume_claim(namespace, body)
            else:
                raise ValueError(f"cannot create a {kind}")
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def failed_create_message(self, namespace: str, kind: str, name: str) -> str | None:
        """The message of the latest `FailedCreate` event of an object (a Job whose pod was refused)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},reason=FailedCreate"
        events = self.core.list_namespaced_event(namespace, field_selector=selector).items
        if not events:
            return None

        def when(e: Any) -> str:
            stamp = e.last_timestamp or e.event_time or e.metadata.creation_timestamp
            return stamp.isoformat() if stamp is not None else ""

        message = str(max(events, key=when).message or "")
        return message.removeprefix("Error creating: ") or None

    def build_pod_problem(self, namespace: str, md5: str, for_namespace: str = "") -> tuple[bool, str | None]:
        """Whether the newest pod of the build of `md5` is still Pending, and why it does not start.

        The why is what the cluster says: the scheduler's condition, a container's waiting reason
        and message (an image pull of the builder, a missing Secret key), else the latest warning
        event of the pod (FailedMount of a missing Secret, FailedScheduling).
        """
        selector = f"{LABEL_COMPONENT}=build,{LABEL_CONTEXT_MD5}={md5}" + (
            f",{LABEL_FOR_NAMESPACE}={for_namespace}" if for_namespace else ""
        )
        items = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        pods = [self.to_dict(p) for p in items]
        pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        if not pods:
            return False, None
        pod = max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        status = pod.get("status") or {}
        if status.get("phase") not in (None, "Pending"):
            return False, None
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return True, f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}"
        for container in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                return (
                    True,
                    f"{waiting['reason']}: {waiting.get('message') or ''} (container {container.get('name')})",
                )
        name = pod["metadata"]["name"]
        selector = f"involvedObject.kind=Pod,involvedObject.name={name},type=Warning"
        events = self.core.list_namespaced_event(namespace, field_selector=selector).items
        if events:

            def when(e: Any) -> str:
                stamp = e.last_timestamp or e.event_time or e.metadata.creation_timestamp
                return stamp.isoformat() if stamp is not None else ""

            latest = max(events, key=when)
            return True, f"{latest.reason}: {latest.message}"
        return True, None

    def build_log_tail(
        self, namespace: str, md5: str, for_namespace: str = "", lines: int = 20
    ) -> str | None:
        """The last lines of the failed container's log of the build of `md5`."""
        selector = f"{LABEL_COMPONENT}=build,{LABEL_CONTEXT_MD5}={md5}" + (
            f",{LABEL_FOR_NAMESPACE}={for_namespace}" if for_namespace else ""
        )
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        if not pods:
            return None
        pod = self.to_dict(pods[-1])
        status = pod.get("status") or {}
        container = "build"
        for init in status.get("initContainerStatuses") or []:
            terminated = (init.get("state") or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                container = init["name"]
        try:
            text: str = self.core.read_namespaced_pod_log(
                pod["metadata"]["name"], namespace, container=container, tail_lines=lines
            )
        except ApiException as e:
            log.warning("reading the build log of %s failed: %s", md5, e.reason)
            return None
        return text

    # Secrets and pods.
    def secret_exists(self, namespace: str, name: str) -> bool:
        try:
            self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def scheduling(self, pod: dict[str, Any]) -> SchedulingObserved:
        """What the verdict on an unscheduled pod needs: the autoscaler's events on it, its status
        ConfigMap (None: absent; "" when it may not be read, so its absence is not assumed) and the
        nodes (None when they may not be listed)."""
        meta = pod["metadata"]
        selector = f"involvedObject.kind=Pod,involvedObject.name={meta['name']}"
        events = []
        for e in self.core.list_namespaced_event(meta["namespace"], field_selector=selector).items:
            uid = e.involved_object.uid if e.involved_object is not None else None
            if e.reason not in AUTOSCALER_EVENTS or (uid and uid != meta.get("uid")):
                continue
            stamp = e.last_timestamp or e.event_time or e.metadata.creation_timestamp
            events.append((str(e.reason), str(e.message or ""), stamp.isoformat() if stamp else ""))
        status, nodes = self._cluster()
        return SchedulingObserved(events=tuple(events), status=status, nodes=nodes)

    def _cluster(self) -> tuple[str | None, tuple[NodeOffer, ...] | None]:
        with self._cluster_view_lock:
            seen = self._cluster_view
            if seen is not None and time.monotonic() - seen[0] < CLUSTER_VIEW_SECONDS:
                return seen[1], seen[2]
            status: str | None
            try:
                configmap = self.core.read_namespaced_config_map("cluster-autoscaler-status", "kube-system")
                status = str((configmap.data or {}).get("status") or "")
            except ApiException as e:
                if e.status not in (403, 404):
                    raise
                status = None if e.status == 404 else ""
            nodes: tuple[NodeOffer, ...] | None
            try:
                items = self.core.list_node().items
            except ApiException as e:
                if e.status != 403:
                    raise
                nodes = None
            else:
                nodes = tuple(_offer(self.to_dict(n)) for n in items)
            self._cluster_view = (time.monotonic(), status, nodes)
            return status, nodes

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(self.core.read_namespaced_pod, name, namespace)

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise
