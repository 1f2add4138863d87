"""kubesim's object store: the in-memory state of the simulated cluster and its watch history.

Why a store of its own: the API server (REST), the kubelet (pods), and the Job controller all read
and write the same objects and react to each other's changes, inside one asyncio process. The store
is the single owner of that state and of the one monotonic resourceVersion.

Interface (used by `kubesim.apiserver` and by the kubelet half, `kubesim.kubelet`, `kubesim.jobs`):

* Kind keys are `(group, version, resource)`: `("", "v1", "pods")`, `("batch", "v1", "jobs")`.
* Every mutation method is SYNCHRONOUS (no await) and must be called from the event loop thread.
  It commits, bumps the global resourceVersion, appends to the bounded watch history, then
  notifies watchers (asyncio queues, `put_nowait`) and subscribers (plain callbacks, called
  synchronously after the commit; a subscriber may call back into the store).
* Objects going in and out are plain JSON-like dicts; everything returned is a deep copy.
* Failures raise `ApiError` (`.code`, `.reason`, `.message`, `.status()` → a `Status` dict).

    create(kind_key, obj, namespace=None, *, field_manager=None, field_validation=None) -> dict
    get(kind_key, namespace, name) -> dict | None
    read(kind_key, namespace, name) -> dict                      # raises NotFound
    list(kind_key, namespace=None, label_selector=None, field_selector=None) -> (items, rv)
    list_page(..., limit=None, continue_token=None) -> (items, rv, continue_token)
    replace(kind_key, namespace, name, obj, *, subresource=None, field_manager=None) -> dict
    patch(kind_key, namespace, name, body, patch_type, *, subresource=None, field_manager=None,
          force=False) -> dict         # patch_type: "json" | "merge" | "strategic" | "apply"
    update(kind_key, namespace, name, mutate) -> dict            # mutate(obj) in place, trusted
    update_status(kind_key, namespace, name, mutate) -> dict     # only .status changes are kept
    delete(kind_key, namespace, name, *, propagation=None, grace_period_seconds=None,
           preconditions=None) -> dict
    watch(kind_key, namespace=None, resource_version=None, label_selector=None,
          field_selector=None) -> Watch                          # async iterator of WatchEvent
    subscribe(kind_key, callback, namespace=None) -> unsubscribe  # callback(WatchEvent)
    add_event(namespace, involved_object, reason, message, type="Normal", component="kubelet")

Deletion semantics (as in the real API server):
* Objects with `metadata.finalizers` get `deletionTimestamp` and stay until the finalizers are
  removed (through replace/patch/update); the write removing the last one deletes the object.
* Pods bound to a node that exists (`spec.nodeName` names a Node object) and not yet terminal are
  deleted gracefully: `deletionTimestamp` + `deletionGracePeriodSeconds` are set (MODIFIED event)
  and the kubelet finishes with `delete(..., grace_period_seconds=0)` once the processes are gone.
  Pods not bound to an existing node, or terminal, are removed at once.
* propagation "Background" (default; Jobs default to "Orphan" like batch/v1) deletes dependents
  (objects whose ownerReferences name the owner's uid) after the owner; "Foreground" keeps the
  owner (finalizer `foregroundDeletion`) until its dependents are gone; "Orphan" strips the
  ownerReferences from the dependents.
* Deleting a Namespace marks it Terminating, deletes everything in it, and removes it when empty.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import copy
import json
import logging
import random
import re
import string
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubesim import patch as patching
from kubesim import podsecurity, priority, quota, rbac, resources, schema
from kubesim.errors import ApiError, now_rfc3339
from kubesim.resources import KindKey, Registry, ResourceInfo
from kubesim.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

__all__ = [
    "ApiError",
    "Store",
    "Watch",
    "WatchEvent",
    "now_rfc3339",
    "PODS",
    "JOBS",
    "NODES",
    "NAMESPACES",
    "EVENTS",
    "CRDS",
]

log = logging.getLogger("kubesim.store")

PODS: KindKey = ("", "v1", "pods")
JOBS: KindKey = ("batch", "v1", "jobs")
NODES: KindKey = ("", "v1", "nodes")
NAMESPACES: KindKey = ("", "v1", "namespaces")
EVENTS: KindKey = ("", "v1", "events")
SECRETS: KindKey = ("", "v1", "secrets")
QUOTAS: KindKey = ("", "v1", "resourcequotas")
PRIORITY_CLASSES: KindKey = ("scheduling.k8s.io", "v1", "priorityclasses")
CRDS: KindKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class WatchEvent:
    """One watch event; `type` is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: dict[str, Any]


@dataclass
class _Record:
    rv: int
    group_resource: tuple[str, str]
    namespace: str
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Watch:
    """An open watch: an async iterator of WatchEvent, ended by `close()` (or by the store).

    Events are filtered by namespace and selectors; an object that stops matching a selector
    is reported as DELETED and one that starts matching as ADDED, like the real server.
    """

    def __init__(
        self,
        store: Store,
        info: ResourceInfo,
        namespace: str | None,
        label_selector: LabelSelector,
        field_selector: FieldSelector,
    ) -> None:
        self._store = store
        self.info = info
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self.closed = False

    def _matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        return self.label_selector.matches_object(obj) and self.field_selector.matches(obj)

    def _offer(self, rec: _Record) -> None:
        if self.closed or rec.group_resource != self._store._storage_key(self.info):
            return
        if self.namespace is not None and rec.namespace != self.namespace:
            return
        now = self._matches(rec.obj)
        before = self._matches(rec.old)
        etype = rec.type
        if etype == "MODIFIED":
            if now and not before:
                etype = "ADDED"
            elif before and not now:
                etype = "DELETED"
            elif not now:
                return
        elif not now:
            return
        self._queue.put_nowait(WatchEvent(etype, self._store._present(self.info, rec.obj)))

    def close(self) -> None:
        """End the iteration (idempotent); pending events are still delivered first."""
        if not self.closed:
            self.closed = True
            self._store._watches.discard(self)
            self._queue.put_nowait(None)

    def pending(self) -> int:
        return self._queue.qsize()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # keep later calls ending too
            raise StopAsyncIteration
        return item


