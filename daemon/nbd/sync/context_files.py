"""What each packaged build context held, as the sync sees it, kept to seed a sync's ancestor.

A pod replaced (deleted, suspended and resumed) starts with /content as its image has it, that
is the build context that was uploaded, and its sync starts without an ancestor (the ancestor is
bound to the container instance). Without one, every file edited locally since the build looks
changed on both sides and would end as a conflict copy. So at packaging the daemon records each
context file's identity (kind, sha256, size, executable bit, link target: what a sync `Entry`
compares) under the daemon's state directory, keyed by the directory and the archive's MD5, and
a sync without an ancestor is seeded from it (`nbd.sync.reconcile.seed_ancestor`, which says
why that is safe).

The record is read back from the archive itself, so it holds exactly what the image was given.
At most `KEEP` records are kept per directory (the newest); a missing or unreadable record only
means the sync starts without a seed, as it would without this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import uuid

from nbd.sync.snapshot import DIR, Entry, Snapshot

__all__ = ["KEEP", "load", "record", "record_path"]

log = logging.getLogger(__name__)

KEEP = 8
_CHUNK = 1 << 20


def _directory_key(directory: str) -> str:
    return hashlib.sha256(os.path.realpath(directory).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def record_path(store: str, directory: str, md5_hex: str) -> str:
    """Where the record of `directory`'s context with MD5 `md5_hex` lives."""
    return os.path.join(store, _directory_key(directory), f"{md5_hex}.json")


def _entries(archive: str) -> Snapshot:
    out: Snapshot = {}
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            name = member.name.strip("/")
            if not name or name == ".":
                continue
            if member.isdir():
                out[name] = DIR
            elif member.issym():
                out[name] = Entry("symlink", target=member.linkname)
            elif member.isreg():
                f = tar.extractfile(member)
                assert f is not None
                h = hashlib.sha256()
                with f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                out[name] = Entry("file", h.hexdigest(), member.size, bool(member.mode & 0o100))
    return out


def record(store: str, directory: str, md5_hex: str, archive: str, *, keep: int = KEEP) -> bool:
    """Record the entries of the context archive `archive` (MD5 `md5_hex`) of `directory`,
    unless they are recorded already; keep the newest `keep` records of the directory.

    Returns whether a record was written. Raises OSError, or tarfile.TarError, EOFError or
    zlib.error for an archive that is not a whole tar.gz.
    """
    path = record_path(store, directory, md5_hex)
    if os.path.exists(path):
        os.utime(path)  # the newest use keeps it among the `keep`
        return False
    entries = _entries(archive)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    doc = {p: [e.kind, e.digest, e.size, e.executable, e.target] for p, e in entries.items()}
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"md5": md5_hex, "entries": doc}, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    records = sorted(
        (os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".json")),
        key=os.path.getmtime,
        reverse=True,
    )
    for old in records[keep:]:
        try:
            os.unlink(old)
        except OSError:
            pass
    return True


def load(store: str, directory: str, md5_hex: str) -> Snapshot | None:
    """The recorded entries of `directory`'s context `md5_hex`, or None when there is no usable record."""
    if not md5_hex:
        return None
    path = record_path(store, directory, md5_hex)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("md5") != md5_hex:
            return None
        return {
            str(p): Entry(v[0], str(v[1]), int(v[2]), bool(v[3]), str(v[4]))
            for p, v in doc["entries"].items()
        }
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("the build context record %s is unusable (%s); the sync starts without it", path, e)
        return None
