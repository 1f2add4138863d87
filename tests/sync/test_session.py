"""The sync session end to end over the local-subprocess transport: real directories, the real
agent as a child process, watchdog on the local side."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from nbd.sync import ChangeApplied, ConflictFound, ProblemFound, StateChanged, SyncState
from nbd.sync.agent.paths import TEMP_PREFIX
from nbd.sync.remote import local_process_factory
from nbd.sync.snapshot import Snapshot

from .conftest import Pair, run, tree, until


def both(pair: Pair, rel: str, data: bytes) -> bool:
    return all((r / rel).is_file() and (r / rel).read_bytes() == data for r in (pair.local, pair.remote))


def absent(pair: Pair, rel: str) -> bool:
    return not any(os.path.lexists(r / rel) for r in (pair.local, pair.remote))


@pytest.mark.parametrize("direction", ["to_remote", "to_local"])
def test_create_modify_rename_delete_and_type_changes(pair: Pair, direction: str) -> None:
    src, dst = (pair.local, pair.remote) if direction == "to_remote" else (pair.remote, pair.local)

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            (src / "a.txt").write_bytes(b"one")
            await until(
                lambda: (dst / "a.txt").exists() and (dst / "a.txt").read_bytes() == b"one", what="create"
            )
            (src / "a.txt").write_bytes(b"two")
            await until(lambda: (dst / "a.txt").read_bytes() == b"two", what="modify")
            os.rename(src / "a.txt", src / "b.txt")
            await until(lambda: not (dst / "a.txt").exists() and (dst / "b.txt").exists(), what="rename")
            (src / "d" / "e").mkdir(parents=True)
            (src / "d" / "e" / "f").write_bytes(b"deep")
            await until(lambda: (dst / "d" / "e" / "f").exists(), what="nested create")
            shutil.rmtree(src / "d")
            (src / "d").write_bytes(b"now a file")
            await until(
                lambda: (dst / "d").is_file() and (dst / "d").read_bytes() == b"now a file", what="dir→file"
            )
            (src / "b.txt").unlink()
            await until(lambda: not (dst / "b.txt").exists(), what="delete")
            await s.flush(10)
            assert tree(pair.local) == tree(pair.remote)

    run(go())


def test_executable_bit_and_symlinks(pair: Pair) -> None:
    (pair.local / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.symlink("run.sh", pair.local / "link")
    os.symlink("/etc/passwd", pair.local / "escape")

    async def go() -> None:
        async with pair.session() as s:
            st = await s.flush(10)
            assert os.readlink(pair.remote / "link") == "run.sh"
            assert not os.path.lexists(pair.remote / "escape")
            assert any(p.path == "escape" and "outside" in p.message for p in st.problems)
            os.chmod(pair.local / "run.sh", 0o755)
            await until(lambda: os.access(pair.remote / "run.sh", os.X_OK), what="exec bit")
            os.chmod(pair.remote / "run.sh", 0o644)
            await until(lambda: not os.access(pair.local / "run.sh", os.X_OK), what="exec bit back")

    run(go())


def test_conflict_keeps_both_versions(pair: Pair) -> None:
    (pair.local / "nb.ipynb").write_bytes(b"base")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            s.pause()
            (pair.local / "nb.ipynb").write_bytes(b"local edit")
            (pair.remote / "nb.ipynb").write_bytes(b"remote edit")
            s.resume()
            st = await s.flush(10)
            assert both(pair, "nb.ipynb", b"local edit")
            (conflict,) = st.conflicts
            assert conflict.path == "nb.ipynb" and conflict.copy_path.startswith("nb.conflict-remote-")
            assert conflict.copy_path.endswith(".ipynb")
            assert both(pair, conflict.copy_path, b"remote edit")
            assert any(isinstance(e, ConflictFound) for e in pair.events)

    run(go())


async def _make_conflict(pair: Pair, s: Any, name: str) -> Any:
    s.pause()
    (pair.local / name).write_bytes(b"local edit")
    (pair.remote / name).write_bytes(b"remote edit")
    s.resume()
    st = await s.flush(10)
    return next(c for c in st.conflicts if c.path == name)


@pytest.mark.parametrize("how", ["delete", "rename", "edit"])
def test_a_conflict_stays_open_until_resolved_then_moves_to_history(pair: Pair, how: str) -> None:
    (pair.local / "nb.ipynb").write_bytes(b"base")
    (pair.local / "other.ipynb").write_bytes(b"base")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            conflict = await _make_conflict(pair, s, "nb.ipynb")
            untouched = await _make_conflict(pair, s, "other.ipynb")
            st = await s.flush(10)
            assert {c.path for c in st.conflicts} == {"nb.ipynb", "other.ipynb"}
            assert st.resolved_conflicts == ()
            if how == "delete":
                (pair.local / conflict.copy_path).unlink()
            elif how == "rename":
                os.rename(pair.local / conflict.copy_path, pair.local / "kept-remote.ipynb")
            else:
                (pair.local / "nb.ipynb").write_bytes(b"merged by hand")
            await until(lambda: len(s.status().resolved_conflicts) == 1, what="resolved")
            st = s.status()
            assert st.conflicts == (untouched,)
            assert st.resolved_conflicts == (conflict,)
        # The split survives a restart of the session (the journal, then the compacted snapshot).
        for _ in range(2):
            async with pair.session() as s:
                st = await s.flush(10)
                assert st.conflicts == (untouched,)
                assert st.resolved_conflicts == (conflict,)

    run(go())


def test_the_resolved_history_is_bounded(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbd.sync.session as session_module

    monkeypatch.setattr(session_module, "MAX_RESOLVED_CONFLICTS", 2)
    names = [f"nb{i}.ipynb" for i in range(3)]
    for name in names:
        (pair.local / name).write_bytes(b"base")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            for i, name in enumerate(names):
                conflict = await _make_conflict(pair, s, name)
                (pair.local / conflict.copy_path).unlink()
                await until(lambda: not s.status().conflicts, what="resolved")
                assert len(s.status().resolved_conflicts) == min(i + 1, 2)
            assert [c.path for c in s.status().resolved_conflicts] == names[1:]
        async with pair.session() as s:
            st = await s.flush(10)
            assert [c.path for c in st.resolved_conflicts] == names[1:] and st.conflicts == ()

    run(go())


def test_a_conflict_stays_open_while_the_user_leaves_it(pair: Pair) -> None:
    (pair.local / "nb.ipynb").write_bytes(b"base")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            conflict = await _make_conflict(pair, s, "nb.ipynb")
            (pair.local / "unrelated.txt").write_bytes(b"x")
            await until(lambda: (pair.remote / "unrelated.txt").exists(), what="unrelated change synced")
            st = await s.flush(10)
            assert st.conflicts == (conflict,) and st.resolved_conflicts == ()

    run(go())


def test_modify_beats_delete(pair: Pair) -> None:
    (pair.local / "keep.txt").write_bytes(b"v1")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            s.pause()
            (pair.local / "keep.txt").unlink()
            (pair.remote / "keep.txt").write_bytes(b"v2")
            s.resume()
            await s.flush(10)
            assert both(pair, "keep.txt", b"v2")

    run(go())


def test_empty_remote_is_refilled_and_ancestor_survives_restart(pair: Pair) -> None:
    for i in range(30):
        (pair.local / f"f{i}.txt").write_bytes(b"%d" % i)

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
        assert len(os.listdir(pair.remote)) == 30
        # A new pod: /content is empty. Its emptiness must not delete the local files.
        shutil.rmtree(pair.remote)
        pair.remote.mkdir()
        async with pair.session() as s:
            st = await s.flush(10)
            assert st.state == SyncState.WATCHING
        assert tree(pair.local) == tree(pair.remote) and len(os.listdir(pair.local)) == 30

    run(go())


def test_mass_deletion_halts_until_forced(pair: Pair) -> None:
    for i in range(40):
        (pair.local / f"f{i}").write_bytes(b"x%d" % i)

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            s.pause()
            for i in range(35):
                (pair.remote / f"f{i}").unlink()
            s.resume()
            await until(lambda: s.status().state == SyncState.HALTED, what="halt")
            assert "delete 35 of 40 files on the local side" in s.status().message
            assert len(os.listdir(pair.local)) == 40  # nothing deleted
            s.resume(force=True)
            await s.flush(10)
            assert sorted(os.listdir(pair.local)) == sorted(os.listdir(pair.remote))
            assert len(os.listdir(pair.local)) == 5

    run(go())


def test_large_file_and_size_limit(pair: Pair) -> None:
    data = os.urandom(64 << 20)
    (pair.local / "big.bin").write_bytes(data)
    (pair.local / "huge.bin").write_bytes(b"\0" * (3 << 20))

    async def go() -> None:
        async with pair.session(max_file_size=2 << 20) as s:
            st = await s.flush(60)
            assert not (pair.remote / "huge.bin").exists()
            assert [(n.path, n.side, n.size) for n in st.not_synced] == [
                ("big.bin", "local", 64 << 20),  # also above this session's limit
                ("huge.bin", "local", 3 << 20),
            ]
            assert st.not_synced[1].reason == "too large (3 MiB > 2 MiB)"
            assert not st.problems
        async with pair.session(max_file_size=1 << 30) as s:
            st = await s.flush(60)
            assert (pair.remote / "big.bin").read_bytes() == data
            assert st.bytes_to_remote >= len(data)

    run(go())


def test_a_pod_file_above_the_limit_stays_in_the_pod_until_it_shrinks(pair: Pair) -> None:
    """A checkpoint written in the pod above the limit is never copied, never deleted, and an
    older small local version is not pushed over it; under the limit again, it syncs."""
    limit = 2 << 20
    (pair.local / "ckpt").mkdir()
    (pair.local / "ckpt" / "model.pt").write_bytes(b"small v1")
    (pair.local / "notes.txt").write_bytes(b"notes")

    async def go() -> None:
        async with pair.session(max_file_size=limit) as s:
            await s.flush(30)
            assert both(pair, "ckpt/model.pt", b"small v1")
            big = os.urandom(limit + (512 << 10))
            (pair.remote / "ckpt" / "model.pt").write_bytes(big)
            (pair.remote / "ckpt" / "other.pt").write_bytes(big)
            await until(lambda: len(s.status().not_synced) == 2, what="both large files listed")
            st = await s.flush(30)
            assert [(n.path, n.side, n.size) for n in st.not_synced] == [
                ("ckpt/model.pt", "remote", len(big)),
                ("ckpt/other.pt", "remote", len(big)),
            ]
            assert st.not_synced[0].reason == "too large (2.5 MiB > 2 MiB)"
            assert not st.conflicts and not st.problems
            assert (pair.local / "ckpt" / "model.pt").read_bytes() == b"small v1"
            assert not (pair.local / "ckpt" / "other.pt").exists()
            assert (pair.remote / "ckpt" / "model.pt").read_bytes() == big
            # A local edit of the small version is not pushed over the pod's large one either.
            (pair.local / "ckpt" / "model.pt").write_bytes(b"small v2")
            (pair.local / "notes.txt").write_bytes(b"notes v2")
            await until(lambda: (pair.remote / "notes.txt").read_bytes() == b"notes v2", what="notes")
            await s.flush(30)
            assert (pair.remote / "ckpt" / "model.pt").read_bytes() == big
            # Under the limit again, it syncs as any file.
            (pair.remote / "ckpt" / "other.pt").write_bytes(b"shrunk")
            await until(lambda: both(pair, "ckpt/other.pt", b"shrunk"), what="shrunk file synced")
            st = await s.flush(30)
            assert [n.path for n in st.not_synced] == ["ckpt/model.pt"]
        assert (pair.remote / "ckpt" / "model.pt").read_bytes() == big

    run(go())


def test_reconnects_after_the_agent_dies_and_converges(pair: Pair) -> None:
    transports: list[Any] = []

    async def factory(argv: list[str]) -> Any:
        t = await local_process_factory(argv)
        transports.append(t)
        return t

    (pair.local / "a").write_bytes(b"a")

    async def go() -> None:
        async with pair.session(factory) as s:
            await s.flush(10)
            transports[-1].proc.kill()
            await until(
                lambda: len(transports) == 2 and s.status().state == SyncState.WATCHING, what="reconnect"
            )
            (pair.local / "b").write_bytes(b"b")
            (pair.remote / "c").write_bytes(b"c")
            st = await s.flush(10)
            assert tree(pair.local) == tree(pair.remote)
            assert st.conflicts == ()
            assert any(
                isinstance(e, StateChanged)
                and e.state == SyncState.CONNECTING
                and "reconnecting" in e.message
                for e in pair.events
            )

    run(go())


def test_events_report_changes(pair: Pair) -> None:
    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            (pair.local / "x").write_bytes(b"12345")
            await until(lambda: any(isinstance(e, ChangeApplied) and e.path == "x" for e in pair.events))
            ev = next(e for e in pair.events if isinstance(e, ChangeApplied) and e.path == "x")
            assert (ev.direction, ev.action, ev.bytes) == ("to_remote", "create", 5)

    run(go())


def test_editor_style_save_via_temp_file_and_rename(pair: Pair) -> None:
    (pair.local / "nb.ipynb").write_bytes(b"v1")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            for i in range(5):
                tmp = pair.local / f".~nb.ipynb.{i}"
                tmp.write_bytes(b"v%d" % (i + 2))
                os.replace(tmp, pair.local / "nb.ipynb")
            await until(lambda: (pair.remote / "nb.ipynb").read_bytes() == b"v6", what="final save")
            st = await s.flush(10)
            assert st.conflicts == () and tree(pair.local) == tree(pair.remote)

    run(go())


def test_unreadable_path_is_a_problem_not_an_abort(pair: Pair) -> None:
    (pair.local / "ok.txt").write_bytes(b"ok")
    os.mkfifo(pair.local / "fifo")

    async def go() -> None:
        async with pair.session() as s:
            st = await s.flush(10)
            assert (pair.remote / "ok.txt").exists()
            assert any(p.path == "fifo" for p in st.problems)
            assert any(isinstance(e, ProblemFound) for e in pair.events)

    run(go())


def test_flush_on_a_stopped_session_is_a_clear_error(pair: Pair) -> None:
    from nbd.errors import FailedPrecondition
    from nbd.sync import SyncSession

    s = SyncSession(str(pair.local), local_process_factory, str(pair.state), pair.options())
    with pytest.raises(FailedPrecondition, match="not running"):
        run(s.flush(1))


def test_missing_python_in_the_pod_is_reported(pair: Pair) -> None:
    async def go() -> None:
        async with pair.session(python="/nonexistent/python3") as s:
            await until(
                lambda: (
                    s.status().state in (SyncState.CONNECTING, SyncState.ERROR)
                    and "python3" in s.status().message
                ),
                what="error message",
            )

    run(go())


KILLED_DAEMON = textwrap.dedent("""
    import asyncio, sys
    from nbd.sync import SyncSession, SyncOptions, local_process_factory
    async def main():
        s = SyncSession(sys.argv[1], local_process_factory, sys.argv[3],
                        SyncOptions(remote_root=sys.argv[2], agent_cache_dir=sys.argv[4],
                                    max_file_size=1 << 30))
        await s.start()
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


