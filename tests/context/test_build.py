"""Packaging real directories: determinism, fidelity, Docker's ignore rules, errors and the cache."""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nbd.context import (
    BadIgnoreFile,
    BuiltContext,
    ContextError,
    ContextProgress,
    MissingDockerfile,
    UnreadableFile,
    build_context,
    build_context_sync,
    forget_context,
    pack,
    plan_context,
)
from nbd.context.pack import package
from nbd.errors import Cancelled

from .conftest import extract_gnu, extract_python, set_mtimes, write_tree

BASE = {
    "Dockerfile": "FROM python:3.11\nCOPY . /content\n",
    "train.py": "print('train')\n",
    "pkg/__init__.py": "",
    "pkg/model.py": "import torch\n" * 50,
    "data/": "",
    "notes/ünïcode ✓.md": "héllo\n",
    "deep/" + "/".join(["x" * 40] * 5) + "/file.txt": "deep\n",
}


def build(root: Path, tmp: Path, **kw: object) -> BuiltContext:
    return build_context_sync(root, tmp / "spool", tmp / "cache", **kw)  # type: ignore[arg-type]


def names(archive: str) -> list[str]:
    with tarfile.open(archive, "r:gz") as t:
        return t.getnames()


def test_same_content_same_md5_whatever_order_mtimes_and_owners(tmp_path: Path) -> None:
    a = write_tree(tmp_path / "a", BASE)
    # The same content created in reverse order, with other mtimes, owners and permission bits.
    b = tmp_path / "b"
    for rel in reversed(list(BASE)):
        write_tree(b, {rel: BASE[rel]})
    set_mtimes(b, 123_456_789_000_000_000)
    os.chown(b / "train.py", 1234, 5678)
    os.chmod(b / "train.py", 0o600)
    ra = build(a, tmp_path / "ta")
    rb = build(b, tmp_path / "tb")
    assert ra.md5_hex == rb.md5_hex
    assert ra.size == rb.size == os.path.getsize(ra.path)
    assert not ra.cached and not rb.cached


def test_a_changed_byte_changes_the_md5(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "a", BASE)
    before = build(root, tmp_path / "t", use_cache=False)
    (root / "train.py").write_text("print('trains')\n")
    assert build(root, tmp_path / "t", use_cache=False).md5_hex != before.md5_hex


def test_touch_keeps_the_md5(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "a", BASE)
    before = build(root, tmp_path / "t")
    os.utime(root / "train.py")
    after = build(root, tmp_path / "t")
    assert not after.cached  # the walk saw a new mtime...
    assert after.md5_hex == before.md5_hex  # ...and packaging again gave the same bytes


def test_executable_bit_changes_the_md5(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "a", BASE)
    before = build(root, tmp_path / "t", use_cache=False)
    os.chmod(root / "train.py", 0o755)
    assert build(root, tmp_path / "t", use_cache=False).md5_hex != before.md5_hex


def test_archive_extracts_identically_with_gnu_tar_and_tarfile(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", BASE)
    os.chmod(root / "train.py", 0o755)
    os.symlink("pkg/model.py", root / "model_link")
    os.symlink("/etc/passwd", root / "outside")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (root / "big.txt").write_bytes(b"compressible line\n" * 200_000)
    (root / ("L" * 180)).write_text("long name\n")
    built = build(root, tmp_path / "t")
    gnu = extract_gnu(built.path, tmp_path / "gnu")
    py = extract_python(built.path, tmp_path / "py")
    assert gnu == py
    assert gnu["train.py"] == ("file", 0o755, b"print('train')\n")
    assert gnu["pkg/model.py"][1] == 0o644
    assert gnu["data"] == ("dir", 0o755, b"")
    assert gnu["model_link"] == ("link", 0, "pkg/model.py")
    assert gnu["outside"] == ("link", 0, "/etc/passwd")
    assert gnu["notes/ünïcode ✓.md"][2] == "héllo\n".encode()
    assert gnu["L" * 180][2] == b"long name\n"
    assert gnu["big.bin"][2] == (root / "big.bin").read_bytes()
    assert gnu["big.txt"][2] == (root / "big.txt").read_bytes()
    deep = "deep/" + "/".join(["x" * 40] * 5) + "/file.txt"
    assert gnu[deep][2] == b"deep\n"
    assert any("outside" in w and "outside the directory" in w for w in built.warnings)
    assert built.links_outside == ("outside",)  # the typed fact behind that warning; model_link stays inside
    # Bytewise sorted, directories before their contents, uid/gid 0 and mtime 0 everywhere.
    with tarfile.open(built.path, "r:gz") as t:
        members = t.getmembers()
    tar_names = [m.name + ("/" if m.isdir() else "") for m in members]
    assert tar_names == sorted(tar_names, key=lambda n: n.encode())
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}


