"""Where the daemon lives: the rules shared by the daemon and every client."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbdlocal.paths import resolve

HOME = {"HOME": "/home/u"}


@pytest.mark.parametrize(
    "env, socket, state_dir, expected_socket, expected_state",
    [
        (HOME, None, None, "/home/u/.local/state/nbd/nbd.sock", "/home/u/.local/state/nbd"),
        ({**HOME, "XDG_STATE_HOME": "/xdg/state"}, None, None, "/xdg/state/nbd/nbd.sock", "/xdg/state/nbd"),
        (
            {**HOME, "XDG_RUNTIME_DIR": "/run/user/1"},
            None,
            None,
            "/run/user/1/nbd/nbd.sock",
            "/home/u/.local/state/nbd",
        ),
        ({**HOME, "NBD_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}, None, None, "/s/nbd.sock", "/s"),
        (
            {**HOME, "NBD_SOCKET": "/t/n.sock", "XDG_RUNTIME_DIR": "/run/user/1"},
            None,
            None,
            "/t/n.sock",
            "/home/u/.local/state/nbd",
        ),
        (
            {**HOME, "NBD_SOCKET": "/t/n.sock", "NBD_STATE_DIR": "/s"},
            "/flag.sock",
            "/flagstate",
            "/flag.sock",
            "/flagstate",
        ),
        (
            {**HOME, "XDG_RUNTIME_DIR": "", "XDG_STATE_HOME": ""},
            None,
            "/only/state",
            "/only/state/nbd.sock",
            "/only/state",
        ),
    ],
)
def test_rules(env, socket, state_dir, expected_socket, expected_state):
    paths = resolve(socket=socket, state_dir=state_dir, env=env)
    assert paths.socket == Path(expected_socket)
    assert paths.state_dir == Path(expected_state)
    assert paths.log_file == Path(expected_state) / "nbd.log"
    assert paths.lock_file == Path(expected_state) / "nbd.lock"
    assert paths.sessions_dir == Path(expected_state) / "sessions"
    assert paths.target == f"unix:{expected_socket}"


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = resolve(socket="s.sock", state_dir="st", env=HOME)
    assert paths.socket == tmp_path / "s.sock" and paths.state_dir == tmp_path / "st"


def test_socket_path_length_is_checked():
    assert resolve(socket="/tmp/" + "a" * 102, env=HOME).socket_problem() is None
    problem = resolve(socket="/tmp/" + "a" * 103, env=HOME).socket_problem()
    assert problem is not None and "too long for a Unix socket (108 bytes, at most 107)" in problem
