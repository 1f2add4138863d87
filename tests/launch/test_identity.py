"""The daemon's identity on the Notebooks it writes: kept in its state dir, one per state dir."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

from nbd.launch.live import daemon_identity


def test_kept_across_starts_and_distinct_per_state_dir(tmp_path: Path) -> None:
    first = daemon_identity(str(tmp_path / "a"))
    assert first.startswith(f"{getpass.getuser()}@{socket.gethostname()}#")
    assert daemon_identity(str(tmp_path / "a")) == first
    assert (tmp_path / "a" / "identity").read_text().strip() == first.rsplit("#", 1)[1]
    assert daemon_identity(str(tmp_path / "b")) != first


def test_an_empty_identity_file_gets_a_new_id(tmp_path: Path) -> None:
    (tmp_path / "identity").write_text("\n")
    ident = daemon_identity(str(tmp_path))
    assert ident.rsplit("#", 1)[1] == (tmp_path / "identity").read_text().strip() != ""


def test_a_state_dir_that_cannot_keep_it_gets_one_for_this_run(tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state dir should be")
    one, two = daemon_identity(str(blocked)), daemon_identity(str(blocked))
    assert one != two  # not kept
    assert one.startswith(f"{getpass.getuser()}@{socket.gethostname()}#")
    assert "cannot keep the daemon's identity" in caplog.text
