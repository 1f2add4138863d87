"""devstack's --store choice: a bad name and a running stack of another store are clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import up
from devstack.stack import STATE_FILE, StackError


def test_an_unknown_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unknown store 'azure': choose one of incluster, gcs, s3"):
        up(str(tmp_path), store="azure")
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "up", "--state-dir", str(tmp_path), "--store", "azure"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "invalid choice: 'azure'" in result.stderr


def test_a_running_stack_of_another_store_is_not_reused_silently(tmp_path: Path) -> None:
    # A stack recorded as running (its "processes" are this test's own, alive) with store gcs.
    record = {
        "state_dir": str(tmp_path),
        "kubeconfig": str(tmp_path / "kubeconfig"),
        "api_url": "http://127.0.0.1:1",
        "gcs_url": "http://127.0.0.1:2",
        "store": "gcs",
        "pids": {"kubesim": os.getpid()},
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(record))
    with pytest.raises(StackError) as caught:
        up(str(tmp_path), store="s3")
    assert "runs with store gcs; stop it first" in str(caught.value) and "devstack down" in str(caught.value)
    assert up(str(tmp_path), store="gcs").api_url == "http://127.0.0.1:1"  # the same store: reused