Subscriber = Callable[[WatchEvent], None]


@dataclass
class _Subscription:
    info: ResourceInfo
    namespace: str | None
    callback: Subscriber
    active: bool = True


class Store:
    """All objects of the simulated cluster; see the module docstring for the contract."""

    def __init__(
        self,
        registry: Registry | None = None,
        history_size: int = 10000,
        start_resource_version: int | None = None,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        # Versions start from the clock (milliseconds) so that a restarted kubesim never reuses the
        # versions of an earlier run: a client resuming a watch from one of those gets 410 Expired
        # and re-lists, as after a real server's compaction.
        self._rv = start_resource_version if start_resource_version is not None else int(time.time() * 1000)
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.history_size = history_size
        self.max_events = 5000  # add_event drops the oldest Events beyond this
        self._history: deque[_Record] = deque()
        self._evicted_rv = self._rv  # every event with rv <= this has left the history (or never was)
        self._watches: set[Watch] = set()
        self._subs: list[_Subscription] = []
        # Indexes kept by _put/_pop: uid -> where the object is; owner uid -> dependents' places;
        # namespace -> number of namespaced objects in it.
        self._by_uid: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {}
        self._by_owner: dict[str, set[tuple[tuple[str, str], tuple[str, str]]]] = {}
        self._ns_count: dict[str, int] = {}
        self._refreshing_quotas = False
        # OwnerReferencesPermissionEnforcement: `can(user, verb, resource, group, namespace, name,
        # subresource)` of the authorizer when the plugin is on; `_requester` is the user whose
        # request is being served (set by the API server around its synchronous store call).
        self.owner_references_check: Callable[..., bool] | None = None
        self._requester: Any = None
        # Called with the CRD object whenever a CRD is created/updated/deleted (discovery cache).
        self.on_registry_change: list[Callable[[], None]] = []
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(NAMESPACES, {"metadata": {"name": ns}}, field_manager="kubesim")

    # ------------------------------------------------------------------ basics

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def info(self, kind_key: KindKey) -> ResourceInfo:
        info = self.registry.get(kind_key)
        if info is None:
            raise ApiError.no_resource()
        return info

    def _storage_key(self, info: ResourceInfo) -> tuple[str, str]:
        # events.k8s.io/v1 Events are a view of core/v1 Events.
        if info.group == "events.k8s.io" and info.resource == "events":
            return ("", "events")
        return info.group_resource

    def _bucket(self, info: ResourceInfo) -> dict[tuple[str, str], dict[str, Any]]:
        return self._objects.setdefault(self._storage_key(info), {})

    def _put(self, info: ResourceInfo, key: tuple[str, str], obj: dict[str, Any]) -> None:
        """Store `obj` at `key`, keeping the uid/owner/namespace indexes right."""
        bucket = self._bucket(info)
        gr = self._storage_key(info)
        old = bucket.get(key)
        if old is not None:
            self._unindex(gr, key, old)
        elif info.namespaced:
            self._ns_count[key[0]] = self._ns_count.get(key[0], 0) + 1
        bucket[key] = obj
        meta = obj["metadata"]
        self._by_uid[meta["uid"]] = (gr, key)
        for ref in meta.get("ownerReferences") or []:
            if ref.get("uid"):
                self._by_owner.setdefault(ref["uid"], set()).add((gr, key))

    def _pop(self, info: ResourceInfo, key: tuple[str, str]) -> dict[str, Any]:
        obj = self._bucket(info).pop(key)
        self._unindex(self._storage_key(info), key, obj)
        if info.namespaced:
            self._ns_count[key[0]] = self._ns_count.get(key[0], 1) - 1
        return obj

    def _unindex(self, gr: tuple[str, str], key: tuple[str, str], obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._by_uid.pop(meta["uid"], None)
        for ref in meta.get("ownerReferences") or []:
            deps = self._by_owner.get(ref.get("uid", ""))
            if deps is not None:
                deps.discard((gr, key))
                if not deps:
                    del self._by_owner[ref["uid"]]

    def _present(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        if info.group == "events.k8s.io":
            return resources.core_event_to_events_v1(out)
        out["apiVersion"] = info.api_version
        out["kind"] = info.kind
        return out

    def _ns_key(self, info: ResourceInfo, namespace: str | None) -> str:
        return (namespace or "") if info.namespaced else ""

    @contextlib.contextmanager
    def acting_as(self, user: Any) -> Iterator[None]:
        """Writes inside are made on behalf of `user` (admission plugins that check permissions)."""
        previous, self._requester = self._requester, user
        try:
            yield
        finally:
            self._requester = previous

    def _admit_owner_references(
        self, info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        """OwnerReferencesPermissionEnforcement: changing an object's owner references needs
        `delete` on it (creating it does not), and a new `blockOwnerDeletion: true` needs `update`
        on the owner's `finalizers` subresource; otherwise 403, with upstream's wording."""
        can, user = self.owner_references_check, self._requester
        if can is None or user is None:
            return
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if isinstance(r, dict)]
        old_refs = [r for r in ((old or {}).get("metadata") or {}).get("ownerReferences") or []]
        if refs == old_refs:
            return
        ns = obj["metadata"].get("namespace") or None
        name = obj["metadata"].get("name") or ""

        def forbidden(why: str) -> ApiError:
            return ApiError(
                403,
                "Forbidden",
                f'{info.qualified()} "{name}" is forbidden: {why}',
                {"name": name, "group": info.group, "kind": info.resource},
            )

        if old is not None and not can(user, "delete", info.resource, info.group, ns, name):
            raise forbidden("cannot set an ownerRef on a resource you can't delete: , <nil>")
        blocking_before = {
            r.get("uid") for r in old_refs if isinstance(r, dict) and r.get("blockOwnerDeletion")
        }
        for ref in refs:
            if not ref.get("blockOwnerDeletion") or ref.get("uid") in blocking_before:
                continue
            owner = self.registry.by_api_version_kind(
                str(ref.get("apiVersion") or ""), str(ref.get("kind") or "")
            )
            if owner is None:
                raise forbidden(
                    "cannot set blockOwnerDeletion in this case because cannot find RESTMapping for "
                    f"APIVersion {ref.get('apiVersion')} Kind {ref.get('kind')}: no matches for kind "
                    f'"{ref.get("kind")}" in version "{ref.get("apiVersion")}"'
                )
            owner_ns = ns if owner.namespaced else None
            if not can(
                user,
                "update",
                owner.resource,
                owner.group,
                owner_ns,
                str(ref.get("name") or ""),
                "finalizers",
            ):
                raise forbidden(
                    "cannot set blockOwnerDeletion if an ownerReference refers to a resource you "
                    "can't set finalizers on: , <nil>"
                )

    def rbac_objects(self) -> rbac.Objects:
        """The cluster's Roles, ClusterRoles and bindings, for the RBAC authorizer (no copies)."""
        group = "rbac.authorization.k8s.io"

        def bucket(resource: str) -> dict[tuple[str, str], dict[str, Any]]:
            return self._bucket(self.info((group, "v1", resource)))

        return rbac.Objects(
            roles=dict(bucket("roles")),
            cluster_roles={name: o for (_, name), o in bucket("clusterroles").items()},
            role_bindings=list(bucket("rolebindings").values()),
            cluster_role_bindings=list(bucket("clusterrolebindings").values()),
        )

    def _items(self, info: ResourceInfo, namespace: str) -> list[dict[str, Any]]:
        """The stored objects of one kind in one namespace (no copies: read them, never mutate)."""
        return [obj for (ns, _), obj in self._bucket(info).items() if ns == namespace]

    def _raw(self, info: ResourceInfo, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._bucket(info).get((self._ns_key(info, namespace), name))

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(
        self, info: ResourceInfo, etype: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        ns = (obj.get("metadata") or {}).get("namespace", "") if info.namespaced else ""
        # No copies: a stored dict is never mutated after it is stored (every write stores a new
        # dict), so the history can share them with the live state and with each other.
        rec = _Record(int(obj["metadata"]["resourceVersion"]), self._storage_key(info), ns, etype, obj, old)
        self._history.append(rec)
        while len(self._history) > max(self.history_size, 0):
            self._evicted_rv = self._history.popleft().rv
        for w in list(self._watches):
            w._offer(rec)
        for sub in list(self._subs):
            if not sub.active or self._storage_key(sub.info) != rec.group_resource:
                continue
            if sub.namespace is not None and sub.namespace != ns:
                continue
            try:
                sub.callback(WatchEvent(etype, self._present(sub.info, rec.obj)))
            except Exception:  # a subscriber's bug must not break the writer
                log.exception("store subscriber failed on %s %s", etype, rec.group_resource)

    # ------------------------------------------------------------------ reads

    def get(self, kind_key: KindKey, namespace: str | None, name: str) -> dict[str, Any] | None:
        info = self.info(kind_key)
        obj = self._raw(info, namespace, name)
        return self._present(info, obj) if obj is not None else None

    def read(self, kind_key: KindKey, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.get(kind_key, namespace, name)
        if obj is None:
            raise ApiError.not_found(self.info(kind_key), name)
        return obj

    def list(
        self,
        kind_key: KindKey,
        namespace: str | None = None,
        label_selector: str | LabelSelector | None = None,
        field_selector: str | FieldSelector | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        items, rv, _ = self.list_page(kind_key, namespace, label_selector, field_selector)
        return items, rv

    def list_page(
        self,
        kind_key: KindKey,
        namespace: str | None = None,
        label_selector: str | LabelSelector | None = None,
        field_selector: str | FieldSelector | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str, str | None]:
        info = self.info(kind_key)
        ls, fs = _selectors(label_selector, field_selector)
        _check_fields(info, fs)
        start: tuple[str, str] | None = None
        if continue_token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start = (str(decoded[0]), str(decoded[1]))
            except Exception:
                raise ApiError.bad_request("continue key is not valid: illegal base64 data") from None
        keys = sorted(self._bucket(info))
        out: list[dict[str, Any]] = []
        next_token: str | None = None
        for key in keys:
            if start is not None and key <= start:
                continue
            obj = self._bucket(info)[key]
            if info.namespaced and namespace is not None and key[0] != namespace:
                continue
            if not (ls.matches_object(obj) and fs.matches(obj)):
                continue
            if limit and len(out) >= limit:
                last = (
                    out[-1]["metadata"].get("namespace", "") if info.namespaced else "",
                    out[-1]["metadata"]["name"],
                )
                next_token = base64.urlsafe_b64encode(json.dumps(list(last)).encode()).decode()
                break
            out.append(self._present(info, obj))
        return out, self.resource_version, next_token

    # ------------------------------------------------------------------ watch

    def watch(
        self,
        kind_key: KindKey,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | LabelSelector | None = None,
        field_selector: str | FieldSelector | None = None,
    ) -> Watch:
        """Open a watch. `resource_version` None/""/"0": ADDED for every current object first.

        Raises ApiError 410 Expired when events after `resource_version` have left the history.
        """
        info = self.info(kind_key)
        ls, fs = _selectors(label_selector, field_selector)
        _check_fields(info, fs)
        ns = namespace if info.namespaced else None
        w = Watch(self, info, ns, ls, fs)
        if resource_version is None or resource_version in ("", "0"):
            items, _ = self.list(kind_key, ns, ls, fs)
            for item in items:
                w._queue.put_nowait(WatchEvent("ADDED", item))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise ApiError.bad_request(f'invalid resource version "{resource_version}"') from None
            if since < self._evicted_rv:
                raise ApiError.expired(f"too old resource version: {since} ({self._evicted_rv + 1})")
            if since > self._rv:
                # From a future this server never had (an earlier kubesim run): make the client re-list.
                raise ApiError.expired(f"too old resource version: {since} ({self._rv})")
            for rec in self._history:
                if rec.rv > since:
                    w._offer(rec)
        self._watches.add(w)
        return w

    def watches(self) -> builtins.list[Watch]:
        return list(self._watches)

    def subscribe(
        self, kind_key: KindKey, callback: Subscriber, namespace: str | None = None
    ) -> Callable[[], None]:
        """Call `callback(WatchEvent)` synchronously after every change of that resource.

        Returns a function that unsubscribes. No initial events: list first if you need them.
        """
        sub = _Subscription(self.info(kind_key), namespace, callback)
        self._subs.append(sub)

        def unsubscribe() -> None:
            sub.active = False
            if sub in self._subs:
                self._subs.remove(sub)

        return unsubscribe

    # ------------------------------------------------------------------ create

    def create(
        self,
        kind_key: KindKey,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        dry_run: bool = False,
        operation: str = "Update",
    ) -> dict[str, Any]:
        info = self.info(kind_key)
        if not isinstance(obj, dict):
            raise ApiError.bad_request("the body of the request must be an object")
        obj = copy.deepcopy(obj)
        requested = copy.deepcopy(obj)
        if info.group == "events.k8s.io":
            obj = resources.events_v1_to_core_event(obj)
            info = self.info(EVENTS)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        body_kind = obj.get("kind")
        if body_kind and body_kind != info.kind:
            raise ApiError.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version "
                f"({info.api_version})"
                if obj.get("apiVersion") != info.api_version
                else f"kind {body_kind} does not match the expected kind {info.kind}"
            )
        if info.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            ns = namespace or body_ns or "default"
            meta["namespace"] = ns
            ns_obj = self._raw(self.info(NAMESPACES), None, ns)
            if ns_obj is None:
                raise ApiError.not_found(self.info(NAMESPACES), ns)
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{info.resource} "{meta.get("name") or meta.get("generateName", "")}" '
                    f"is forbidden: unable to create new content in namespace {ns} because it is being "
                    "terminated",
                    {"name": meta.get("name", ""), "kind": info.resource},
                )
        else:
            meta.pop("namespace", None)
            ns = ""
        if not meta.get("name"):
            if meta.get("generateName"):
                for _ in range(10):
                    candidate = meta["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                    if self._raw(info, ns, candidate) is None:
                        break
                meta["name"] = candidate
            else:
                raise ApiError.invalid(
                    info,
                    "",
                    [
                        {
                            "field": "metadata.name",
                            "reason": "FieldValueRequired",
                            "message": "Required value: name or generateName is required",
                        }
                    ],
                )
        name = meta["name"]
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise ApiError.invalid(
                info,
                str(name),
                [
                    {
                        "field": "metadata.name",
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                        "character",
                    }
                ],
            )
        if self._raw(info, ns, name) is not None:
            raise ApiError.already_exists(info, name)
        obj["apiVersion"] = info.api_version
        obj["kind"] = info.kind
        for k in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
        ):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        obj = resources.prepare_create(info, obj, self)
        self._admit_owner_references(info, obj, None)
        if info.key in (PODS, JOBS):
            self._admit_pod_security(info, obj, ns, warnings)
        if info.key == PODS:
            self._admit_priority(obj)
            self._admit_quota(obj, ns)
        if info.is_custom:
            obj = schema.admit(info, obj, None, field_validation, warnings)
        if info.key == CRDS:
            obj = resources.admit_crd(obj, self.registry)
        meta = obj["metadata"]
        meta["managedFields"] = [_managed_entry(field_manager, operation, info.api_version, requested)]
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return self._present(info, obj)
        meta["resourceVersion"] = str(self._next_rv())
        self._put(info, (ns, name), obj)
        self._record(info, "ADDED", obj, None)
        self._after_write(info, obj)
        created = self._present(info, obj)
        if self._owners_all_gone(obj):
            # The garbage collector deletes a dependent none of whose owners exists any more (a
            # controller that created it from a stale view of a deleted owner): the create
            # succeeds, and the object goes right after, as upstream's collector removes it.
            self._try_delete(info, obj, "Background")
        return created

    def _owners_all_gone(self, obj: dict[str, Any]) -> bool:
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid")]
        return bool(refs) and all(self._find_uid(r["uid"]) is None for r in refs)

    # ------------------------------------------------------------------ updates

    def replace(
        self,
        kind_key: KindKey,
        namespace: str | None,
        name: str,
        obj: dict[str, Any],
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        info = self.info(kind_key)
        old = self._raw(info, namespace, name)
        if old is None:
            raise ApiError.not_found(info, name)
        if not isinstance(obj, dict):
            raise ApiError.bad_request("the body of the request must be an object")
        meta = obj.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError.bad_request(
                "the name of the object (%s) does not match the name on the URL (%s)" % (meta["name"], name)
            )
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise ApiError.conflict(info, name)
        return self._commit_update(
            info,
            old,
            copy.deepcopy(obj),
            subresource,
            field_manager,
            "Update",
            field_validation,
            warnings,
            dry_run,
        )

    def patch(
        self,
        kind_key: KindKey,
        namespace: str | None,
        name: str,
        body: Any,
        patch_type: str,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
        field_validation: str | None = None,
        warnings: builtins.list[str] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Apply a patch; patch_type "json" | "merge" | "strategic" | "apply" (server-side apply)."""
        info = self.info(kind_key)
        old = self._raw(info, namespace, name)
        if patch_type == "strategic" and info.is_custom:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            )
        if old is None:
            if patch_type == "apply" and subresource is None:
                if not isinstance(body, dict):
                    raise ApiError.bad_request("apply patch must be an object")
                body = copy.deepcopy(body)
                body.setdefault("metadata", {})["name"] = name
                if field_manager is None:
                    raise ApiError.bad_request(
                        "PATCH requests with apply content type require a fieldManager"
                    )
                return self.create(
                    kind_key,
                    body,
                    namespace,
                    field_manager=field_manager,
                    field_validation=field_validation,
                    warnings=warnings,
                    dry_run=dry_run,
                    operation="Apply",
                )
            raise ApiError.not_found(info, name)
        current = self._present(info, old)
        try:
            if patch_type == "json":
                new = patching.json_patch(current, body)
            elif patch_type == "merge":
                new = patching.merge_patch(current, body)
            elif patch_type == "strategic":
                new = patching.strategic_merge_patch(current, body)
            elif patch_type == "apply":
                if field_manager is None:
                    raise ApiError.bad_request(
                        "PATCH requests with apply content type require a fieldManager"
                    )
                if not isinstance(body, dict):
                    raise ApiError.bad_request("apply patch must be an object")
                new = self._apply(current, body, field_manager, subresource)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {patch_type!r}")
        except patching.PatchError as e:
            raise ApiError(
                422 if patch_type != "json" else 422, "Invalid" if patch_type != "json" else "Invalid", str(e)
            ) from None
        if not isinstance(new, dict):
            raise ApiError.bad_request("the patch result is not an object")
        new_meta = new.get("metadata") or {}
        if (
            new_meta.get("resourceVersion")
            and new_meta["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise ApiError.conflict(info, name)
        if new_meta.get("name", name) != name:
            raise ApiError.bad_request("metadata.name: Invalid value: the name cannot be changed by a patch")
        operation = "Apply" if patch_type == "apply" else "Update"
        return self._commit_update(
            info,
            old,
            new,
            subresource,
            field_manager,
            operation,
            field_validation,
            warnings,
            dry_run,
            applied=body if patch_type == "apply" else None,
        )

    def update(
        self,
        kind_key: KindKey,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], None],
        *,
        field_manager: str = "kubesim",
    ) -> dict[str, Any]:
        """Trusted in-process write: `mutate` edits a copy of the whole object (status included)."""
        info = self.info(kind_key)
        old = self._raw(info, namespace, name)
        if old is None:
            raise ApiError.not_found(info, name)
        new = self._present(info, old)
        mutate(new)
        return self._commit_update(info, old, new, "*", field_manager, "Update", None, None, False)

    def update_status(
        self,
        kind_key: KindKey,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], None],
        *,
        field_manager: str = "kubesim",
    ) -> dict[str, Any]:
        """In-process status write: `mutate` edits a copy; only `.status` of the result is kept."""
        info = self.info(kind_key)
        old = self._raw(info, namespace, name)
        if old is None:
            raise ApiError.not_found(info, name)
        new = self._present(info, old)
        new.setdefault("status", {})
        mutate(new)
        return self._commit_update(info, old, new, "status", field_manager, "Update", None, None, False)

    def _apply(
        self, current: dict[str, Any], body: dict[str, Any], manager: str, subresource: str | None
    ) -> dict[str, Any]:
        applied = patching.field_set(body)
        entries = current.get("metadata", {}).get("managedFields") or []
        previous: dict[str, Any] = {}
        others: dict[str, Any] = {}
        for e in entries:
            if e.get("operation") != "Apply":
                continue
            if e.get("manager") == manager and e.get("subresource", "") == (subresource or ""):
                previous = e.get("fieldsV1") or {}
            else:
                others = patching.merge_patch(others, e.get("fieldsV1") or {})
        base = current
        if previous:
            keep = patching.merge_patch(others, applied)
            base = patching.remove_fields(current, previous, keep)
        body = copy.deepcopy(body)
        body.get("metadata", {}).pop("managedFields", None)
        body.get("metadata", {}).pop("resourceVersion", None)
        return patching.strategic_merge_patch(base, body)  # type: ignore[no-any-return]

    def _commit_update(
        self,
        info: ResourceInfo,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        field_manager: str | None,
        operation: str,
        field_validation: str | None,
        warnings: builtins.list[str] | None,
        dry_run: bool,
        applied: Any = None,
    ) -> dict[str, Any]:
        """Turn a requested new state into the stored one and commit it (or do nothing if equal).

        subresource: None = main resource (status kept from `old` when the kind has a status
        subresource), "status" = only `.status` taken from `new`, "*" = trusted, take everything.
        """
        if info.group == "events.k8s.io":
            new = resources.events_v1_to_core_event(new)
            info = self.info(EVENTS)
        old_meta = old["metadata"]
        if subresource == "status":
            candidate = copy.deepcopy(old)
            if "status" in new:
                candidate["status"] = new["status"]
            else:
                candidate.pop("status", None)
            new = candidate
        else:
            new.setdefault("metadata", {})
            if subresource is None and info.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            nm = new["metadata"]
            for k in ("uid", "creationTimestamp", "name", "namespace", "deletionGracePeriodSeconds"):
                if k in old_meta:
                    nm[k] = old_meta[k]
                else:
                    nm.pop(k, None)
            if "deletionTimestamp" in old_meta:
                nm["deletionTimestamp"] = old_meta["deletionTimestamp"]
            elif subresource != "*":
                nm.pop("deletionTimestamp", None)
        new["apiVersion"] = info.api_version
        new["kind"] = info.kind
        new = resources.prepare_update(info, new, old, self, trusted=subresource is not None)
        if subresource is None:
            self._admit_owner_references(info, new, old)
        if info.is_custom:
            new = schema.admit(info, new, old, field_validation, warnings)
        if info.key == CRDS:
            new = resources.admit_crd(new, self.registry)
        nm = new["metadata"]
        nm["resourceVersion"] = old_meta["resourceVersion"]
        nm["generation"] = old_meta.get("generation", 1)
        if _spec_of(info, new) != _spec_of(info, old):
            nm["generation"] = old_meta.get("generation", 1) + 1
        nm["managedFields"] = _update_managed(
            old_meta.get("managedFields") or [],
            field_manager,
            operation,
            info.api_version,
            applied if applied is not None else new,
            "status" if subresource == "status" else "",
        )
        if _same(new, old):
            return self._present(info, old)
        if dry_run:
            return self._present(info, new)
        ns = self._ns_key(info, old_meta.get("namespace"))
        # The write that removes the last finalizer of a deleted object removes the object. A pod in
        # its grace period (no finalizers to begin with) stays until the kubelet finishes it.
        if nm.get("deletionTimestamp") and not nm.get("finalizers") and old_meta.get("finalizers"):
            self._put(info, (ns, old_meta["name"]), new)
            return self._finalize_delete(info, ns, old_meta["name"])
        nm["resourceVersion"] = str(self._next_rv())
        self._put(info, (ns, old_meta["name"]), new)
        self._record(info, "MODIFIED", new, old)
        self._after_write(info, new)
        return self._present(info, new)

    def _admit_pod_security(
        self, info: ResourceInfo, obj: dict[str, Any], ns: str, warnings: builtins.list[str] | None
    ) -> None:
        """Pod Security admission: the namespace's `enforce` level refuses a pod, its `warn` level
        (and, for a Job's pod template, `enforce` too) answers with a Warning, as upstream."""
        ns_obj = self._raw(self.info(NAMESPACES), None, ns)
        labels = ((ns_obj or {}).get("metadata") or {}).get("labels") or {}
        enforce = labels.get(podsecurity.ENFORCE_LABEL, "privileged")
        warn = labels.get(podsecurity.WARN_LABEL, "privileged")
        if enforce == "privileged" and warn == "privileged":
            return
        if info.key == JOBS:
            template = ((obj.get("spec") or {}).get("template")) or {}
            pod = {"metadata": template.get("metadata") or {}, "spec": template.get("spec") or {}}
            for level in dict.fromkeys(lv for lv in (enforce, warn) if lv != "privileged"):
                found = podsecurity.violations(pod, level)
                if found and warnings is not None:
                    warnings.append(podsecurity.message(level, found, "would violate"))
            return
        found = podsecurity.violations(obj, enforce)
        if found:
            name = obj["metadata"]["name"]
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: {podsecurity.message(enforce, found)}',
                {"name": name, "kind": "pods"},
            )
        found = podsecurity.violations(obj, warn)
        if found and warnings is not None:
            warnings.append(podsecurity.message(warn, found, "would violate"))

    def _admit_priority(self, pod: dict[str, Any]) -> None:
        """The Priority plugin: resolves `priorityClassName` into `spec.priority`, or refuses the pod."""
        refusal = priority.resolve(pod, list(self._bucket(self.info(PRIORITY_CLASSES)).values()))
        if refusal is not None:
            name = pod["metadata"]["name"]
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: {refusal.message}',
                {"name": name, "kind": "pods"},
            )

    def _admit_quota(self, pod: dict[str, Any], ns: str) -> None:
        """The quota plugin: a pod that does not fit a ResourceQuota of its namespace is refused."""
        quotas = self._items(self.info(QUOTAS), ns)
        if not quotas:
            return
        pods = self._items(self.info(PODS), ns)
        refusal = quota.check(pod, quotas, pods)
        if refusal is not None:
            name = pod["metadata"]["name"]
            raise ApiError(
                403, "Forbidden", f'pods "{name}" is forbidden: {refusal}', {"name": name, "kind": "pods"}
            )

    def _refresh_quotas(self, ns: str) -> None:
        """Writes `status.hard` and `status.used` of the namespace's quotas, as the quota controller."""
        if self._refreshing_quotas:
            return
        quotas = self._items(self.info(QUOTAS), ns)
        if not quotas:
            return
        pods = self._items(self.info(PODS), ns)
        self._refreshing_quotas = True
        try:
            for q in quotas:
                wanted = quota.status(q, pods)
                if (q.get("status") or {}) != wanted:

                    def mutate(o: dict[str, Any], wanted: dict[str, Any] = wanted) -> None:
                        o["status"] = wanted

                    self.update_status(
                        QUOTAS, ns, q["metadata"]["name"], mutate, field_manager="resourcequota-controller"
                    )
        finally:
            self._refreshing_quotas = False

    def _after_write(self, info: ResourceInfo, obj: dict[str, Any]) -> None:
        if info.key in (PODS, QUOTAS):
            self._refresh_quotas(obj["metadata"].get("namespace") or "")
        if info.key == CRDS:
            resources.register_crd(obj, self.registry)
            for cb in list(self.on_registry_change):
                cb()
        elif info.key == NAMESPACES and not obj["metadata"].get("deletionTimestamp"):
            ns = obj["metadata"]["name"]
            sa_info = self.info(("", "v1", "serviceaccounts"))
            if self._raw(sa_info, ns, "default") is None:
                self.create(
                    sa_info.key,
                    {"metadata": {"name": "default", "namespace": ns}},
                    field_manager="kube-controller-manager",
                )

    # ------------------------------------------------------------------ delete

    def delete(
        self,
        kind_key: KindKey,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete (or start deleting) an object; returns its last state (see module docstring)."""
        info = self.info(kind_key)
        if info.group == "events.k8s.io":
            info = self.info(EVENTS)
        ns = self._ns_key(info, namespace)
        obj = self._raw(info, ns, name)
        if obj is None:
            raise ApiError.not_found(info, name)
        meta = obj["metadata"]
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
                raise ApiError.conflict(
                    info,
                    name,
                    f"Precondition failed: UID in precondition: "
                    f"{preconditions['uid']}, UID in object meta: {meta['uid']}",
                )
            if (
                preconditions.get("resourceVersion")
                and preconditions["resourceVersion"] != meta["resourceVersion"]
            ):
                raise ApiError.conflict(
                    info,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
        if dry_run:
            return self._present(info, obj)
        if propagation is None:
            propagation = "Orphan" if info.key == JOBS else "Background"
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise ApiError.bad_request(f'propagationPolicy: Unsupported value: "{propagation}"')
        if info.key == NAMESPACES:
            return self._delete_namespace(obj)
        if propagation == "Orphan":
            self._orphan_dependents(meta["uid"])
        graceful = False
        if info.key == PODS:
            graceful = self._pod_needs_grace(obj, grace_period_seconds)
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and self._dependents(meta["uid"]):
            if "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
        if finalizers or graceful:
            already = bool(meta.get("deletionTimestamp"))
            new = copy.deepcopy(obj)
            nm = new["metadata"]
            nm["finalizers"] = finalizers or None
            if not finalizers:
                nm.pop("finalizers")
            if graceful:
                grace = self._pod_grace(obj, grace_period_seconds)
                nm["deletionGracePeriodSeconds"] = grace
                if not already:
                    nm["deletionTimestamp"] = now_rfc3339(time.time() + grace)
            elif not already:
                nm["deletionTimestamp"] = now_rfc3339()
                nm["deletionGracePeriodSeconds"] = 0
            if new != obj:
                nm["resourceVersion"] = str(self._next_rv())
                self._put(info, (ns, name), new)
                self._record(info, "MODIFIED", new, obj)
            if propagation == "Foreground":
                for dep_info, dep in self._dependents(meta["uid"]):
                    self._try_delete(dep_info, dep, "Foreground")
                self._check_foreground(info, ns, name)
            elif propagation == "Background" and not graceful and finalizers:
                pass  # dependents go when the owner is finally removed
            cur = self._raw(info, ns, name)
            return self._present(info, cur if cur is not None else new)
        return self._finalize_delete(info, ns, name)

    def _pod_grace(self, pod: dict[str, Any], requested: int | None) -> int:
        if requested is not None:
            return max(int(requested), 0)
        g = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return 30 if g is None else int(g)

    def _pod_needs_grace(self, pod: dict[str, Any], requested: int | None) -> bool:
        if self._pod_grace(pod, requested) == 0:
            return False
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or self._raw(self.info(NODES), None, node) is None:
            return False
        return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")

    def _finalize_delete(self, info: ResourceInfo, ns: str, name: str) -> dict[str, Any]:
        obj = self._pop(info, (ns, name))
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        self._record(info, "DELETED", obj, None)
        uid = obj["metadata"]["uid"]
        # Garbage collection: dependents of a removed owner go too (background).
        for dep_info, dep in self._dependents(uid):
            self._try_delete(dep_info, dep, "Background")
        for ref in obj["metadata"].get("ownerReferences") or []:
            owner = self._find_uid(ref.get("uid", ""))
            if owner is not None:
                o_info, o_obj = owner
                if "foregroundDeletion" in (o_obj["metadata"].get("finalizers") or []):
                    self._check_foreground(
                        o_info,
                        self._ns_key(o_info, o_obj["metadata"].get("namespace")),
                        o_obj["metadata"]["name"],
                    )
        if info.key == CRDS:
            self._drop_crd(obj)
        if info.key == PODS:
            self._refresh_quotas(ns)
        if info.namespaced:
            self._check_namespace(ns)
        return self._present(info, obj)

    def _try_delete(self, info: ResourceInfo, obj: dict[str, Any], propagation: str) -> None:
        m = obj["metadata"]
        try:
            self.delete(info.key, m.get("namespace"), m["name"], propagation=propagation)
        except ApiError:
            pass

    def _drop_crd(self, crd: dict[str, Any]) -> None:
        name = crd["metadata"]["name"]
        infos = [i for i in self.registry.all() if i.crd_name == name]
        if infos:
            bucket = self._bucket(infos[0])
            for ns, n in list(bucket):
                self._finalize_delete(infos[0], ns, n)
        self.registry.remove_crd(name)
        for cb in list(self.on_registry_change):
            cb()

    def _locate(
        self, place: tuple[tuple[str, str], tuple[str, str]]
    ) -> tuple[ResourceInfo, dict[str, Any]] | None:
        gr, key = place
        info = self.registry.any_version(*gr)
        obj = self._objects.get(gr, {}).get(key)
        if info is None or obj is None:
            return None
        return info, obj

    def _find_uid(self, uid: str) -> tuple[ResourceInfo, dict[str, Any]] | None:
        place = self._by_uid.get(uid)
        return self._locate(place) if place is not None else None

    def _dependents(self, uid: str) -> builtins.list[tuple[ResourceInfo, dict[str, Any]]]:
        out = []
        for place in sorted(self._by_owner.get(uid, ())):
            found = self._locate(place)
            if found is not None:
                out.append(found)
        return out

    def _orphan_dependents(self, uid: str) -> None:
        for info, dep in self._dependents(uid):
            m = dep["metadata"]

            def strip(o: dict[str, Any]) -> None:
                refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if refs:
                    o["metadata"]["ownerReferences"] = refs
                else:
                    o["metadata"].pop("ownerReferences", None)

            self.update(info.key, m.get("namespace"), m["name"], strip, field_manager="garbage-collector")

    def _check_foreground(self, info: ResourceInfo, ns: str, name: str) -> None:
        obj = self._raw(info, ns, name)
        if obj is None or self._dependents(obj["metadata"]["uid"]):
            return
        fins = [f for f in obj["metadata"].get("finalizers") or [] if f != "foregroundDeletion"]

        def drop(o: dict[str, Any]) -> None:
            if fins:
                o["metadata"]["finalizers"] = fins
            else:
                o["metadata"].pop("finalizers", None)

        self.update(info.key, ns or None, name, drop, field_manager="garbage-collector")

    def _delete_namespace(self, ns_obj: dict[str, Any]) -> dict[str, Any]:
        info = self.info(NAMESPACES)
        name = ns_obj["metadata"]["name"]
        if not ns_obj["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(ns_obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            self._put(info, ("", name), new)
            self._record(info, "MODIFIED", new, ns_obj)
        for gr, bucket in list(self._objects.items()):
            r_info = self.registry.any_version(*gr)
            if r_info is None or not r_info.namespaced:
                continue
            for ns, n in list(bucket):
                if ns == name and (ns, n) in bucket:
                    try:
                        self.delete(r_info.key, ns, n, propagation="Background")
                    except ApiError:
                        pass
        self._check_namespace(name)
        cur = self._raw(info, "", name)
        return self._present(info, cur if cur is not None else ns_obj)

    def _check_namespace(self, ns: str) -> None:
        info = self.info(NAMESPACES)
        ns_obj = self._raw(info, "", ns)
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        if self._ns_count.get(ns, 0) > 0:
            return
        self._finalize_delete(info, "", ns)

    # ------------------------------------------------------------------ events

    def add_event(
        self,
        namespace: str,
        involved_object: dict[str, Any],
        reason: str,
        message: str,
        type: str = "Normal",
        component: str = "kubelet",
    ) -> dict[str, Any]:
        """Record a core/v1 Event about `involved_object` (a full object or an ObjectReference).

        Repeats (same object, reason and message) bump `count` and `lastTimestamp` instead.
        """
        md = involved_object.get("metadata")
        ref = {
            "kind": involved_object.get("kind"),
            "namespace": (md or {}).get("namespace", involved_object.get("namespace", namespace)),
            "name": (md or {}).get("name", involved_object.get("name")),
            "uid": (md or {}).get("uid", involved_object.get("uid")),
            "apiVersion": involved_object.get("apiVersion"),
            "resourceVersion": (md or {}).get("resourceVersion", involved_object.get("resourceVersion")),
        }
        if involved_object.get("fieldPath"):
            ref["fieldPath"] = involved_object["fieldPath"]
        ref = {k: v for k, v in ref.items() if v is not None}
        now = now_rfc3339()
        info = self.info(EVENTS)
        for (ns, n), ev in self._bucket(info).items():
            if (
                ns == namespace
                and ev.get("reason") == reason
                and ev.get("message") == message
                and (ev.get("involvedObject") or {}).get("uid") == ref.get("uid")
                and (ev.get("involvedObject") or {}).get("name") == ref.get("name")
            ):

                def bump(o: dict[str, Any]) -> None:
                    o["count"] = int(o.get("count") or 1) + 1
                    o["lastTimestamp"] = now

                return self.update(EVENTS, ns, n, bump, field_manager=component)
        name = f"{ref.get('name', 'object')}.{uuid.uuid4().hex[:16]}"
        bucket = self._bucket(info)
        if len(bucket) >= self.max_events:
            # Like the real server's event TTL: the oldest go first so a long run stays bounded.
            oldest = sorted(bucket.items(), key=lambda kv: int(kv[1]["metadata"]["resourceVersion"]))
            for key, _ in oldest[: len(bucket) - self.max_events + 1]:
                self._finalize_delete(info, key[0], key[1])
        return self.create(
            EVENTS,
            {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": ref,
                "reason": reason,
                "message": message,
                "type": type,
                "source": {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "eventTime": None,
                "count": 1,
                "reportingComponent": component,
                "reportingInstance": "",
            },
            namespace,
            field_manager=component,
        )


# ---------------------------------------------------------------------- helpers


def _selectors(
    label_selector: str | LabelSelector | None, field_selector: str | FieldSelector | None
) -> tuple[LabelSelector, FieldSelector]:
    try:
        ls = (
            label_selector
            if isinstance(label_selector, LabelSelector)
            else parse_label_selector(label_selector)
        )
        fs = (
            field_selector
            if isinstance(field_selector, FieldSelector)
            else parse_field_selector(field_selector)
        )
    except SelectorError as e:
        raise ApiError.bad_request(str(e)) from None
    return ls, fs


def _check_fields(info: ResourceInfo, fs: FieldSelector) -> None:
    bad = resources.check_field_selector(info, [p for p, _, _ in fs.terms])
    if bad is not None:
        raise ApiError.bad_request(f"field label not supported: {bad}")


def _spec_of(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """What `generation` tracks: everything but metadata and (when a subresource) status."""
    skip = {"metadata", "apiVersion", "kind"}
    if info.has_status or not info.is_custom:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from managedFields: such a write is a no-op (no new resourceVersion, no event)."""

    def strip(o: dict[str, Any]) -> dict[str, Any]:
        o = dict(o)
        o["metadata"] = {k: v for k, v in (o.get("metadata") or {}).items() if k != "managedFields"}
        o.pop("apiVersion", None)
        return o

    return strip(a) == strip(b)


def _fields_of(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return {}
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = body.get("metadata")
    if isinstance(meta, dict):
        kept = {k: meta[k] for k in ("labels", "annotations", "finalizers", "ownerReferences") if k in meta}
        if kept:
            body["metadata"] = kept
        else:
            body.pop("metadata")
    return patching.field_set(body)


def _managed_entry(
    manager: str | None, operation: str, api_version: str, obj: Any, subresource: str = ""
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "manager": manager or "unknown",
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": _fields_of(obj),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _update_managed(
    entries: list[dict[str, Any]],
    manager: str | None,
    operation: str,
    api_version: str,
    obj: Any,
    subresource: str,
) -> list[dict[str, Any]]:
    manager = manager or "unknown"
    out = [
        copy.deepcopy(e)
        for e in entries
        if not (
            e.get("manager") == manager
            and e.get("operation") == operation
            and e.get("subresource", "") == subresource
        )
    ]
    if subresource == "status" and isinstance(obj, dict):
        obj = {"status": obj.get("status")}
    out.append(_managed_entry(manager, operation, api_version, obj, subresource))
    return out


def random_suffix(n: int = 5) -> str:
    """Random lowercase suffix as used in generated names."""
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))
