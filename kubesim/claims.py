"""PersistentVolumeClaims: dynamic provisioning to a folder, binding, protection and reclaim.

What the real control plane does with its PV controller, an external provisioner (like
local-path) and the pvc-protection controller, for one node:

* At start a default StorageClass `standard` exists (annotation
  `storageclass.kubernetes.io/is-default-class: "true"`, provisioner `kubesim.dev/host-path`,
  reclaimPolicy Delete, volumeBindingMode Immediate), as on kind.
* A claim is `Pending` until bound. A claim naming that class (or none, the default class then)
  is provisioned at once: a PersistentVolume `pvc-<claim uid>` (hostPath on a new folder under the
  node's state dir, the claim's requested capacity, its accessModes, claimRef, phase Bound), and
  the claim gets `spec.volumeName`, the bind annotations and `status.phase: Bound` with
  `capacity` and `accessModes`. A claim naming a class that does not exist stays Pending with a
  `ProvisioningFailed` Warning (`storageclass.storage.k8s.io "X" not found`); one with
  `storageClassName: ""` binds only to an existing Available PV of no class (`spec.volumeName` or
  the first that is large enough and offers the access modes), else stays Pending with
  `FailedBinding` ("no persistent volumes available for this claim and no storage class is set").
* A bound claim may ask for more storage when its class has `allowVolumeExpansion: true` (the API
  server refuses a smaller request, and any growth of another claim, as upstream does); its PV's
  capacity and its `status.capacity` then grow at once.
* Every claim carries the `kubernetes.io/pvc-protection` finalizer (the API server adds it at
  create). Deleting a claim marks it; the finalizer is removed once no pod that is not terminal
  (Succeeded/Failed) uses it, and the claim goes. Then, with reclaim policy Delete, its PV and the
  data folder go too; with Retain the PV becomes Released and the data stays.

The kubelet mounts a claim through its bound PV's hostPath (`kubesim/kubelet/volumes.py`); the
scheduler keeps a pod whose claim is missing, being deleted or not bound Pending
(`kubesim.kubelet.scheduler.claims_problem`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubesim.errors import ApiError
from kubesim.kubelet.scheduler import pod_claims
from kubesim.store import PODS, Store, WatchEvent

__all__ = ["ClaimController", "PVCS", "PVS", "STORAGE_CLASSES", "PROTECTION", "PROVISIONER"]

log = logging.getLogger("kubesim.claims")

PVCS = ("", "v1", "persistentvolumeclaims")
PVS = ("", "v1", "persistentvolumes")
STORAGE_CLASSES = ("storage.k8s.io", "v1", "storageclasses")
PROTECTION = "kubernetes.io/pvc-protection"
PROVISIONER = "kubesim.dev/host-path"
DEFAULT_CLASS = "standard"
DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def _storage(obj: dict[str, Any]) -> str:
    return str((((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage") or "")


class ClaimController:
    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self._unsubs: list[Callable[[], None]] = []
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._said: dict[str, tuple[str, str]] = {}  # claim uid -> the last Pending reason told

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not any(
            (c["metadata"].get("annotations") or {}).get(DEFAULT_ANNOTATION) == "true"
            for c in self.store.list(STORAGE_CLASSES)[0]
        ):
            with contextlib.suppress(ApiError):
                self.store.create(
                    STORAGE_CLASSES,
                    {
                        "apiVersion": "storage.k8s.io/v1",
                        "kind": "StorageClass",
                        "metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_ANNOTATION: "true"}},
                        "provisioner": PROVISIONER,
                        "reclaimPolicy": "Delete",
                        "volumeBindingMode": "Immediate",
                    },
                )
        self._unsubs.append(self.store.subscribe(PVCS, self._on_claim))
        self._unsubs.append(self.store.subscribe(PODS, self._on_pod))
        self._unsubs.append(self.store.subscribe(PVS, self._on_volume))
        for c in self.store.list(PVCS)[0]:
            self._mark(c["metadata"].get("namespace", "default"), c["metadata"]["name"])
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        for u in self._unsubs:
            u()
        self._unsubs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _mark(self, ns: str, name: str) -> None:
        self._dirty.add((ns, name))
        self._wake.set()

    def _on_claim(self, ev: WatchEvent) -> None:
        md = ev.object["metadata"]
        if ev.type == "DELETED":
            self._reclaim(ev.object)
            return
        self._mark(md.get("namespace", "default"), md["name"])

    def _on_volume(self, ev: WatchEvent) -> None:
        # A volume made available may bind a Pending claim.
        if (
            ev.type == "DELETED"
            or ((ev.object.get("status") or {}).get("phase") or "Available") != "Available"
        ):
            return
        for c in self.store.list(PVCS)[0]:
            if (c.get("status") or {}).get("phase") != "Bound":
                self._mark(c["metadata"].get("namespace", "default"), c["metadata"]["name"])

    def _on_pod(self, ev: WatchEvent) -> None:
        # A pod ending or going may release a claim being deleted.
        ns = ev.object["metadata"].get("namespace", "default")
        for name in pod_claims(ev.object):
            self._mark(ns, name)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for ns, name in sorted(dirty):
                try:
                    self.sync(ns, name)
                except Exception:
                    log.exception("claim %s/%s: sync failed", ns, name)

    def _event(self, claim: dict[str, Any], etype: str, reason: str, message: str) -> None:
        with contextlib.suppress(ApiError):
            self.store.add_event(
                claim["metadata"].get("namespace", "default"),
                {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "metadata": claim["metadata"]},
                reason,
                message,
                type=etype,
                component="persistentvolume-controller",
            )

    def sync(self, ns: str, name: str) -> None:
        claim = self.store.get(PVCS, ns, name)
        if claim is None:
            return
        if claim["metadata"].get("deletionTimestamp"):
            self._release(claim)
            return
        if (claim.get("status") or {}).get("phase") == "Bound":
            self._expand(claim)
            return
        self._bind(claim)

    def _expand(self, claim: dict[str, Any]) -> None:
        """A bound claim asking for more than it has (the API server let only an expandable class's
        claim grow): the volume grows at once, its folder has no size to change."""
        from kubesim.quantity import parse_quantity

        md = claim["metadata"]
        wanted = _storage(claim)
        has = str(((claim.get("status") or {}).get("capacity") or {}).get("storage") or "")
        if not wanted or not has or parse_quantity(wanted) <= parse_quantity(has):
            return
        pv_name = (claim.get("spec") or {}).get("volumeName")
        if pv_name:

            def grow_pv(o: dict[str, Any]) -> None:
                o["spec"].setdefault("capacity", {})["storage"] = wanted

            with contextlib.suppress(ApiError):
                self.store.update(PVS, None, pv_name, grow_pv)

        def grow(o: dict[str, Any]) -> None:
            o["status"].setdefault("capacity", {})["storage"] = wanted

        with contextlib.suppress(ApiError):
            self.store.update_status(PVCS, md.get("namespace", "default"), md["name"], grow)
        self._event(claim, "Normal", "VolumeResizeSuccessful", f"resize volume {pv_name} succeeded")

    # ------------------------------------------------------------------ binding

    def _bind(self, claim: dict[str, Any]) -> None:
        spec = claim.get("spec") or {}
        class_name = spec.get("storageClassName")
        if class_name == "" or spec.get("volumeName"):
            pv = self._static_volume(claim)
            if pv is None:
                message = (
                    f'volume "{spec["volumeName"]}" not found'
                    if spec.get("volumeName")
                    else "no persistent volumes available for this claim and no storage class is set"
                )
                self._pending(claim, "FailedBinding", message)
                return
        else:
            sc = self.store.get(STORAGE_CLASSES, None, class_name) if class_name else self._default_class()
            if sc is None:
                if class_name:
                    self._pending(
                        claim, "ProvisioningFailed", f'storageclass.storage.k8s.io "{class_name}" not found'
                    )
                else:
                    self._pending(
                        claim,
                        "FailedBinding",
                        "no persistent volumes available for this claim and no storage class is set",
                    )
                return
            if sc.get("provisioner") != PROVISIONER:
                self._pending(
                    claim,
                    "ExternalProvisioning",
                    f"Waiting for a volume to be created either by the external provisioner '{sc.get('provisioner')}' "
                    "or manually by the system administrator. If volume creation is delayed, please verify that "
                    "the provisioner is running and correctly registered.",
                    "Normal",
                )
                return
            pv = self._provision(claim, sc)
        self._complete(claim, pv)

    def _default_class(self) -> dict[str, Any] | None:
        for c in self.store.list(STORAGE_CLASSES)[0]:
            if (c["metadata"].get("annotations") or {}).get(DEFAULT_ANNOTATION) == "true":
                return c
        return None

    def _pending(self, claim: dict[str, Any], reason: str, message: str, etype: str = "Warning") -> None:
        md = claim["metadata"]
        key = (reason, message)
        if self._said.get(md["uid"]) == key:
            return
        self._said[md["uid"]] = key
        self._event(claim, etype, reason, message)
        if (claim.get("status") or {}).get("phase") != "Pending":

            def mutate(o: dict[str, Any]) -> None:
                o["status"] = {"phase": "Pending"}

            with contextlib.suppress(ApiError):
                self.store.update_status(PVCS, md.get("namespace", "default"), md["name"], mutate)

    def _static_volume(self, claim: dict[str, Any]) -> dict[str, Any] | None:
        from kubesim.quantity import parse_quantity

        spec = claim.get("spec") or {}
        want = set(spec.get("accessModes") or [])
        size = parse_quantity(_storage(claim) or "0")
        for pv in sorted(self.store.list(PVS)[0], key=lambda p: p["metadata"]["name"]):
            pspec = pv.get("spec") or {}
            if spec.get("volumeName") and pv["metadata"]["name"] != spec["volumeName"]:
                continue
            if (pv.get("status") or {}).get("phase", "Available") != "Available" or pspec.get("claimRef"):
                continue
            if (pspec.get("storageClassName") or "") != (spec.get("storageClassName") or ""):
                continue
            if not want <= set(pspec.get("accessModes") or []):
                continue
            if parse_quantity(str((pspec.get("capacity") or {}).get("storage") or "0")) < size:
                continue
            return pv
        return None

    def _provision(self, claim: dict[str, Any], sc: dict[str, Any]) -> dict[str, Any]:
        md = claim["metadata"]
        spec = claim.get("spec") or {}
        name = f"pvc-{md['uid']}"
        folder = self.data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)  # a fresh filesystem's root (see kubesim/kubelet/volumes.py)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                "finalizers": ["kubernetes.io/pv-protection"],
            },
            "spec": {
                "capacity": {"storage": _storage(claim)},
                "accessModes": list(spec.get("accessModes") or []),
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                "storageClassName": sc["metadata"]["name"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
            },
        }
        try:
            created = self.store.create(PVS, pv, None, field_manager="kubesim-provisioner")
        except ApiError as e:
            if e.code != 409:
                raise
            created = self.store.read(PVS, None, name)
        self._event(claim, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {name}")
        return created

    def _complete(self, claim: dict[str, Any], pv: dict[str, Any]) -> None:
        md = claim["metadata"]
        ns = md.get("namespace", "default")
        pv_name = pv["metadata"]["name"]
        pspec = pv.get("spec") or {}

        def bind_pv(o: dict[str, Any]) -> None:
            o["spec"]["claimRef"] = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": ns,
                "name": md["name"],
                "uid": md["uid"],
            }
            o["status"] = {"phase": "Bound"}

        self.store.update(PVS, None, pv_name, bind_pv)

        def bind_claim(o: dict[str, Any]) -> None:
            if o["metadata"]["uid"] != md["uid"]:
                return
            annotations = o["metadata"].setdefault("annotations", {})
            annotations["pv.kubernetes.io/bind-completed"] = "yes"
            annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
            if pv["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by"):
                annotations["volume.beta.kubernetes.io/storage-provisioner"] = PROVISIONER
                annotations["volume.kubernetes.io/storage-provisioner"] = PROVISIONER
            o["spec"]["volumeName"] = pv_name
            o["spec"].setdefault("storageClassName", pspec.get("storageClassName") or "")
            o["status"] = {
                "phase": "Bound",
                "accessModes": list(pspec.get("accessModes") or []),
                "capacity": dict(pspec.get("capacity") or {}),
            }

        self.store.update(PVCS, ns, md["name"], bind_claim)

    # ------------------------------------------------------------------ protection and reclaim

    def _in_use(self, claim: dict[str, Any]) -> bool:
        ns = claim["metadata"].get("namespace", "default")
        pods, _ = self.store.list(PODS, ns)
        return any(
            claim["metadata"]["name"] in pod_claims(p)
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            for p in pods
        )

    def _release(self, claim: dict[str, Any]) -> None:
        md = claim["metadata"]
        if PROTECTION not in (md.get("finalizers") or []) or self._in_use(claim):
            return

        def drop(o: dict[str, Any]) -> None:
            o["metadata"]["finalizers"] = [
                f for f in o["metadata"].get("finalizers") or [] if f != PROTECTION
            ]

        with contextlib.suppress(ApiError):
            self.store.update(PVCS, md.get("namespace", "default"), md["name"], drop)

    def _reclaim(self, claim: dict[str, Any]) -> None:
        pv_name = (claim.get("spec") or {}).get("volumeName")
        if not pv_name:
            return
        pv = self.store.get(PVS, None, pv_name)
        if (
            pv is None
            or ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") != claim["metadata"]["uid"]
        ):
            return
        if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
            if path and Path(path).parent == self.data_dir:
                shutil.rmtree(path, ignore_errors=True)

            def unprotect(o: dict[str, Any]) -> None:
                o["metadata"]["finalizers"] = []

            with contextlib.suppress(ApiError):
                self.store.update(PVS, None, pv_name, unprotect)
                self.store.delete(PVS, None, pv_name)
            return

        def released(o: dict[str, Any]) -> None:
            o["status"] = {"phase": "Released"}

        with contextlib.suppress(ApiError):
            self.store.update(PVS, None, pv_name, released)