def test_kill_9_mid_transfer_leaves_no_partial_file_and_restart_converges(pair: Pair) -> None:
    data = os.urandom(256 << 20)
    (pair.local / "big.bin").write_bytes(data)
    (pair.remote / "big2.bin").write_bytes(data[: 128 << 20])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_DAEMON,
            str(pair.local),
            str(pair.remote),
            str(pair.state),
            str(pair.cache),
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        # Wait until a temp file exists on either side (a transfer is in flight), then kill -9.
        while time.monotonic() < deadline:
            if any(n.startswith(TEMP_PREFIX) for r in (pair.local, pair.remote) for n in os.listdir(r)):
                break
            time.sleep(0.002)
        else:
            pytest.fail("no transfer seen in flight")
        os.killpg(proc.pid, 9)
    finally:
        proc.wait()
    # Whatever was visible under a real name is complete: a partial file only ever has a temp name.
    for r in (pair.local, pair.remote):
        for name in os.listdir(r):
            if not name.startswith(TEMP_PREFIX):
                assert (r / name).read_bytes() in (data, data[: 128 << 20])

    async def go() -> None:
        async with pair.session(max_file_size=1 << 30) as s:
            await s.flush(60)
        for r in (pair.local, pair.remote):
            assert not [n for n in os.listdir(r) if n.startswith(TEMP_PREFIX)]
        assert (pair.remote / "big.bin").read_bytes() == data
        assert (pair.local / "big2.bin").read_bytes() == data[: 128 << 20]

    run(go())


