"""The manifest cache: an unchanged directory answers with its previous MD5 after a stat-only walk.

Per context directory (and Dockerfile name) a small JSON record under the daemon's cache directory
holds a digest of the walk — (path, kind, size, mtime_ns, mode, inode, link) of every included
entry, the ignore file's name and contents, the Dockerfile name and the archive format (format
version, level, and the compressor and its version, since compressed bytes depend on them) — with the resulting
MD5, size and spooled archive path. A later walk with the same digest whose archive is still in
the spool with the same size reuses the archive without reading a byte of content.

Racy timestamps: an entry modified within `RACY_NS` before the walk started might change again
within the same timestamp tick without changing its recorded mtime, so such a walk is not
recorded (the next launch packages again; packaging is deterministic, so the MD5 is the same
whenever the content is).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from . import tarformat
from .walk import ContextPlan

__all__ = [
    "FORMAT_VERSION",
    "ManifestRecord",
    "manifest_digest",
    "load",
    "save",
    "record_path",
    "is_racy",
    "invalidate",
]

FORMAT_VERSION = 1
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class ManifestRecord:
    digest: str
    md5_hex: str
    md5_b64: str
    size: int
    files: int
    path: str


def record_path(cache_dir: str, root: str, dockerfile: str) -> str:
    key = hashlib.sha256(f"{root}\0{dockerfile}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_dir, f"context-{key}.json")


def manifest_digest(plan: ContextPlan, level: int) -> str:
    """A digest of everything that determines the archive's bytes, as seen by a stat-only walk."""
    h = hashlib.sha256()
    h.update(
        f"v{FORMAT_VERSION}\0level={level}\0{tarformat.COMPRESSOR}\0"
        f"{plan.dockerfile}\0{plan.ignore_file}\0{plan.ignore_text}\0".encode("utf-8", "surrogateescape")
    )
    lines = "\n".join(["%s\0%d\0%d\0%d\0%d\0%d\0%s" % e for e in plan.entries])
    h.update(lines.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def is_racy(plan: ContextPlan) -> bool:
    """Whether some entry changed so recently that its mtime may not reveal a further change."""
    limit = plan.started_ns - RACY_NS
    return any(e.mtime_ns >= limit for e in plan.entries)


def load(path: str) -> ManifestRecord | None:
    """The stored record, or None when there is none or it is unreadable (then it is rebuilt)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw: dict[str, Any] = json.load(f)
        if raw.get("version") != FORMAT_VERSION:
            return None
        return ManifestRecord(
            digest=str(raw["digest"]),
            md5_hex=str(raw["md5_hex"]),
            md5_b64=str(raw["md5_b64"]),
            size=int(raw["size"]),
            files=int(raw["files"]),
            path=str(raw["path"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(path: str, record: ManifestRecord) -> None:
    """Writes the record atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": FORMAT_VERSION, **record.__dict__}, f)
    os.replace(tmp, path)


def invalidate(path: str) -> None:
    """Forgets the record (e.g. after the store rejected the archive's bytes)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
