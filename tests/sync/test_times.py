"""Local file times for the files a pod got from its image: only metadata, only where the bytes agree."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbd.sync import times

LOCAL_NS = 1_700_000_000_123_456_789  # 2023-11-14, a plausible local mtime
POD_NS = 1_760_000_000_000_000_000  # what the image (or a write in the pod) gave


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pod_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    for rel, text in {
        "same.txt": "abc",
        "sub/deep.py": "x = 1\n",
        "edited.txt": "new",
        "grown.txt": "abcd",
    }.items():
        (root / rel).write_text(text)
    for rel in ("same.txt", "sub/deep.py", "grown.txt", "edited.txt", "sub", "."):
        os.utime(root / rel, ns=(POD_NS, POD_NS))
    (root.parent / "outside.txt").write_text("abc")
    os.utime(root.parent / "outside.txt", ns=(POD_NS, POD_NS))


@pytest.mark.parametrize(
    ("entry", "path", "expected"),
    [
        (("same.txt", 3, LOCAL_NS, _sha("abc")), "same.txt", LOCAL_NS),  # same bytes: local time
        (("sub/deep.py", 6, LOCAL_NS, _sha("x = 1\n")), "sub/deep.py", LOCAL_NS),
        (("sub", -1, LOCAL_NS, ""), "sub", LOCAL_NS),  # a directory on both sides
        (("edited.txt", 3, LOCAL_NS, _sha("old")), "edited.txt", POD_NS),  # other bytes: left alone
        (("grown.txt", 3, LOCAL_NS, _sha("abc")), "grown.txt", POD_NS),  # other size: left alone
        (("sub", 3, LOCAL_NS, _sha("abc")), "sub", POD_NS),  # a file here, a directory there
        (("missing.txt", 3, LOCAL_NS, _sha("abc")), None, None),
        ((".", -1, LOCAL_NS, ""), ".", POD_NS),  # the root itself: never
        (("../outside.txt", 3, LOCAL_NS, _sha("abc")), "../outside.txt", POD_NS),  # outside the root: ignored
    ],
)
def test_restore_script_sets_times_only_where_the_bytes_agree(
    tmp_path: Path, entry: times.Entry, path: str | None, expected: int | None
) -> None:
    root = tmp_path / "content"
    _pod_tree(root)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    command = times.restore_script(str(root))
    assert command[0] == "python3"
    done = subprocess.run(
        [sys.executable, *command[1:]], input=times.encode(iter([entry])), capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    if path is not None:
        assert os.lstat(os.path.normpath(root / path)).st_mtime_ns == expected
    assert int(done.stdout) == (1 if expected == LOCAL_NS else 0)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before, "contents are never touched"


def test_local_times_lists_files_and_directories_the_filter_keeps(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "a" / "b" / "f.txt").write_text("hello")
    (tmp_path / "top.py").write_text("")
    os.symlink("top.py", tmp_path / "link.py")
    os.utime(tmp_path / "top.py", ns=(5, 5))
    got = list(times.local_times(str(tmp_path), lambda rel, _d: rel.split("/", 1)[0] != ".git"))
    assert sorted((rel, size, digest) for rel, size, _m, digest in got) == [
        ("a", -1, ""),
        ("a/b", -1, ""),
        ("a/b/f.txt", 5, _sha("hello")),
        ("top.py", 0, _sha("")),
    ]
    assert {rel: m for rel, _s, m, _d in got}["top.py"] == 5
