"""The agent: its file operations and guarantees, driven through the real frame protocol with the
agent running as a child process (RemoteEndpoint over the local-subprocess transport)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nbd.sync.agent import durability
from nbd.sync.agent.durability import WRITEBACK_STEP
from nbd.sync.agent.frames import PROTOCOL_VERSION, pack_parts, unpack_parts
from nbd.sync.agent.ignore import IgnoreRules
from nbd.sync.agent.paths import TEMP_PREFIX
from nbd.sync.agent.tree import Tree
from nbd.sync.agent.watcher import Watcher
from nbd.sync.endpoint import SyncRefused
from nbd.sync.remote import RemoteEndpoint, local_process_factory
from nbd.sync.shipping import agent_app
from nbd.sync.snapshot import Entry

from .conftest import oldest_python, recording_factory, run, until  # noqa: F401  (importlib mode resolves the package-relative import)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(data: bytes, executable: bool = False) -> Entry:
    return Entry("file", _sha(data), len(data), executable)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


class Agent:
    def __init__(self, root: Path, cache: Path) -> None:
        self.changes: list[list[str] | None] = []
        self.ep = RemoteEndpoint(
            local_process_factory, str(root), cache_dir=str(cache), max_file_size=1 << 20 << 7
        )

    async def __aenter__(self) -> RemoteEndpoint:
        await self.ep.start(self.changes.append)
        return self.ep

    async def __aexit__(self, *exc: Any) -> None:
        await self.ep.close()


def test_bootstrap_sends_the_agent_once_then_uses_the_cache(tmp_path: Path) -> None:
    root, cache = tmp_path / "r", tmp_path / "c"
    root.mkdir()
    cache.mkdir()
    sent: list[bytes] = []
    record = recording_factory(sent)

    async def go() -> None:
        for _ in range(2):
            ep = RemoteEndpoint(record, str(root), cache_dir=str(cache))
            await ep.start(lambda paths: None)
            assert ep.hello["version"] == PROTOCOL_VERSION
            await ep.close()

    run(go())
    app = agent_app()
    assert sent.count(app.data) == 1
    assert (cache / f".nbd-agent-{_sha(app.data)}.pyz").read_bytes() == app.data


def test_scan_digests_ignores_and_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello")
    (root / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "sub" / "keep.py").write_bytes(b"x")
    (root / "sub" / "drop.log").write_bytes(b"x")
    (root / ".gitignore").write_text("*.log\n")
    (root / ".nbdignore").write_text("secret/\n")
    (root / "secret").mkdir()
    (root / "secret" / "k").write_bytes(b"k")
    for d in (".git", "__pycache__", "node_modules", ".ipynb_checkpoints", ".venv"):
        (root / d).mkdir()
        (root / d / "x").write_bytes(b"x")
    (root / ".nbd-tmp-123-a.txt").write_bytes(b"partial")
    os.symlink("a.txt", root / "link")

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            res = await ep.scan()
            assert set(res.entries) == {
                "a.txt",
                "run.sh",
                "sub",
                "sub/keep.py",
                ".gitignore",
                ".nbdignore",
                "link",
            }
            assert res.entries["a.txt"] == file_entry(b"hello")
            assert res.entries["run.sh"].executable
            assert res.entries["link"] == Entry("symlink", target="a.txt")
            assert set(res.rules) == {".gitignore", ".nbdignore"}
            # configure(clean=True) removed the interrupted write's temp file.
            assert not (root / ".nbd-tmp-123-a.txt").exists()
            part = await ep.scan(["sub", "gone"])
            assert set(part.entries) == {"sub", "sub/keep.py"} and part.absent == ["gone"]

    run(go())


def test_write_is_atomic_and_refused_when_target_changed(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            e = await ep.write("f", None, file_entry(b"one"), chunks(b"o", b"ne"))
            assert (root / "f").read_bytes() == b"one" and e == file_entry(b"one")
            # Expected absent, but present: refused, file untouched.
            with pytest.raises(SyncRefused, match="appeared"):
                await ep.write("f", None, file_entry(b"two"), chunks(b"two"))
            # Expected the old content, but someone changed it meanwhile: refused.
            (root / "f").write_bytes(b"edited")
            with pytest.raises(SyncRefused, match="changed since"):
                await ep.write("f", file_entry(b"one"), file_entry(b"two"), chunks(b"two"))
            assert (root / "f").read_bytes() == b"edited"
            # Content not matching its digest never lands.
            with pytest.raises(SyncRefused, match="digest"):
                await ep.write("g", None, file_entry(b"good"), chunks(b"evil"))
            assert not (root / "g").exists()
            assert [n for n in os.listdir(root) if n.startswith(TEMP_PREFIX)] == []

    run(go())


def test_paths_are_validated_and_links_never_written_through(tmp_path: Path) -> None:
    root, outside = tmp_path / "r", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(str(outside), root / "escape")

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            for bad in ("../x", "/etc/passwd", "a/../../x", "a//b", "", "a\x00b"):
                with pytest.raises(SyncRefused):
                    await ep.write(bad, None, file_entry(b"x"), chunks(b"x"))
            with pytest.raises(SyncRefused, match="symbolic link"):
                await ep.write("escape/pwned", None, file_entry(b"x"), chunks(b"x"))
            results = await ep.ops(
                [
                    {"op": "mkdir", "path": "escape/d"},
                    {"op": "delete", "path": "../r", "expected": ["dir", "", False, ""]},
                ]
            )
            assert all(isinstance(r, str) for r in results)
            with pytest.raises(SyncRefused):
                async for _ in ep.read("/etc/passwd", ""):
                    pass
        assert os.listdir(outside) == []

    run(go())


def test_metadata_operations(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_bytes(b"data")
    (root / "d").mkdir()
    (root / "d" / "inner").write_bytes(b"i")

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            f = file_entry(b"data")
            r = await ep.ops(
                [
                    {
                        "op": "chmod",
                        "path": "f",
                        "expected": ["file", f.digest, False, ""],
                        "executable": True,
                    },
                    {"op": "symlink", "path": "l", "expected": None, "target": "f"},
                    {"op": "mkdir", "path": "n"},
                    {"op": "delete", "path": "d", "expected": ["dir", "", False, ""]},
                    {"op": "delete", "path": "f", "expected": ["file", "0" * 64, False, ""]},
                    {"op": "move", "path": "n", "dest": "m", "expected": ["dir", "", False, ""]},
                ]
            )
            assert isinstance(r[0], Entry) and r[0].executable and os.access(root / "f", os.X_OK)
            assert os.readlink(root / "l") == "f"
            assert r[2] == Entry("dir")
            assert isinstance(r[3], str) and "not empty" in r[3]  # a directory is removed only when empty
            assert isinstance(r[4], str) and "changed" in r[4]  # delete refused: not what was expected
            assert r[5] is None and (root / "m").is_dir()

    run(go())


def test_large_binary_file_both_ways(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    data = os.urandom(64 << 20)

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            e = await ep.write(
                "big.bin",
                None,
                file_entry(data),
                chunks(*(data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))),
            )
            assert e.size == len(data)
            got = bytearray()
            async for c in ep.read("big.bin", e.digest):
                got += c
            assert bytes(got) == data

    run(go())
    assert (root / "big.bin").read_bytes() == data


def test_compressible_data_is_compressed_and_restored(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    data = b"abc" * 1_000_000

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            await ep.write("t", None, file_entry(data), chunks(data))
            out = await ep.read_many([("t", _sha(data))])
            assert out == [data]

    run(go())


@pytest.mark.parametrize(
    "parts, compressed",
    [
        ([b"x = 1\n" * 2000], [True]),  # text: compressed
        ([os.urandom(20_000)], [False]),  # random: the probe refuses it
        ([os.urandom(3000)], [False]),  # random below the probe threshold: tried whole, not kept
        ([b"ab"], [False]),  # tiny: never tried
        ([b""], [False]),
        ([b"y" * 5000, os.urandom(9000), b"z" * 70], [True, False, True]),  # a mixed batch
    ],
)
def test_pack_parts_compresses_per_part(parts: list[bytes], compressed: list[bool]) -> None:
    body, zl = pack_parts(parts)
    assert [z >= 0 for z in zl] == compressed
    assert unpack_parts(body, [len(p) for p in parts], zl) == parts


@pytest.mark.parametrize(
    "part, size, why",
    [
        (b"not zlib at all", 5, "corrupted"),
        (__import__("zlib").compress(b"a" * 100), 50, "wrong size"),  # inflates beyond what was announced
        (__import__("zlib").compress(b"a" * 100), 200, "wrong size"),
        (__import__("zlib").compress(b"a" * 100)[:-3], 100, "wrong size"),  # truncated stream
    ],
)
def test_unpack_parts_refuses_bad_parts(part: bytes, size: int, why: str) -> None:
    body = part + b"raw!"
    out = unpack_parts(body, [size, 4], [len(part), -1])
    assert isinstance(out[0], str) and why in out[0]
    assert out[1] == b"raw!"


def test_mixed_batch_round_trips_both_ways(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    datas = [b"text %d\n" % i * 300 if i % 2 else os.urandom(4000 + i) for i in range(20)]

    async def go() -> None:
        async with Agent(root, tmp_path) as ep:
            from nbd.sync.endpoint import PutItem

            items = [PutItem(f"f{i}", None, file_entry(d), d) for i, d in enumerate(datas)]
            results = await ep.put_many(items)
            assert all(isinstance(r, Entry) for r in results)
            assert await ep.read_many([(f"f{i}", _sha(d)) for i, d in enumerate(datas)]) == datas

    run(go())
    assert [(root / f"f{i}").read_bytes() for i in range(20)] == datas


@pytest.mark.parametrize("with_sync_file_range", [True, False])
def test_large_write_through_each_write_back_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_sync_file_range: bool
) -> None:
    if not with_sync_file_range:  # a libc without sync_file_range: posix_fadvise starts the write-back
        monkeypatch.setattr(durability, "_SYNC_FILE_RANGE", [None])
    elif durability.sync_file_range() is None:
        pytest.skip("no sync_file_range here")
    tree = Tree(str(tmp_path))
    data = os.urandom(3 * WRITEBACK_STEP + 12345)
    tree.write_begin(1, "big", None, False, _sha(data))
    for i in range(0, len(data), 1 << 20):
        tree.write_chunk(1, data[i : i + (1 << 20)])
    e = tree.write_end(1, True)
    assert e[2] == len(data) and e[4] == _sha(data)
    assert (tmp_path / "big").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["big"]  # no temp file left


def test_watch_reports_changes(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    a = Agent(root, tmp_path)

    async def go() -> None:
        async with a as ep:
            assert ep.watch_mode == "inotify"
            (root / "d").mkdir()
            await until(lambda: any(c and "d" in c for c in a.changes), what="dir event")
            (root / "d" / "f").write_bytes(b"x")
            await until(lambda: any(c and "d/f" in c for c in a.changes), what="file event")
            (root / "node_modules").mkdir()
            (root / "z").write_bytes(b"z")
            await until(lambda: any(c and "z" in c for c in a.changes), what="z")
            assert not any(c and "node_modules" in c for c in a.changes)

    run(go())


def test_polling_fallback_reports_changes(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    tree = Tree(str(root))
    seen: list[list[str] | None] = []
    w = Watcher(tree, seen.append, poll_interval=0.05)
    w.mode = "poll"
    import threading

    threading.Thread(target=w._run_poll, daemon=True).start()

    async def go() -> None:
        await asyncio.sleep(0.1)
        (root / "p").write_bytes(b"x")
        await until(lambda: any(c and "p" in c for c in seen), what="poll event")

    try:
        run(go())
    finally:
        w.stopped = True


@pytest.mark.parametrize(
    "rules,path,is_dir,ignored",
    [
        ([], ".git", True, True),
        ([], "a/.git/config", False, True),
        ([], "__pycache__", True, True),
        ([], ".DS_Store", False, True),
        ([], "x.py", False, False),
        ([("", "*.log")], "a/b/c.log", False, True),
        ([("", "*.log\n!keep.log")], "keep.log", False, False),
        ([("", "/build")], "build", True, True),
        ([("", "/build")], "a/build", True, False),
        ([("", "data/")], "data", False, False),
        ([("", "data/")], "data", True, True),
        ([("sub", "*.tmp")], "sub/x.tmp", False, True),
        ([("sub", "*.tmp")], "x.tmp", False, False),
        ([("", "docs/**/*.pdf")], "docs/a/b/c.pdf", False, True),
        ([("", "docs/**/*.pdf")], "docs/c.pdf", False, True),
        ([("", "a?c")], "abc", False, True),
        ([("", "[ab].txt")], "b.txt", False, True),
        ([("", "# comment\n\n")], "# comment", False, False),
    ],
)
def test_ignore_rules(rules: list[tuple[str, str]], path: str, is_dir: bool, ignored: bool) -> None:
    r = IgnoreRules()
    for base, text in rules:
        r.add_file(f"{base}/.gitignore" if base else ".gitignore", text)
    assert r.ignored_path(path, is_dir) == ignored


@pytest.mark.skipif(oldest_python() is None, reason="no Python 3.8/3.9 on this machine")
def test_agent_runs_on_python38(tmp_path: Path) -> None:
    python = oldest_python()
    assert python is not None
    root = tmp_path / "r"
    root.mkdir()
    (root / "a").write_bytes(b"old")
    changes: list[list[str] | None] = []

    async def go() -> None:
        ep = RemoteEndpoint(local_process_factory, str(root), cache_dir=str(tmp_path), python=python)
        await ep.start(changes.append)
        try:
            assert ep.hello["python"].startswith(("3.8", "3.9"))
            assert ep.watch_mode == "inotify"
            res = await ep.scan()
            assert res.entries["a"] == file_entry(b"old")
            await ep.write("a", file_entry(b"old"), file_entry(b"new"), chunks(b"new"))
            assert [c async for c in ep.read("a", "")] == [b"new"]
            (root / "b").write_bytes(b"b")
            await until(lambda: any(c and "b" in c for c in changes), what="watch on 3.8")
        finally:
            await ep.close()

    run(go())


def test_batch_scope_still_refuses_links_and_forgets_between_batches(tmp_path: Path) -> None:
    root, outside = tmp_path / "r", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    tree = Tree(str(root))
    data = b"x"
    item = (1, "d/f", None, False, _sha(data), data)
    with tree.batch_scope():
        assert isinstance(tree.put_many([item])[0], list)
    # The directory is replaced by a link to the outside between two requests: refused.
    (root / "d" / "f").unlink()
    (root / "d").rmdir()
    os.symlink(str(outside), root / "d")
    with tree.batch_scope():
        (result,) = tree.put_many([(2, "d/g", None, False, _sha(data), data)])
    assert isinstance(result, str) and "symbolic link" in result
    assert os.listdir(outside) == []


def test_agent_runs_when_the_cache_dir_is_not_writable(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()

    async def go() -> None:
        ep = RemoteEndpoint(local_process_factory, str(root), cache_dir=str(tmp_path / "missing"))
        await ep.start(lambda paths: None)
        try:
            assert ep.hello["version"] == PROTOCOL_VERSION
            assert (await ep.scan()).entries == {}
        finally:
            await ep.close()

    run(go())
    assert not (tmp_path / "missing").exists()


def test_out_of_inotify_watches_falls_back_to_polling_as_well(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "sub").mkdir(parents=True)
    seen: list[list[str] | None] = []
    w = Watcher(Tree(str(root)), seen.append, poll_interval=0.05)
    w.start()
    assert w.mode == "inotify"

    class NoWatchesLeft:
        def __init__(self, real: object) -> None:
            self.real = real

        def inotify_add_watch(self, *args: object) -> int:
            return -1

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    w.libc = NoWatchesLeft(w.libc)
    (root / "new").mkdir()  # inotify reports it, but its watch cannot be added

    async def go() -> None:
        await until(lambda: w.mode == "inotify+poll", what="the polling fallback")
        await asyncio.sleep(0.1)
        (root / "new" / "f").write_bytes(b"x")
        await until(lambda: any(c and "new/f" in c for c in seen), what="a change seen by polling")

    try:
        run(go())
    finally:
        w.stopped = True
