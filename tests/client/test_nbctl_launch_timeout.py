"""`nbctl launch --timeout`: durations as people write them, refused in one line otherwise."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbctl.errors import CommandError
from nbctl.launch import build_request, parse_duration
from nbctl.main import _launch_flags


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200), ("90s", 90), ("90", 90), ("1h30m", 5400), ("2h", 7200), (" 5m ", 300)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "--timeout 'soon' is not a duration; give e.g. 20m, 90s or 1h30m"),
        ("20 m", "is not a duration"),
        ("m", "is not a duration"),
        ("-5m", "is not a duration"),
        ("0s", "must be between 1s and 24h"),
        ("25h", "must be between 1s and 24h"),
    ],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_duration(text)


def _args(tmp_path: Path, *flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", nargs="?")
    parser.add_argument("--output", default="text")
    _launch_flags(parser)
    return parser.parse_args([str(tmp_path), *flags])


def test_the_request_carries_the_timeout(tmp_path: Path) -> None:
    assert build_request(_args(tmp_path, "--timeout", "20m")).timeout_seconds == 1200
    assert build_request(_args(tmp_path)).timeout_seconds == 0


def test_a_bad_timeout_never_reaches_the_daemon(tmp_path: Path) -> None:
    env = dict(os.environ, NBD_SOCKET="/nonexistent/nbd.sock")
    proc = subprocess.run(
        [sys.executable, "-m", "nbctl", "launch", str(tmp_path), "--timeout", "tomorrow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr == "nbctl: --timeout 'tomorrow' is not a duration; give e.g. 20m, 90s or 1h30m\n"
