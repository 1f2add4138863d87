"""A pod's folders and the bind mounts that put them at container paths.

Under the pod's folder (`<state>/pods/<namespace>_<name>_<uid>/`):
* `volumes/<volume>/`: emptyDir (shared by the pod's containers), secret / configMap /
  downwardAPI / projected volumes materialised as files;
* `fs/<path>/`: the image's top-level rootfs entries (copied at pod start) and working
  directories that do not exist on the host (e.g. `/content`), private to the pod;
* `logs/`: container logs.
hostPath volumes bind the host path; persistentVolumeClaim volumes bind
`<state>/volumes/<namespace>/<claim>/`, which outlives the pod.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

from kubesim.images import Image
from kubesim.images.rootfs import SYSTEM_DIRS
from kubesim.kubelet.namespaces import Mount
from kubesim.kubelet.spec import ConfigError, Lookup

__all__ = ["SYSTEM_DIRS", "prepare_mounts", "effective_workdir"]

# SYSTEM_DIRS: top-level entries of an image rootfs never mounted over this machine's own.


def effective_workdir(container: dict[str, Any], image: Image | None) -> str:
    return container.get("workingDir") or (image.config.workdir if image else "") or "/"


def _write_items(folder: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None, mode: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chosen: list[tuple[str, bytes, int]] = []
    if items:
        for it in items:
            key = it.get("key", "")
            if key in data:
                chosen.append((it.get("path") or key, data[key], int(it.get("mode") or mode)))
    else:
        chosen = [(k, v, mode) for k, v in data.items()]
    for rel, value, m in chosen:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ConfigError(f"volume item path {rel!r} must be relative and must not contain '..'")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(value)
        os.chmod(tmp, m)
        os.replace(tmp, target)


def _object_data(obj: dict[str, Any], secret: bool) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _downward(pod: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, bytes]:
    from kubesim.kubelet.spec import _field

    out: dict[str, bytes] = {}
    for it in items:
        fr = it.get("fieldRef")
        if fr:
            path = fr.get("fieldPath", "")
            if path in ("metadata.labels", "metadata.annotations"):
                d = (pod.get("metadata") or {}).get(path.split(".")[1]) or {}
                out[it["path"]] = "\n".join(f'{k}="{v}"' for k, v in sorted(d.items())).encode()
            else:
                out[it["path"]] = _field(pod, path).encode()
    return out


def _volume_dir(pod: dict[str, Any], vol: dict[str, Any], pod_dir: Path, state_dir: Path, lookup: Lookup) -> Path:
    name = str(vol["name"])
    folder: Path = pod_dir / "volumes" / name
    ns = str(pod["metadata"].get("namespace", "default"))
    if "hostPath" in vol:
        hp = vol["hostPath"] or {}
        path = Path(str(hp.get("path", "")))
        if hp.get("type") in ("DirectoryOrCreate",) and not path.exists():
            path.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            raise ConfigError(f"hostPath type check failed: {path} does not exist")
        return path
    if "persistentVolumeClaim" in vol:
        claim = str((vol["persistentVolumeClaim"] or {}).get("claimName", name))
        folder = state_dir / "volumes" / ns / claim
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    for kind, key, secret in (("Secret", "secret", True), ("ConfigMap", "configMap", False)):
        if key in vol:
            src = vol[key] or {}
            obj_name = src.get("secretName" if secret else "name", "")
            obj = lookup(kind, obj_name)
            if obj is None:
                if src.get("optional"):
                    folder.mkdir(parents=True, exist_ok=True)
                    return folder
                raise ConfigError(f'MountVolume.SetUp failed for volume "{name}" : {kind.lower()} "{obj_name}" not found')
            _write_items(folder, _object_data(obj, secret), src.get("items"), int(src.get("defaultMode") or 0o644))
            return folder
    if "downwardAPI" in vol:
        _write_items(folder, _downward(pod, (vol["downwardAPI"] or {}).get("items") or []), None,
                     int((vol["downwardAPI"] or {}).get("defaultMode") or 0o644))
        return folder
    if "projected" in vol:
        folder.mkdir(parents=True, exist_ok=True)
        for source in (vol["projected"] or {}).get("sources") or []:
            for kind, key, secret in (("Secret", "secret", True), ("ConfigMap", "configMap", False)):
                if key in source:
                    obj = lookup(kind, (source[key] or {}).get("name", ""))
                    if obj is not None:
                        _write_items(folder, _object_data(obj, secret), source[key].get("items"), 0o644)
            if "downwardAPI" in source:
                _write_items(folder, _downward(pod, source["downwardAPI"].get("items") or []), None, 0o644)
            if "serviceAccountToken" in source:
                _write_items(folder, {source["serviceAccountToken"].get("path", "token"): b"kubesim-token"}, None, 0o644)
        return folder
    # emptyDir and anything else kubesim does not model: a per-pod folder.
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prepare_mounts(pod: dict[str, Any], images: dict[str, Image | None], pod_dir: Path, state_dir: Path,
                   lookup: Lookup) -> list[Mount]:
    """Materialise the pod's volumes and image layers; return the bind mounts its sandbox needs.

    `images` maps container name (init containers included) to its resolved image.
    Raises ConfigError when a volume cannot be set up (the kubelet reports FailedMount).
    """
    spec = pod.get("spec") or {}
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    volume_dirs = {v["name"]: _volume_dir(pod, v, pod_dir, state_dir, lookup) for v in spec.get("volumes") or []}
    mounts: dict[str, Mount] = {}
    for c in containers:
        for vm in c.get("volumeMounts") or []:
            vname = vm.get("name", "")
            if vname not in volume_dirs:
                raise ConfigError(f'volume "{vname}" of container "{c.get("name")}" is not defined in the pod')
            src = volume_dirs[vname]
            if vm.get("subPath"):
                src = src / vm["subPath"]
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            target = os.path.normpath(vm.get("mountPath", ""))
            if target not in mounts:
                mounts[target] = Mount(str(src), target, bool(vm.get("readOnly")), src.is_file())
    fs = pod_dir / "fs"
    for c in containers:
        image = images.get(c.get("name", ""))
        if image is not None and image.rootfs is not None and image.rootfs.is_dir():
            for entry in sorted(os.listdir(image.rootfs)):
                target = "/" + entry
                if entry in SYSTEM_DIRS or target in mounts:
                    continue
                dst = fs / entry
                src = image.rootfs / entry
                if not dst.exists() and not dst.is_symlink():
                    if src.is_dir() and not src.is_symlink():
                        shutil.copytree(src, dst, symlinks=True)
                    else:
                        shutil.copy2(src, dst, follow_symlinks=False)
                mounts[target] = Mount(str(dst), target, False, not dst.is_dir())
        wd = os.path.normpath(effective_workdir(c, image))
        covered = any(wd == t or wd.startswith(t.rstrip("/") + "/") for t in mounts)
        if wd != "/" and not covered and _private_workdir(wd):
            dst = fs / wd.lstrip("/")
            dst.mkdir(parents=True, exist_ok=True)
            mounts[wd] = Mount(str(dst), wd)
    return list(mounts.values())


def _private_workdir(path: str) -> bool:
    """Whether a working directory gets a private per-pod folder.

    Yes when it does not exist on the host, or when it is outside the system directories and
    empty on the host (an empty `/content` is a mount point an earlier pod left, not data).
    A non-empty host directory (e.g. a checkout) is used as it is.
    """
    if not os.path.exists(path):
        return True
    top = path.strip("/").split("/")[0]
    if top in SYSTEM_DIRS:
        return False
    try:
        return os.path.isdir(path) and not os.listdir(path)
    except OSError:
        return False


def host_path(container_path: str, mounts: list[Mount]) -> str:
    """Where `container_path` lives on the host given the pod's mounts (no-isolation mode)."""
    p = os.path.normpath(container_path)
    best: Mount | None = None
    for m in mounts:
        t = m.target.rstrip("/") or "/"
        if p == t or p.startswith(t + "/"):
            if best is None or len(t) > len(best.target):
                best = m
    if best is None:
        return p
    rest = p[len(best.target.rstrip("/")):].lstrip("/")
    return os.path.join(best.source, rest) if rest else best.source