def test_incremental_cycles_delete_a_directory_without_tripping_the_guard(pair: Pair) -> None:
    for d in range(4):
        (pair.local / f"d{d}").mkdir()
        for i in range(25):
            (pair.local / f"d{d}" / f"f{i}").write_bytes(b"%d-%d" % (d, i))

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(30)
            shutil.rmtree(pair.local / "d1")  # 25 of 100 files: under the guard's 50 %
            await until(lambda: not (pair.remote / "d1").exists(), what="directory deletion")
            (pair.remote / "d2" / "f3").write_bytes(b"changed in the pod")
            await until(lambda: (pair.local / "d2" / "f3").read_bytes() == b"changed in the pod", what="edit")
            st = await s.flush(30)
            assert st.state == SyncState.WATCHING and st.files == 75
            assert tree(pair.local) == tree(pair.remote)
        # The ancestor persisted through the journal reloads into a no-op session.
        async with pair.session() as s:
            st = await s.flush(30)
            assert st.files_to_local == st.files_to_remote == 0 and st.conflicts == ()

    run(go())


def test_ignore_rules_apply_to_both_sides(pair: Pair) -> None:
    (pair.local / ".gitignore").write_text("*.log\nbuild/\n")
    (pair.local / "keep.py").write_bytes(b"k")
    (pair.local / "local.log").write_bytes(b"l")
    (pair.remote / "pod.log").write_bytes(b"p")
    (pair.remote / "build").mkdir()
    (pair.remote / "build" / "out.o").write_bytes(b"o")
    (pair.remote / "__pycache__").mkdir()
    (pair.remote / "__pycache__" / "x.pyc").write_bytes(b"c")

    async def go() -> None:
        async with pair.session() as s:
            await s.flush(10)
            assert (pair.remote / "keep.py").exists() and (pair.remote / ".gitignore").exists()
            assert not (pair.remote / "local.log").exists()
            assert not (pair.local / "pod.log").exists() and not (pair.local / "build").exists()
            assert not (pair.local / "__pycache__").exists()
            # Files the other side ignores are left alone, never deleted.
            assert (pair.remote / "pod.log").exists() and (pair.remote / "build" / "out.o").exists()

    run(go())


