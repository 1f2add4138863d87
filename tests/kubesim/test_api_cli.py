"""`python -m kubesim serve`: bad input ends with one clear line; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kubesim",
            "serve",
            "--state-dir",
            str(tmp_path / "state"),
            "--no-kubelet",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _serve(tmp_path, "--port", str(port))
    assert res.returncode == 2
    assert f"kubesim: cannot listen on 127.0.0.1:{port}" in res.stderr and "pick another --port" in res.stderr


def test_malformed_pairs(tmp_path: Path) -> None:
    res = _serve(tmp_path, "--forbid", "nobody")
    assert res.returncode != 0 and "--forbid must look like A=B, got 'nobody'" in res.stderr


def test_sigterm_stops_cleanly_and_writes_files(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "out" / "kc.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubesim",
            "serve",
            "--state-dir",
            str(tmp_path / "state"),
            "--no-kubelet",
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info_path = tmp_path / "state" / "server.json"
        deadline = time.monotonic() + 30
        while not info_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(info_path.read_text())
        assert info["url"].startswith("http://127.0.0.1:") and info["kubeconfig"] == str(kubeconfig)
        assert info["url"] in kubeconfig.read_text()
        assert (kubeconfig.stat().st_mode & 0o777) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.startswith(f"kubesim serving {info['url']}")
