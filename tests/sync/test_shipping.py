"""The agent's shipping: one deterministic zipapp of the agent package, runnable on the oldest
Python the agent promises, sent to the pod only when its hash is not cached there; and the daemon
imports the very path, frame and ignore code the pod runs (no twin left on the daemon's side)."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nbd.sync
import nbd.sync.agent
from nbd.sync import local, remote, session, sides, snapshot
from nbd.sync.agent import frames, ignore, paths, server, tree
from nbd.sync.agent.frames import PROTOCOL_VERSION, FrameDecoder, encode_frame
from nbd.sync.remote import RemoteEndpoint, local_process_factory
from nbd.sync.shipping import BOOTSTRAP, AgentApp, agent_app, agent_command, agent_sources, build_zipapp, ship

from .conftest import oldest_python, parse, recording_factory, run

AGENT_DIR = Path(nbd.sync.agent.__file__).parent

# Every module the agent may import: the standard library of Python 3.8 that it needs.
AGENT_STDLIB = {
    "__future__",
    "errno",
    "hashlib",
    "json",
    "os",
    "re",
    "stat",
    "struct",
    "sys",
    "threading",
    "time",
    "typing",
    "zlib",
    "ctypes",
    "select",
    "queue",
    "fcntl",
    "cProfile",
}
BOOTSTRAP_STDLIB = {"hashlib", "os", "sys", "runpy", "importlib", "io", "zipfile"}


def _archive(app: AgentApp | None = None) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO((app or agent_app()).data))


def _pythons() -> list[Any]:
    """This Python and the oldest the agent promises (when this machine has one)."""
    old = oldest_python()
    return [
        pytest.param(sys.executable, id="this-python"),
        pytest.param(
            old, id="oldest-python", marks=pytest.mark.skipif(old is None, reason="no Python 3.8/3.9 here")
        ),
    ]


# -- the archive


def test_the_zipapp_is_built_deterministically() -> None:
    app = agent_app()
    sources = agent_sources()
    assert build_zipapp(sources) == app.data
    assert build_zipapp(list(reversed(sources))) == app.data  # the order files are listed in does not matter
    assert app.digest == hashlib.sha256(app.data).hexdigest()
    # Another process, another clock, time zone and umask: the same bytes.
    code = "from nbd.sync.shipping import agent_app; print(agent_app().digest)"
    for tz, umask in (("UTC", "022"), ("America/Los_Angeles", "077"), ("Asia/Kolkata", "002")):
        done = subprocess.run(
            ["sh", "-c", f'umask {umask} && exec "$0" -c "$1"', sys.executable, code],
            env={**os.environ, "TZ": tz},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.strip() == app.digest, (tz, umask)


def test_a_changed_source_changes_the_hash() -> None:
    sources = agent_sources()
    changed = [(name, data + b"\n" if name == "paths.py" else data) for name, data in sources]
    assert hashlib.sha256(build_zipapp(changed)).digest() != hashlib.sha256(build_zipapp(sources)).digest()


def test_the_zipapp_holds_the_package_files_and_an_entry_point() -> None:
    with _archive() as z:
        names = z.namelist()
        assert names[0] == "__main__.py"
        modules = sorted(p.name for p in AGENT_DIR.glob("*.py"))
        assert names[1:] == [f"nbd_agent/{m}" for m in modules]
        for m in modules:  # the pod runs the very files the daemon imports
            assert z.read(f"nbd_agent/{m}") == (AGENT_DIR / m).read_bytes()
        assert all(
            i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_STORED
            for i in z.infolist()
        )


def test_every_agent_module_and_the_bootstrap_are_python38_syntax() -> None:
    with _archive() as z:
        for name in z.namelist():
            parse(z.read(name), feature_version=(3, 8))
    parse(BOOTSTRAP, feature_version=(3, 8))


def _absolute_imports(tree: ast.Module) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_agent_imports_only_the_standard_library_and_itself() -> None:
    modules = {p.stem for p in AGENT_DIR.glob("*.py")}
    with _archive() as z:
        for name in z.namelist():
            module = parse(z.read(name))
            if name == "__main__.py":
                assert _absolute_imports(module) <= AGENT_STDLIB | {"nbd_agent"}
                continue
            assert _absolute_imports(module) <= AGENT_STDLIB, name
            for node in ast.walk(module):
                if isinstance(node, ast.ImportFrom) and node.level:
                    assert node.level == 1 and node.module in modules, (name, node.module)
    assert _absolute_imports(parse(BOOTSTRAP)) <= BOOTSTRAP_STDLIB


# -- running it


class _Agent:
    """The agent as a child process, spoken to in frames over its stdin/stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.decoder = FrameDecoder()
        self.frames: list[tuple[dict[str, Any], bytes]] = []

    def frame(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while not self.frames:
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
            assert data, self.proc.stderr.read() if self.proc.stderr else b""
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)[0]

    def request(self, header: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_frame(header))
        self.proc.stdin.flush()
        return self.frame()

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(30)


