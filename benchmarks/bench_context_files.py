"""What recording a build context's files costs a launch (`nbd.sync.context_files.record`).

A launch that packaged new content reads its archive back once to record each file's sync
identity (sha256, size, executable bit), the seed of a later sync's ancestor. Measured beside
the packaging of the same directory in the same run: a tree of small source files and notebooks
plus a few large files. Target: recording costs at most the packaging itself (<= 1x).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.harness import Figure, median, time_call

NAME = "context-files"

TARGET_RATIO = 1.0


def _tree(root: Path, quick: bool) -> int:
    files = 500 if quick else 5000
    total = 0
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /content\n")
    for i in range(files):
        d = root / f"pkg{i % 50:02d}"
        d.mkdir(exist_ok=True)
        data = (f"# module {i}\n" + "x = 1\n" * (i % 400)).encode()
        (d / f"m{i:05d}.py").write_bytes(data)
        total += len(data)
    for i in range(1 if quick else 3):
        data = os.urandom((8 if quick else 64) << 20)
        (root / f"weights{i}.bin").write_bytes(data)
        total += len(data)
    return total


def run(quick: bool = False) -> list[Figure]:
    from nbd.context import build_context_sync
    from nbd.sync import context_files

    work = Path(tempfile.mkdtemp(prefix="nbd-bench-ctxfiles-"))
    try:
        src = work / "src"
        src.mkdir()
        size = _tree(src, quick)
        runs = 1 if quick else 3
        built = []

        def package() -> None:
            built.append(build_context_sync(src, work / "spool", work / "cache", use_cache=False))

        pack = median(time_call(package, runs, warmup=0))
        md5, archive = built[-1].md5_hex, built[-1].path

        def record() -> None:
            shutil.rmtree(work / "records", ignore_errors=True)
            context_files.record(str(work / "records"), str(src), md5, archive)

        rec = median(time_call(record, runs, warmup=0))
        mb = size / 1e6
        return [
            Figure(
                f"record the files of a {mb:.0f} MB context ({built[-1].files} files)",
                rec,
                "s",
                baseline="packaging the same directory",
                baseline_value=pack,
                target=f"<= {TARGET_RATIO:g}x packaging",
                met=rec <= TARGET_RATIO * pack,
            )
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
