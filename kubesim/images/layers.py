"""Image layers on the node, stored the way containerd's overlay snapshotter stores them.

A layer is a directory holding what one build step changed, in overlayfs "upper" form: new and
changed files as they are, a deleted path as a 0/0 character device (a whiteout), a directory whose
lower contents are hidden marked with the `trusted.overlay.opaque` xattr. An image is its config
plus the ordered list of its layer ids, bottom first.

Invariants:
* A committed layer is never written again: it is created under a temporary name and renamed into
  place, and every reader (a build's overlay lower, an image's flattened rootfs) only reads it.
  Two builds committing the same id keep the first; the second's copy is discarded.
* A layer id is the build cache key of the step that made it (see `cache_key`), so "is this step
  cached" is "does this layer exist", exactly like BuildKit's cache keyed by the parent, the
  instruction and the digest of the files it brings in.
* `flatten` builds an image rootfs from hard links to the layers' files, so an image costs no copy
  of its bytes; kubesim never writes into a flattened rootfs (pods get their own copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["LayerStore", "cache_key", "content_digest", "tree_bytes", "LAYER_DIR_ENV"]

# Where builders and the kubelet find the layer store when it is not `<image store>/.layers`.
LAYER_DIR_ENV = "KUBESIM_LAYER_DIR"
_OPAQUE = "trusted.overlay.opaque"


def cache_key(parent: str, *parts: str) -> str:
    """The id of the layer a step makes: a digest of the parent layer's id and the step's parts."""
    h = hashlib.sha256(parent.encode())
    for part in parts:
        h.update(b"\0")
        h.update(part.encode())
    return h.hexdigest()[:32]


def content_digest(paths: Iterable[tuple[str, Path]]) -> str:
    """A digest of files as COPY sees them: relative name, type, mode bits and bytes (no times).

    `paths` yields (name in the image, path on disk); directories are walked in sorted order.
    """
    h = hashlib.sha256()

    def add(name: str, path: Path) -> None:
        st = path.lstat()
        h.update(f"{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode) & 0o111}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        elif stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(path)):
                add(f"{name}/{child}", path / child)
        h.update(b"\n")

    for name, path in paths:
        add(name, path)
    return h.hexdigest()


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LayerStore:
    """The node's layers: `<root>/<id>/` each, plus `<root>/.cache/<name>/` for RUN cache mounts."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, layer_id: str) -> Path:
        return self.root / layer_id

    def exists(self, layer_id: str) -> bool:
        return (self.root / layer_id / ".kubesim-layer.json").is_file()

    def scratch(self, prefix: str = ".tmp-") -> Path:
        """A new empty directory on the layers' filesystem (an overlay upper/work must be on it)."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))

    def commit(self, upper: Path, layer_id: str, description: str) -> Path:
        """Moves the finished `upper` directory into place as layer `layer_id` (first commit wins)."""
        meta = {"id": layer_id, "step": description, "size": tree_bytes(upper)}
        # The marker is outside the layer's files: the layer is `<id>/fs`, the marker `<id>/...json`.
        holder = self.scratch(".commit-")
        try:
            os.rename(upper, holder / "fs")
            (holder / ".kubesim-layer.json").write_text(json.dumps(meta))
            try:
                os.rename(holder, self.root / layer_id)
            except OSError:
                if not self.exists(layer_id):
                    raise
                shutil.rmtree(holder, ignore_errors=True)
        except BaseException:
            shutil.rmtree(holder, ignore_errors=True)
            raise
        return self.fs(layer_id)

    def fs(self, layer_id: str) -> Path:
        """The layer's files (an overlay lower directory)."""
        return self.root / layer_id / "fs"

    def cache_dir(self, name: str) -> Path:
        """A RUN `--mount=type=cache` directory, shared by every build on this node."""
        safe = hashlib.sha256(name.encode()).hexdigest()[:16]
        folder = self.root / ".cache" / safe
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def size(self, layer_id: str) -> int:
        try:
            return int(json.loads((self.root / layer_id / ".kubesim-layer.json").read_text()).get("size", 0))
        except (OSError, ValueError):
            return 0

    def find(self, layers: Sequence[str], rel: str) -> Path | None:
        """Where `rel` (relative to the rootfs) is in the top-most of `layers` that has it, else None."""
        parts = [p for p in rel.strip("/").split("/") if p]
        for layer_id in reversed(layers):
            base = self.fs(layer_id)
            current = base
            hidden = False
            for i, part in enumerate(parts):
                current = current / part
                try:
                    st = current.lstat()
                except OSError:
                    current = None  # type: ignore[assignment]
                    break
                if _is_whiteout(st):
                    hidden = True
                    break
                if i < len(parts) - 1 and stat.S_ISDIR(st.st_mode) and _is_opaque(current):
                    # An opaque directory above the path hides it in every lower layer.
                    rest = base.joinpath(*parts)
                    return rest if os.path.lexists(rest) else None
            if hidden:
                return None
            if current is not None and os.path.lexists(current):
                return current
        return None

    def flatten(self, layers: Sequence[str], dest: Path) -> None:
        """Builds `dest` (which must not exist) as the merged view of `layers`, by hard links."""
        dest.mkdir(parents=True)
        for layer_id in layers:
            _apply(self.fs(layer_id), dest)


def _apply(layer: Path, dest: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(dirpath, layer)
        target_dir = dest if rel == "." else dest / rel
        if rel != ".":
            if _is_opaque(Path(dirpath)) and target_dir.is_dir() and not target_dir.is_symlink():
                shutil.rmtree(target_dir)
            if target_dir.is_symlink() or (target_dir.exists() and not target_dir.is_dir()):
                target_dir.unlink()
            if not target_dir.exists():
                target_dir.mkdir()
                shutil.copystat(dirpath, target_dir, follow_symlinks=False)
        for name in list(dirnames):
            src = Path(dirpath) / name
            if src.is_symlink():
                # os.walk lists a symlink to a directory among dirnames: it is a file entry here.
                dirnames.remove(name)
                filenames.append(name)
        for name in filenames:
            src = Path(dirpath) / name
            target = target_dir / name
            st = src.lstat()
            if os.path.lexists(target):
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if _is_whiteout(st):
                continue
            try:
                os.link(src, target, follow_symlinks=False)
            except OSError:
                # Another filesystem (a layer store configured elsewhere): a copy, same bytes.
                shutil.copy2(src, target, follow_symlinks=False)


def tree_bytes(root: Path) -> int:
    """The bytes of the files under `root` (what a layer or a build context weighs)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
