"""A pod's volumes: folders made once per pod, and the bind mounts that put them in a container.

Volumes belong to the pod, not to a container instance: they are made when the pod starts and
outlive every container restart (only a new pod gets new ones). Under the pod's folder
(`<state>/pods/<namespace>_<name>_<uid>/`):
* `volumes/<volume>/`: emptyDir (shared by the pod's containers), secret / configMap /
  downwardAPI / projected volumes materialised as files;
* `containers/<container>/<instance>/`: each container instance's own filesystem
  (`kubesim.kubelet.containerfs`), removed when the instance ends;
* `logs/`: container logs.
hostPath volumes bind the host path; persistentVolumeClaim volumes bind the folder of the
claim's bound PersistentVolume (its hostPath, made by `kubesim.claims`), which outlives the pod;
a claim that is missing or not bound is a FailedMount. A container gets the volumes its
own volumeMounts name, at their paths (a subPath folder is made when the container starts, as the
kubelet does: with the mode of the volume's root, so an fsGroup's access reaches into it).

Ownership and modes follow the kubelet and common storage:
* an emptyDir is a root-owned directory of mode 0777; one with `medium: Memory` is a tmpfs of its
  sizeLimit mounted there in the pod's sandbox (`memory_volumes`; writes beyond it fail with ENOSPC);
* a container that mounts nothing at /dev/shm gets the pod's own 64 MiB tmpfs there (SHM_SIZE), as
  containerd and Docker give every pod, shared by its containers;
* a persistentVolumeClaim's root is root-owned, mode 0755, as a fresh ext4 filesystem's is: a
  non-root container can write it only through the pod's fsGroup;
* with `securityContext.fsGroup`, every volume but hostPath is given to that group the way the
  kubelet's volume ownership management does: each file and directory gets the group, group read
  and write (read only for a secret, configMap, downwardAPI or projected volume), and directories
  also group execute and the setgid bit, so files made later inherit the group. With
  `fsGroupChangePolicy: OnRootMismatch` a volume whose root already has the group and the modes is
  left alone (a large claim is not walked at every start).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from kubesim.kubelet.namespaces import Mount
from kubesim.kubelet.spec import ConfigError, Lookup

__all__ = [
    "pod_volumes",
    "read_only_volumes",
    "volume_mounts",
    "set_volume_ownership",
    "memory_volumes",
    "SHM_SIZE",
    "SHM_PATH",
]

# A container's /dev/shm when the pod mounts nothing there: containerd's and Docker's default.
SHM_SIZE = 64 * 2**20
SHM_PATH = "/dev/shm"

EMPTY_DIR_MODE = 0o777
CLAIM_ROOT_MODE = 0o755
_RW, _RO, _X = 0o660, 0o440, 0o110
# Volumes the kubelet writes itself (atomic writer): their files stay read-only to the group.
_READ_ONLY_KINDS = ("secret", "configMap", "downwardAPI", "projected")


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


def _volume_dir(
    pod: dict[str, Any], vol: dict[str, Any], pod_dir: Path, state_dir: Path, lookup: Lookup
) -> Path:
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
        claim_name = str((vol["persistentVolumeClaim"] or {}).get("claimName", name))
        return _claim_dir(ns, name, claim_name, lookup)
    for kind, key, secret in (("Secret", "secret", True), ("ConfigMap", "configMap", False)):
        if key in vol:
            src = vol[key] or {}
            obj_name = src.get("secretName" if secret else "name", "")
            obj = lookup(kind, obj_name)
            if obj is None:
                if src.get("optional"):
                    folder.mkdir(parents=True, exist_ok=True)
                    return folder
                raise ConfigError(
                    f'MountVolume.SetUp failed for volume "{name}" : {kind.lower()} "{obj_name}" not found'
                )
            _write_items(
                folder, _object_data(obj, secret), src.get("items"), int(src.get("defaultMode") or 0o644)
            )
            return folder
    if "downwardAPI" in vol:
        _write_items(
            folder,
            _downward(pod, (vol["downwardAPI"] or {}).get("items") or []),
            None,
            int((vol["downwardAPI"] or {}).get("defaultMode") or 0o644),
        )
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
                _write_items(
                    folder,
                    {source["serviceAccountToken"].get("path", "token"): b"kubesim-token"},
                    None,
                    0o644,
                )
        return folder
    # emptyDir and anything else kubesim does not model: a per-pod folder, open to every user.
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, EMPTY_DIR_MODE)
    return folder


def _claim_dir(ns: str, volume: str, claim_name: str, lookup: Lookup) -> Path:
    """The folder of the PersistentVolume bound to claim `claim_name` (its hostPath)."""
    prefix = (
        f"Unable to attach or mount volumes: unmounted volumes=[{volume}], unattached volumes=[], "
        f"failed to process volumes=[{volume}]: error processing PVC {ns}/{claim_name}: "
    )
    claim = lookup("PersistentVolumeClaim", claim_name)
    if claim is None:
        raise ConfigError(f'{prefix}persistentvolumeclaim "{claim_name}" not found')
    pv_name = (claim.get("spec") or {}).get("volumeName")
    if (claim.get("status") or {}).get("phase") != "Bound" or not pv_name:
        raise ConfigError(f"{prefix}PVC is not bound")
    pv = lookup("PersistentVolume", str(pv_name))
    path = (((pv or {}).get("spec") or {}).get("hostPath") or {}).get("path")
    if pv is None or not path:
        raise ConfigError(f'{prefix}persistentvolume "{pv_name}" not found or has no hostPath')
    folder = Path(str(path))
    if not folder.exists():
        folder.mkdir(parents=True)
        os.chmod(folder, CLAIM_ROOT_MODE)
    return folder


def _needs_change(root: Path, gid: int, read_only: bool) -> bool:
    """OnRootMismatch: whether the volume's root lacks the group or the modes."""
    st = root.lstat()
    want = (_RO if read_only else _RW) | _X | 0o2000
    return st.st_gid != gid or (st.st_mode & want) != want


