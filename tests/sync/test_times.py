"""Local file times for the files a pod got from its image: only metadata, only where safe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbd.sync import times

LOCAL_NS = 1_700_000_000_123_456_789  # 2023-11-14, a plausible local mtime


def _pod_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    for rel, text in {"same.txt": "abc", "sub/deep.py": "x = 1\n", "edited.txt": "new", "grown.txt": "abcd"}.items():
        (root / rel).write_text(text)
    for rel in ("same.txt", "sub/deep.py", "grown.txt", "sub"):
        os.utime(root / rel, ns=(0, 0))  # as the archive made them
    os.utime(root / "edited.txt", ns=(1_760_000_000_000_000_000,) * 2)  # written in the pod since
    (root.parent / "outside.txt").write_text("abc")
    os.utime(root.parent / "outside.txt", ns=(0, 0))


@pytest.mark.parametrize(
    ("rel", "size", "expected"),
    [
        ("same.txt", 3, LOCAL_NS),          # from the archive, same size: local time
        ("sub/deep.py", 6, LOCAL_NS),
        ("sub", -1, LOCAL_NS),              # a directory from the archive
        ("edited.txt", 3, 1_760_000_000_000_000_000),  # written in the pod: left alone
        ("grown.txt", 3, 0),                # another size: not the local file, left alone
        ("missing.txt", 3, None),
        ("same.txt/..", -1, None),          # the root itself is never changed
        ("../outside.txt", 3, 0),           # outside the root: ignored
    ],
)
def test_restore_script_sets_times_only_where_safe(tmp_path: Path, rel: str, size: int, expected: int | None) -> None:
    root = tmp_path / "content"
    _pod_tree(root)
    before = (root / "same.txt").read_bytes()
    command = times.restore_script(str(root))
    assert command[0] == "python3"
    done = subprocess.run([sys.executable, *command[1:]], input=times.encode(iter([(rel, size, LOCAL_NS)])),
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    target = os.path.normpath(root / rel)
    if expected is not None:
        assert os.lstat(target).st_mtime_ns == expected
    assert int(done.stdout) == (1 if expected == LOCAL_NS else 0)
    assert (root / "same.txt").read_bytes() == before, "contents are never touched"


def test_local_times_lists_files_and_directories_the_filter_keeps(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "a" / "b" / "f.txt").write_text("hello")
    (tmp_path / "top.py").write_text("")
    os.symlink("top.py", tmp_path / "link.py")
    os.utime(tmp_path / "top.py", ns=(5, 5))
    got = list(times.local_times(str(tmp_path), lambda rel, _d: rel.split("/", 1)[0] != ".git"))
    assert sorted((rel, size) for rel, size, _ in got) == [("a", -1), ("a/b", -1), ("a/b/f.txt", 5), ("top.py", 0)]
    assert dict((rel, m) for rel, _s, m in got)["top.py"] == 5
