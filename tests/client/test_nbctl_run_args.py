"""`nbctl run` and `kubectl notebook run` refuse bad input before they reach the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def nbctl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # A socket nothing answers on: a command that got as far as the daemon would say so.
    env["NBD_SOCKET"] = "/nonexistent/nbd.sock"
    return subprocess.run(
        [sys.executable, "-m", "nbctl", *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd
    )


def kubectl_notebook(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from nbctl.main import kubectl_plugin_main; sys.exit(kubectl_plugin_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run"], 2, "nbctl: no command to run; put it after `--`, e.g. `nbctl run -- python train.py`\n"),
        (
            ["run", "--"],
            2,
            "nbctl: no command to run; put it after `--`, e.g. `nbctl run -- python train.py`\n",
        ),
        (
            ["run", "--nodes", "0", "--", "python", "t.py"],
            1,
            "nbctl: --nodes 0 is out of range; give 1 node or more\n",
        ),
        (["run", "--ttl", "-1", "--", "true"], 1, "nbctl: --ttl must be 0 seconds or more\n"),
        (
            ["run", "--detach", "--fetch", "--", "true"],
            1,
            "nbctl: --fetch waits for the run to end and --detach does not; use `nbctl fetch RUN` later\n",
        ),
        (["run", "--env", "NOEQUALS", "--", "true"], 1, "nbctl: --env 'NOEQUALS' is not KEY=VALUE\n"),
        (
            ["run", "/no/such/dir", "--", "true"],
            1,
            "nbctl: /no/such/dir is not a directory; give the directory of the notebook project\n",
        ),
    ],
)
def test_bad_run_requests(args: list[str], code: int, message: str, tmp_path: Path) -> None:
    done = nbctl(*args, cwd=tmp_path)
    assert done.returncode == code, done
    assert done.stderr == message
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("argv", "flags", "command"),
    [
        (["run", "--", "python", "t.py", "--nodes", "0"], ["run"], ["python", "t.py", "--nodes", "0"]),
        (
            ["run", "d", "--nodes", "2", "--", "torchrun", "--", "x"],
            ["run", "d", "--nodes", "2"],
            ["torchrun", "--", "x"],
        ),
        (["run", "--nodes", "2"], ["run", "--nodes", "2"], None),
        (["logs", "x", "--", "y"], ["logs", "x", "--", "y"], None),
    ],
)
def test_the_command_after_dashes_keeps_its_own_flags(
    argv: list[str], flags: list[str], command: list[str] | None
) -> None:
    from nbctl.main import _split_command

    assert _split_command(argv) == (flags, command)


def test_kubectl_notebook_run_is_nbctl_run() -> None:
    done = kubectl_notebook("run", "--nodes", "0", "--", "true")
    assert done.returncode == 1
    assert done.stderr == "kubectl notebook: --nodes 0 is out of range; give 1 node or more\n"
    done = kubectl_notebook("run")
    assert done.returncode == 2 and "no command to run" in done.stderr