def set_volume_ownership(root: Path, gid: int, read_only: bool, policy: str = "Always") -> None:
    """Give the volume at `root` to group `gid` as the kubelet does for a pod's fsGroup."""
    if policy == "OnRootMismatch" and not _needs_change(root, gid, read_only):
        return
    mask = _RO if read_only else _RW
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [None, *filenames, *dirnames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(path)
            os.lchown(path, -1, gid)
            if os.path.islink(path):
                continue
            is_dir = os.path.isdir(path)
            if name is not None and is_dir:
                continue  # os.walk visits it as a dirpath next
            bits = mask | (_X | 0o2000 if is_dir else 0)
            os.chmod(path, (st.st_mode & 0o7777) | bits)


def pod_volumes(pod: dict[str, Any], pod_dir: Path, state_dir: Path, lookup: Lookup) -> dict[str, Path]:
    """Materialise the pod's volumes; their folders by volume name.

    Raises ConfigError when a volume cannot be set up or a container mounts a volume the pod
    does not define (the kubelet reports FailedMount).
    """
    spec = pod.get("spec") or {}
    volume_dirs = {
        v["name"]: _volume_dir(pod, v, pod_dir, state_dir, lookup) for v in spec.get("volumes") or []
    }
    sc = spec.get("securityContext") or {}
    if sc.get("fsGroup") is not None:
        policy = str(sc.get("fsGroupChangePolicy") or "Always")
        for v in spec.get("volumes") or []:
            if "hostPath" in v:
                continue
            read_only = any(kind in v for kind in _READ_ONLY_KINDS)
            set_volume_ownership(volume_dirs[v["name"]], int(sc["fsGroup"]), read_only, policy)
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for vm in c.get("volumeMounts") or []:
            if vm.get("name", "") not in volume_dirs:
                raise ConfigError(
                    f'volume "{vm.get("name", "")}" of container "{c.get("name")}" is not defined in the pod'
                )
    return volume_dirs


def volume_mounts(
    container: dict[str, Any], volume_dirs: dict[str, Path], read_only: frozenset[str] = frozenset()
) -> list[Mount]:
    """The bind mounts of `container`'s volumeMounts (the first mount of a path wins).

    A volume named in `read_only` (a persistentVolumeClaim source with `readOnly: true`) is mounted
    read-only whatever the volumeMount says, as the kubelet does.

    Raises ConfigError for a subPath leaving its volume (CreateContainerConfigError).
    """
    mounts: dict[str, Mount] = {}
    for vm in container.get("volumeMounts") or []:
        src = volume_dirs[vm.get("name", "")]
        root = src
        if vm.get("subPath"):
            sub = str(vm["subPath"])
            if sub.startswith("/") or ".." in Path(sub).parts:
                raise ConfigError(f"subPath {sub!r} must be a relative path without '..'")
            src = src / sub
            if not src.exists():
                src.mkdir(parents=True, exist_ok=True)
                os.chmod(src, root.stat().st_mode & 0o7777)
        target = os.path.normpath(vm.get("mountPath", ""))
        if target not in mounts:
            ro = bool(vm.get("readOnly")) or vm.get("name", "") in read_only
            mounts[target] = Mount(str(src), target, ro, src.is_file())
    return list(mounts.values())


def memory_volumes(pod: dict[str, Any]) -> dict[str, int | None]:
    """The pod's emptyDir volumes with `medium: Memory`, each with its size in bytes: its sizeLimit,
    else the pod's memory limit (the sum of its containers'), else None (the kernel's default), as
    the kubelet sizes the tmpfs it mounts."""
    from kubesim.quantity import parse_quantity

    spec = pod.get("spec") or {}
    limits = [
        ((c.get("resources") or {}).get("limits") or {}).get("memory") for c in spec.get("containers") or []
    ]
    pod_limit = int(sum(parse_quantity(str(m)) for m in limits)) if limits and all(limits) else None
    out: dict[str, int | None] = {}
    for v in spec.get("volumes") or []:
        empty = v.get("emptyDir")
        if isinstance(empty, dict) and empty.get("medium") == "Memory":
            size = empty.get("sizeLimit")
            out[str(v["name"])] = int(parse_quantity(str(size))) if size not in (None, "") else pod_limit
    return out


def read_only_volumes(pod: dict[str, Any]) -> frozenset[str]:
    """The pod's volumes whose source forces read-only mounts (persistentVolumeClaim.readOnly)."""
    return frozenset(
        str(v["name"])
        for v in (pod.get("spec") or {}).get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("readOnly")
    )
