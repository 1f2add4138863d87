"""Shared pieces of the build-context tests: small trees, and reading archives back."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest


def write_tree(root: Path, files: dict[str, bytes | str], *, mtime_ns: int | None = None) -> Path:
    """Creates files (a value of None-like "" for an empty file); keys ending in "/" are empty dirs."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime_ns is not None:
        set_mtimes(root, mtime_ns)
    return root


def set_mtimes(root: Path, mtime_ns: int) -> None:
    for dirpath, dirs, names in os.walk(root):
        for name in names + dirs:
            os.utime(os.path.join(dirpath, name), ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def tree_of(directory: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """path → (kind, permission bits, content or link target) of an extracted tree."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirs, names in os.walk(directory):
        for name in dirs + names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, directory)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("link", 0, os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", st.st_mode & 0o777, b"")
            else:
                out[rel] = ("file", st.st_mode & 0o777, Path(full).read_bytes())
    return out


def extract_gnu(archive: str, dest: Path) -> dict[str, tuple[str, int, bytes | str]]:
    dest.mkdir()
    subprocess.run(["tar", "xzf", archive, "-C", str(dest), "--no-same-owner"], check=True)
    return tree_of(dest)


def extract_python(archive: str, dest: Path) -> dict[str, tuple[str, int, bytes | str]]:
    dest.mkdir()
    with tarfile.open(archive, "r:gz") as t:
        t.extractall(dest, filter="tar")
    return tree_of(dest)


@pytest.fixture
def old_ns() -> int:
    """An mtime old enough not to be "racy" for the manifest cache."""
    import time

    return time.time_ns() - 3600 * 10**9
