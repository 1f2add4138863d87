"""The records of packaged build contexts that seed a sync's ancestor: read back from the
archive exactly as a scan would see the files, bounded per directory, and never a reason to fail
(a missing or damaged record means no seed)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from nbd.context import build_context_sync
from nbd.launch.building import record_context_files
from nbd.sync import context_files
from nbd.sync.agent.tree import Tree
from nbd.sync.endpoint import scan_from_wire


def _project(root: Path, text: str = "v1") -> None:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "a.txt").write_text(text)
    (root / "sub" / "b.bin").write_bytes(os.urandom(3 << 20))  # a big file: segmented in the archive
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    os.symlink("a.txt", root / "link")


def _package(tmp: Path, src: Path) -> tuple[str, str]:
    built = build_context_sync(src, tmp / "spool", tmp / "cache", use_cache=False)
    return built.md5_hex, built.path


def test_the_record_is_what_a_scan_of_the_directory_sees(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _project(src)
    md5, archive = _package(tmp_path, src)
    store = str(tmp_path / "records")
    assert context_files.record(store, str(src), md5, archive)
    assert not context_files.record(store, str(src), md5, archive), "recorded once per context"
    recorded = context_files.load(store, str(src), md5)
    scanned = scan_from_wire(Tree(str(src)).scan(), 0).entries
    assert recorded == scanned


def test_a_missing_or_damaged_record_is_no_seed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    _project(src)
    md5, archive = _package(tmp_path, src)
    store = str(tmp_path / "records")
    assert context_files.load(store, str(src), md5) is None
    assert context_files.load(store, str(src), "") is None
    context_files.record(store, str(src), md5, archive)
    path = Path(context_files.record_path(store, str(src), md5))
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "md5": "0" * 32}))
    assert context_files.load(store, str(src), md5) is None
    path.write_text("{torn")
    with caplog.at_level(logging.WARNING):
        assert context_files.load(store, str(src), md5) is None
    assert "unusable" in caplog.text


def test_at_most_keep_records_per_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _project(src)
    store = str(tmp_path / "records")
    md5s = []
    for i in range(4):
        (src / "a.txt").write_text(f"v{i}")
        md5, archive = _package(tmp_path, src)
        context_files.record(store, str(src), md5, archive, keep=2)
        md5s.append(md5)
        t = 1_000_000 + i  # distinct times, whatever the file system's resolution
        os.utime(context_files.record_path(store, str(src), md5), (t, t))
    kept = sorted(os.listdir(Path(context_files.record_path(store, str(src), md5s[0])).parent))
    assert kept == sorted(f"{m}.json" for m in md5s[2:])


def test_a_truncated_archive_costs_only_the_seed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    _project(src)
    md5, archive = _package(tmp_path, src)
    data = Path(archive).read_bytes()
    Path(archive).write_bytes(data[: len(data) // 2])
    store = str(tmp_path / "records")
    with caplog.at_level(logging.WARNING):
        asyncio.run(record_context_files(store, str(src), md5, archive))
        asyncio.run(record_context_files(store, str(src), md5, str(tmp_path / "gone.tar.gz")))
    assert caplog.text.count("could not record the files of context") == 2
    assert context_files.load(store, str(src), md5) is None
    assert not list(Path(store).rglob("*.tmp-*")), "no temporary file is left behind"
