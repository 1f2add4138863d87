"""Fetch, check and unpack a build context: the program of the build Job's init container.

Stdlib only, and run as `python3 -c <this file's source>`, so any image with python3 is a utility
image. It reads NBD_CONTEXT_URL (a signed GET URL: never printed), NBD_CONTEXT_MD5 and NBD_WORKSPACE,
streams the object to a temporary file while hashing it, refuses content whose MD5 differs (exit 2,
nothing unpacked), then unpacks the tar.gz into the workspace, refusing absolute paths, `..` and
links that leave it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator


def _safe_members(archive: tarfile.TarFile, root: str) -> Iterator[tarfile.TarInfo]:
    """Yields the members that stay inside `root`; raises on any that would leave it."""
    root = os.path.realpath(root)
    for member in archive.getmembers():
        target = os.path.realpath(os.path.join(root, member.name))
        if os.path.isabs(member.name) or not (target == root or target.startswith(root + os.sep)):
            raise ValueError("unsafe path in context: " + member.name)
        if member.issym() or member.islnk():
            link = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
            if os.path.isabs(member.linkname) or not link.startswith(root + os.sep):
                raise ValueError("unsafe link in context: " + member.name)
        if member.isdev():
            raise ValueError("device file in context: " + member.name)
        yield member


def fetch(url: str, md5: str, workspace: str) -> int:
    """Downloads, checks and unpacks; returns a process exit code."""
    os.makedirs(workspace, exist_ok=True)
    digest = hashlib.md5()
    size = 0
    started = time.monotonic()
    with tempfile.TemporaryFile() as spool:
        attempt = 0
        while True:
            attempt += 1
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    while True:
                        chunk = response.read(1 << 20)
                        if not chunk:
                            break
                        digest.update(chunk)
                        size += len(chunk)
                        spool.write(chunk)
                break
            except urllib.error.HTTPError as e:
                print("nbd-fetch: the store answered HTTP %d for the context" % e.code, flush=True)
                if e.code < 500 or attempt >= 3:
                    return 1
            except OSError as e:
                print("nbd-fetch: download failed: %s" % e, flush=True)
                if attempt >= 3:
                    return 1
            digest = hashlib.md5()
            size = 0
            spool.seek(0)
            spool.truncate()
            time.sleep(attempt)
        got = digest.hexdigest()
        if got != md5:
            print(
                "nbd-fetch: MD5 mismatch: the stored context has MD5 %s, expected %s; "
                "nothing was unpacked" % (got, md5),
                flush=True,
            )
            return 2
        print(
            "nbd-fetch: downloaded %d bytes in %.1fs, MD5 %s verified"
            % (size, time.monotonic() - started, got),
            flush=True,
        )
        spool.seek(0)
        try:
            with tarfile.open(fileobj=spool, mode="r:gz") as archive:
                members = list(_safe_members(archive, workspace))
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(workspace, members=members, filter="data")
                else:
                    archive.extractall(workspace, members=members)
        except (tarfile.TarError, ValueError, OSError) as e:
            print("nbd-fetch: cannot unpack the context: %s" % e, flush=True)
            return 3
    print("nbd-fetch: unpacked %d entries into %s" % (len(members), workspace), flush=True)
    return 0


def main() -> int:
    url = os.environ.get("NBD_CONTEXT_URL", "")
    md5 = os.environ.get("NBD_CONTEXT_MD5", "")
    workspace = os.environ.get("NBD_WORKSPACE", "/workspace")
    if not url or len(md5) != 32:
        print("nbd-fetch: NBD_CONTEXT_URL and NBD_CONTEXT_MD5 must be set", flush=True)
        return 64
    return fetch(url, md5, workspace)


if __name__ == "__main__":
    sys.exit(main())