def test_incompressible_data_is_stored_and_compressible_data_is_compressed(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"Dockerfile": "FROM x\n"})
    (root / "random.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    (root / "text.txt").write_bytes(b"the same line again\n" * 200_000)
    built = build(root, tmp_path / "t")
    assert 4 * 1024 * 1024 < built.size < 4 * 1024 * 1024 + 200_000
    assert gzip.decompress(Path(built.path).read_bytes()).count(b"the same line again\n") == 200_000


def test_gzip_members_do_not_depend_on_the_number_of_threads(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", BASE)
    (root / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    plan = plan_context(root)
    one = package(plan, tmp_path / "s1", workers=1)
    four = package(plan, tmp_path / "s4", workers=4)
    assert one.md5_hex == four.md5_hex


def test_dockerignore_is_applied_and_the_builder_files_are_always_sent(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "src",
        {
            "Dockerfile": "FROM x\n",
            ".dockerignore": "Dockerfile\n.dockerignore\n*.md\n!README.md\nnode_modules\ndocs\n!docs/keep.txt\n",
            "README.md": "r",
            "CHANGES.md": "c",
            "sub/x.md": "kept: *.md is only the root",
            "node_modules/a/b.js": "x",
            "docs/drop.txt": "x",
            "docs/keep.txt": "k",
            "docs/inner/drop.txt": "x",
        },
    )
    built = build(root, tmp_path / "t")
    assert names(built.path) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "docs",
        "docs/keep.txt",
        "sub",
        "sub/x.md",
    ]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "src",
        {
            "build/app.Dockerfile": "FROM x\n",
            "build/app.Dockerfile.dockerignore": "secret\n",
            ".dockerignore": "public\n",
            "secret": "s",
            "public": "p",
        },
    )
    built = build(root, tmp_path / "t", dockerfile="build/app.Dockerfile")
    assert names(built.path) == [
        ".dockerignore",
        "build",
        "build/app.Dockerfile",
        "build/app.Dockerfile.dockerignore",
        "public",
    ]


def test_dockerfile_inside_an_ignored_directory_is_still_sent(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "src", {"docker/Dockerfile": "FROM x\n", "docker/other": "o", ".dockerignore": "docker\n"}
    )
    built = build(root, tmp_path / "t", dockerfile="docker/Dockerfile")
    assert names(built.path) == [".dockerignore", "docker", "docker/Dockerfile"]


def test_missing_dockerfile_is_a_clear_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"train.py": "x"})
    with pytest.raises(MissingDockerfile) as info:
        build(root, tmp_path / "t")
    assert (
        str(info.value)
        == f"{root} has no Dockerfile; add a Dockerfile or launch a prebuilt image with --image"
    )
    assert info.value.reason == "MissingDockerfile"
    assert not (tmp_path / "t" / "spool").exists()


def test_dockerfile_outside_the_directory_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"Dockerfile": "x"})
    with pytest.raises(ContextError, match="inside"):
        build(root, tmp_path / "t", dockerfile="../Dockerfile")


def test_bad_ignore_pattern_is_a_clear_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"Dockerfile": "x", ".dockerignore": "ok\n[oops\n"})
    with pytest.raises(BadIgnoreFile, match=r"\.dockerignore.*\[oops"):
        build(root, tmp_path / "t")