def _context_of(tmp: Path, directory: Path) -> tuple[Snapshot, str]:
    """Package `directory` as a launch does and return the recorded entries of its archive."""
    from nbd.context import build_context_sync
    from nbd.sync import context_files

    (directory / "Dockerfile").write_text("FROM scratch\n")
    built = build_context_sync(directory, tmp / "spool", tmp / "cache")
    assert context_files.record(str(tmp / "records"), str(directory), built.md5_hex, built.path)
    entries = context_files.load(str(tmp / "records"), str(directory), built.md5_hex)
    assert entries is not None
    return entries, built.md5_hex


def test_a_sync_without_ancestor_starts_from_the_build_context(pair: Pair, tmp_path: Path) -> None:
    """The pod holds the packaged files (its image), the local side was edited since: edits and
    deletions travel to the pod without conflict copies; a file the build changed stays a
    conflict; a file the build made is pulled."""
    (pair.local / "d").mkdir()
    for name, text in [("hello.ipynb", b"v1"), ("d/a.txt", b"a"), ("d/b.txt", b"b"), ("built.py", b"src")]:
        (pair.local / name).write_bytes(text)
    (pair.local / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(pair.local / "run.sh", 0o755)
    context, _ = _context_of(tmp_path, pair.local)
    assert context["run.sh"].executable and context["d"].is_dir and "Dockerfile" in context
    shutil.copytree(pair.local, pair.remote, dirs_exist_ok=True)  # the image's /content
    (pair.remote / "built.py").write_bytes(b"changed by the build")
    (pair.remote / "made.txt").write_bytes(b"made by the build")
    # Edits since the packaging.
    (pair.local / "hello.ipynb").write_bytes(b"v2")
    (pair.local / "d" / "a.txt").unlink()
    (pair.local / "new.txt").write_bytes(b"new")

    async def go() -> None:
        async with pair.session(context_files=context) as s:
            st = await s.flush(30)
            assert [c.path for c in st.conflicts] == ["built.py"]
            assert st.conflicts[0].copy_path.startswith("built.conflict-remote-")
        assert (pair.remote / "hello.ipynb").read_bytes() == b"v2"
        assert not (pair.remote / "d" / "a.txt").exists() and not (pair.local / "d" / "a.txt").exists()
        assert (pair.local / "built.py").read_bytes() == b"src" == (pair.remote / "built.py").read_bytes()
        assert (pair.local / "made.txt").read_bytes() == b"made by the build"
        assert (pair.remote / "new.txt").read_bytes() == b"new"
        assert tree(pair.local) == tree(pair.remote)
        assert [p for p in os.listdir(pair.local) if ".conflict-" in p] == [st.conflicts[0].copy_path]

    run(go())


def test_the_seed_is_ignored_when_an_ancestor_exists_or_the_pod_differs(pair: Pair, tmp_path: Path) -> None:
    """Without a context record the sync behaves as it always did: every difference is kept on
    both sides. With a persisted ancestor, the record is not used at all."""
    (pair.local / "a.txt").write_bytes(b"v1")
    context, _ = _context_of(tmp_path, pair.local)
    shutil.copytree(pair.local, pair.remote, dirs_exist_ok=True)
    (pair.local / "a.txt").write_bytes(b"v2")

    async def go() -> None:
        async with pair.session(context_files=None) as s:
            st = await s.flush(30)
            assert [c.path for c in st.conflicts] == ["a.txt"]
        (pair.remote / "a.txt").write_bytes(b"v1")  # back to the packaged version in the pod
        async with pair.session(context_files=context) as s:  # an ancestor exists: no seed
            st = await s.flush(30)
        assert (pair.local / "a.txt").read_bytes() == b"v1", "the pod's change since the ancestor won"

    run(go())


def test_a_seeded_sync_leaves_what_the_local_rules_ignore_since_the_build(pair: Pair, tmp_path: Path) -> None:
    """An ignore rule added locally since the build keeps the image's files under it in the pod,
    even those deleted locally: ignored paths are out of the reconcile, seeded or not."""
    (pair.local / "data").mkdir()
    (pair.local / "data" / "set.csv").write_bytes(b"1,2")
    (pair.local / "a.txt").write_bytes(b"a")
    context, _ = _context_of(tmp_path, pair.local)
    shutil.copytree(pair.local, pair.remote, dirs_exist_ok=True)
    (pair.local / ".nbdignore").write_text("data/\n")
    shutil.rmtree(pair.local / "data")
    (pair.local / "a.txt").unlink()

    async def go() -> None:
        async with pair.session(context_files=context) as s:
            st = await s.flush(30)
        assert (pair.remote / "data" / "set.csv").read_bytes() == b"1,2"
        assert not (pair.remote / "a.txt").exists(), "a deletion outside the ignored folder travels"
        assert (pair.remote / ".nbdignore").read_text() == "data/\n"
        assert not st.conflicts

    run(go())