@pytest.mark.parametrize("python", _pythons())
def test_the_zipapp_runs_as_python_file_pyz(tmp_path: Path, python: str) -> None:
    pyz, root = tmp_path / "agent.pyz", tmp_path / "root"
    pyz.write_bytes(agent_app().data)
    root.mkdir()
    (root / "f").write_bytes(b"x")
    agent = _Agent([python, str(pyz), str(root)])
    try:
        hello = agent.frame()
        assert hello["op"] == "hello" and hello["version"] == PROTOCOL_VERSION and hello["root"] == str(root)
        assert agent.request({"op": "ping", "id": 1}) == {"id": 1, "ok": True}
        assert agent.request({"op": "write_end", "id": 2, "handle": 9, "path": "f"})["ok"] is False
    finally:
        assert agent.close() == 0


@pytest.mark.parametrize("python", _pythons())
def test_the_zipapp_refuses_a_missing_root(tmp_path: Path, python: str) -> None:
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(agent_app().data)
    done = subprocess.run(
        [python, str(pyz), str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "is not a directory" in done.stderr
    done = subprocess.run([python, str(pyz)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr


@pytest.mark.parametrize("python", _pythons())
def test_the_bootstrap_caches_runs_and_falls_back_to_memory(tmp_path: Path, python: str) -> None:
    """Sent once into a writable cache and run from there; run from memory where the cache
    cannot be written (nothing is left behind); on the oldest Python too."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    app = agent_app()

    async def go(cache: Path) -> int:
        sent: list[bytes] = []
        ep = RemoteEndpoint(recording_factory(sent), str(root), cache_dir=str(cache), python=python)
        await ep.start(lambda paths: None)
        try:
            assert ep.hello["version"] == PROTOCOL_VERSION
            assert set((await ep.scan()).entries) == {"a"}
        finally:
            await ep.close()
        return sent.count(app.data)

    cache = tmp_path / "cache"
    cache.mkdir()
    assert run(go(cache)) == 1
    assert (cache / f".nbd-agent-{app.digest}.pyz").read_bytes() == app.data
    assert run(go(cache)) == 0  # cached: nothing sent
    missing = tmp_path / "missing"
    assert run(go(missing)) == 1
    assert not missing.exists()


def test_a_corrupted_cached_copy_is_sent_again(tmp_path: Path) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    cache.mkdir()
    app = agent_app()
    cached = cache / f".nbd-agent-{app.digest}.pyz"
    cached.write_bytes(app.data[:-1] + b"?")

    async def go() -> None:
        ep = RemoteEndpoint(local_process_factory, str(root), cache_dir=str(cache))
        await ep.start(lambda paths: None)
        await ep.close()

    run(go())
    assert cached.read_bytes() == app.data


@pytest.mark.parametrize(
    "sent, code, message",
    [
        (
            lambda data: data[:-1] + bytes([data[-1] ^ 1]),
            4,
            "corrupted transfer",
        ),  # the right size, other bytes
        (lambda data: data[: len(data) // 2], 3, ""),  # the stream ends before all of it came
    ],
)
def test_the_bootstrap_refuses_a_bad_transfer(
    tmp_path: Path, sent: Callable[[bytes], bytes], code: int, message: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    app = agent_app()
    done = subprocess.run(
        agent_command(app, str(root), str(tmp_path), sys.executable),
        input=sent(app.data),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == code
    assert done.stdout == b"NBD-AGENT-SEND\n"  # never READY
    assert message.encode() in done.stderr
    assert not list(tmp_path.glob(".nbd-agent-*"))


def test_ship_sends_on_request_and_returns_what_follows_ready() -> None:
    app = AgentApp(b"zip", "0" * 64)
    incoming = [b"a line of noise\nNBD-AGENT-", b"SEND\n", b"NBD-AGENT-READY\nfirst frame"]
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    async def receive() -> bytes:
        return incoming.pop(0) if incoming else b""

    assert asyncio.run(ship(app, send, receive)) == b"first frame"
    assert sent == [b"zip"]
    incoming[:] = [b"NBD-AGENT-SEND\n"]  # the bootstrap exits before READY
    with pytest.raises(EOFError):
        asyncio.run(ship(app, send, receive))


# -- one rule, one place


def test_the_daemon_imports_the_agents_paths_frames_and_ignore_rules() -> None:
    def same(name: str, *modules: Any) -> bool:
        return len({id(vars(m)[name]) for m in modules}) == 1

    assert same("path_problem", remote, paths)  # what the daemon accepts from the pod ...
    assert same("check_path", tree, paths)  # ... is what the agent (and the local Tree) accepts
    assert (
        same("Tree", local, tree)
        and same("Refused", local, tree, paths)
        and same("TEMP_PREFIX", local, paths)
    )
    assert same("FrameDecoder", remote, frames) and same("ChunkPacker", remote, server, frames)
    assert same("pack_parts", remote, server, frames) and same("unpack_parts", remote, server, frames)
    assert same("rules_from_files", session, ignore) and same("is_rule_file", sides, ignore)
    assert same("IgnoreRules", tree, ignore)


SHARED = {
    "check_path",
    "path_problem",
    "failure_message",
    "frame_head",
    "encode_frame",
    "frame_parts",
    "FrameDecoder",
    "ChunkPacker",
    "pack_parts",
    "unpack_parts",
    "split_parts",
    "IgnoreRules",
    "rules_from_files",
    "is_rule_file",
    "_glob_to_regex",
}


def test_no_twin_of_the_shared_code_is_left_in_the_daemon() -> None:
    assert not hasattr(snapshot, "check_path")
    daemon = Path(nbd.sync.__file__).parent.parent
    for file in daemon.rglob("*.py"):
        if AGENT_DIR in file.parents:
            continue
        module = parse(file.read_text())
        defined = {n.name for n in ast.walk(module) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & SHARED, (file, defined & SHARED)
    # The remote endpoint compresses and frames only through the agent's frames module.
    assert "zlib" not in _absolute_imports(parse(Path(remote.__file__).read_text()))


def test_the_daemon_loads_only_the_agent_modules_it_shares() -> None:
    """The watcher and the request loop run only in the pod; the daemon's sync never loads them."""
    code = (
        "import sys, nbd.sync.session, nbd.sync.exec_transport; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('nbd.sync.agent.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    assert {
        "nbd.sync.agent.paths",
        "nbd.sync.agent.frames",
        "nbd.sync.agent.ignore",
        "nbd.sync.agent.tree",
    } <= loaded
    assert not loaded & {"nbd.sync.agent.server", "nbd.sync.agent.watcher", "nbd.sync.agent.__main__"}


@pytest.mark.parametrize(
    "path, message",
    [
        ("", "empty path"),
        (None, "empty path"),
        ("a\x00b", "path contains a NUL byte: 'a\\x00b'"),
        ("/etc/passwd", "absolute path: '/etc/passwd'"),
        ("a/../b", "path is not normalised (empty, '.' or '..' component): 'a/../b'"),
    ],
)
def test_a_refused_path_says_why_in_the_words_the_daemon_reports(path: Any, message: str) -> None:
    assert paths.path_problem(path) == message.split(": '")[0]
    with pytest.raises(paths.Refused) as e:
        paths.check_path(path)
    assert str(e.value) == message