def test_socket_and_fifo_are_skipped_with_a_warning(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"Dockerfile": "x"})
    os.mkfifo(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        built = build(root, tmp_path / "t")
    finally:
        sock.close()
    assert names(built.path) == ["Dockerfile"]
    assert any(w.startswith("pipe: FIFO skipped") for w in built.warnings)
    assert any(w.startswith("sock: socket skipped") for w in built.warnings)


def test_symlink_to_a_directory_is_not_followed(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret": "s"})
    root = write_tree(tmp_path / "src", {"Dockerfile": "x"})
    os.symlink(outside, root / "dirlink")
    built = build(root, tmp_path / "t")
    with tarfile.open(built.path) as t:
        member = t.getmember("dirlink")
        assert member.issym() and member.linkname == str(outside)
        assert "dirlink/secret" not in t.getnames()


def test_unreadable_file_injected_at_the_io_seam(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", BASE)
    plan = plan_context(root)

    def opener(path: str) -> int:
        if path.endswith("model.py"):
            raise PermissionError(13, "Permission denied", path)
        return os.open(path, os.O_RDONLY)

    with pytest.raises(UnreadableFile) as info:
        package(plan, tmp_path / "spool", open_file=opener)
    assert str(root / "pkg" / "model.py") in str(info.value)
    assert "Permission denied" in str(info.value) and ".dockerignore" in str(info.value)
    assert os.listdir(tmp_path / "spool") == []  # the partial archive is gone


def world_traversable_tree(
    request: pytest.FixtureRequest, files: dict[str, bytes | str]
) -> tuple[Path, Path]:
    """(base, root): a tree that "nobody" can traverse (pytest's tmp_path sits under a 0700 directory)."""
    base = Path(tempfile.mkdtemp(prefix="nbd-unreadable-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    root = write_tree(base / "src", files)
    for dirpath, _dirs, _files in os.walk(base):
        os.chmod(dirpath, 0o777)
    return base, root


def build_as_nobody(base: Path, root: Path) -> tuple[str, str, str]:
    """Runs the packaging as uid 65534 in a forked child; returns (reason, path, message) of its error.

    Root reads everything, hence the other user; a fork, because the interpreter under /root is not
    executable by nobody.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                build_context_sync(root, base / "spool", base / "cache")
            except UnreadableFile as e:
                os.write(write_end, "\n".join([e.reason, e.path, str(e)]).encode())
                code = 3
        except BaseException as e:
            os.write(write_end, repr(e).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as r:
        out = r.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, out
    reason, path, message = out.splitlines()[:3]
    return reason, path, message


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")


@needs_root
def test_unreadable_file_for_a_real_other_user(request: pytest.FixtureRequest) -> None:
    base, root = world_traversable_tree(request, {"Dockerfile": "FROM x\n", "secret.key": "k", "ok.txt": "o"})
    os.chmod(root / "secret.key", 0o000)
    reason, path, message = build_as_nobody(base, root)
    assert (reason, path) == ("UnreadableFile", str(root / "secret.key"))
    assert message.startswith(f"cannot read {root / 'secret.key'}: Permission denied")
    assert os.listdir(base / "spool") == []  # nothing half-written is left


@needs_root
def test_unreadable_directory_for_a_real_other_user(request: pytest.FixtureRequest) -> None:
    base, root = world_traversable_tree(request, {"Dockerfile": "FROM x\n", "private/key": "k"})
    os.chmod(root / "private", 0o000)
    reason, path, message = build_as_nobody(base, root)
    assert (reason, path) == ("UnreadableFile", str(root / "private"))
    assert message == (
        f"cannot read directory {root / 'private'}: Permission denied; fix its permissions or add it to .dockerignore"
    )


@needs_root
def test_unreadable_but_ignored_directory_is_no_error(request: pytest.FixtureRequest) -> None:
    base, root = world_traversable_tree(
        request, {"Dockerfile": "FROM x\n", ".dockerignore": "private\n!private/keep\n", "private/key": "k"}
    )
    os.chmod(root / "private", 0o000)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            built = build_context_sync(root, base / "spool", base / "cache")
            os.write(write_end, built.path.encode())
            code = 0
        except BaseException as e:
            os.write(write_end, repr(e).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as r:
        out = r.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert names(out) == [".dockerignore", "Dockerfile"]


def test_manifest_cache_hit_and_miss(tmp_path: Path, old_ns: int) -> None:
    root = write_tree(tmp_path / "src", BASE, mtime_ns=old_ns)
    first = build(root, tmp_path / "t")
    second = build(root, tmp_path / "t")
    assert not first.cached and second.cached
    assert second.md5_hex == first.md5_hex and second.path == first.path
    # A new file is a miss, and the previous archive of this directory is removed.
    write_tree(root, {"new.txt": "n"}, mtime_ns=old_ns)
    third = build(root, tmp_path / "t")
    assert not third.cached and third.md5_hex != first.md5_hex
    assert not os.path.exists(first.path)
    assert build(root, tmp_path / "t").cached
    # An edited .dockerignore is a miss even if the included files are the same.
    write_tree(root, {".dockerignore": "nothing-matches\n"}, mtime_ns=old_ns)
    assert not build(root, tmp_path / "t").cached
    # A deleted archive is a miss; so is a forgotten record.
    again = build(root, tmp_path / "t")
    assert again.cached
    os.unlink(again.path)
    assert not build(root, tmp_path / "t").cached
    forget_context(tmp_path / "t" / "cache", root)
    assert not build(root, tmp_path / "t").cached


def test_racy_timestamps_are_not_cached(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", BASE)  # written just now
    build(root, tmp_path / "t")
    assert not build(root, tmp_path / "t").cached


def test_cancel_between_files_leaves_nothing(tmp_path: Path) -> None:
    # Many batches, so that the flag set at the first progress report stops the rest.
    root = write_tree(
        tmp_path / "src", {f"f{i}.txt": os.urandom(20_000) for i in range(2000)} | {"Dockerfile": "x"}
    )
    flag = threading.Event()
    seen: list[ContextProgress] = []

    def progress(p: ContextProgress) -> None:
        seen.append(p)
        flag.set()

    with pytest.raises(Cancelled):
        build(root, tmp_path / "t", progress=progress, cancel=flag)
    assert seen and seen[0].files_done < 2001
    assert os.listdir(tmp_path / "t" / "spool") == []


def test_async_build_reports_progress_on_the_loop_and_cancels(tmp_path: Path, old_ns: int) -> None:
    root = write_tree(
        tmp_path / "src",
        {f"d{i // 50}/f{i}.txt": "y" * 1000 for i in range(500)} | {"Dockerfile": "x"},
        mtime_ns=old_ns,
    )

    async def main() -> None:
        loop_thread = threading.get_ident()
        seen: list[ContextProgress] = []

        def progress(p: ContextProgress) -> None:
            assert threading.get_ident() == loop_thread
            seen.append(p)

        built = await build_context(root, tmp_path / "spool", tmp_path / "cache", progress=progress)
        await asyncio.sleep(0)
        assert seen[-1].files_done == seen[-1].files_total == 501
        assert seen[-1].bytes_done == 500 * 1000 + 1
        assert (await build_context(root, tmp_path / "spool", tmp_path / "cache")).md5_hex == built.md5_hex

        flag = asyncio.Event()
        flag.set()
        with pytest.raises(Cancelled):
            await build_context(root, tmp_path / "spool2", tmp_path / "cache2", cancel=flag)
        assert os.listdir(tmp_path / "spool2") == []

    asyncio.run(main())


def test_file_that_changes_size_while_packaging_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tree(tmp_path / "src", BASE)
    plan = plan_context(root)
    (root / "train.py").write_text("a longer content than before\n")
    with pytest.raises(ContextError, match="changed while it was being packaged"):
        package(plan, tmp_path / "spool")
    assert os.listdir(tmp_path / "spool") == []


def test_big_file_that_shrinks_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tree(tmp_path / "src", {"Dockerfile": "x"})
    (root / "big").write_bytes(b"z" * (pack.BIG_FILE + 10))
    plan = plan_context(root)
    os.truncate(root / "big", 100)
    with pytest.raises(ContextError, match="shrank"):
        package(plan, tmp_path / "spool")


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="is not a directory"):
        build(tmp_path / "missing", tmp_path / "t")


def test_a_cache_hit_reads_no_content(tmp_path: Path, old_ns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbd.context as context

    root = write_tree(tmp_path / "src", BASE, mtime_ns=old_ns)
    first = build(root, tmp_path / "t")

    def no_packaging(*args: object, **kwargs: object) -> None:
        raise AssertionError("packaged although unchanged")

    monkeypatch.setattr(context, "package", no_packaging)
    hit = build(root, tmp_path / "t")
    assert hit.cached and hit.md5_hex == first.md5_hex


def test_stale_partial_archives_are_removed_recent_ones_kept(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"Dockerfile": "x"})
    spool = tmp_path / "spool"
    spool.mkdir()
    stale, recent = spool / ".ctx-dead.partial", spool / ".ctx-busy.partial"
    stale.write_bytes(b"half")
    recent.write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * pack.STALE_PARTIAL_SECONDS,) * 2)
    built = build_context_sync(root, spool, tmp_path / "cache")
    assert sorted(os.listdir(spool)) == sorted([".ctx-busy.partial", os.path.basename(built.path)])


def test_a_failing_write_is_a_clear_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", BASE)
    (root / "big.bin").write_bytes(os.urandom(6 << 20))
    target = tmp_path / "out"
    target.write_bytes(b"")
    fd = os.open(target, os.O_RDONLY)  # writes fail with EBADF
    try:
        with pytest.raises(ContextError, match="writing the build context failed"):
            pack.write_archive(plan_context(root), fd)
    finally:
        os.close(fd)
