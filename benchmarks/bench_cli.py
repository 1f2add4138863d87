"""How fast the CLI answers: `nbctl list --output json` against a running daemon.

The CLI must feel instant, which on Python means it may cost little more than starting Python and
importing gRPC (it needs both). Baselines measured in the same run with the same interpreter:
`python -c pass` and `python -c "import grpc"`. Target: nbctl list <= 2x `python -c "import grpc"`.
Also reported: the first call with no daemon running (it starts the daemon, waits for it, answers).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure, median, time_commands

NAME = "cli"

TARGET_RATIO = 2.0


def _nbctl() -> list[str]:
    script = Path(sys.executable).with_name("nbctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nbctl"]


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "NBD_SOCKET": str(root / "nbd.sock"), "NBD_STATE_DIR": str(root / "state")}


def _start_daemon(root: Path) -> subprocess.Popen[bytes]:
    from nbdclient.daemon import wait_until_serving
    from nbdlocal.paths import resolve

    env = _env(root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbd", "--capabilities", "none"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_serving(resolve(env=env), proc, 30.0)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cold_start_ms(runs: int) -> float:
    """Median ms of a first `nbctl list` that has to start the daemon, which is then stopped."""
    samples = []
    for _ in range(runs):
        root = Path(tempfile.mkdtemp(prefix="nbdb-", dir="/tmp"))
        env = _env(root)
        try:
            start = time.perf_counter()
            subprocess.run(
                [*_nbctl(), "list", "--output", "json"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            samples.append((time.perf_counter() - start) * 1000)
            subprocess.run([*_nbctl(), "daemon", "stop"], env=env, check=True, stdout=subprocess.DEVNULL)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return median(samples)


def run(quick: bool = False) -> list[Figure]:
    runs = 20 if quick else 40
    root = Path(tempfile.mkdtemp(prefix="nbdb-", dir="/tmp"))
    daemon = _start_daemon(root)
    try:
        py = sys.executable
        samples = time_commands(
            {
                "pass": [py, "-c", "pass"],
                "grpc": [py, "-c", "import grpc"],
                "json": [*_nbctl(), "list", "--output", "json"],
                "text": [*_nbctl(), "list"],
            },
            runs,
            env=_env(root),
        )
        python_pass, import_grpc, list_json, list_text = (
            median(samples[k]) * 1000 for k in ("pass", "grpc", "json", "text")
        )
    finally:
        _stop(daemon)
        shutil.rmtree(root, ignore_errors=True)
    cold = _cold_start_ms(3 if quick else 5)
    baseline = 'python -c "import grpc"'
    return [
        Figure(
            "nbctl list --output json (median)",
            list_json,
            "ms",
            baseline=baseline,
            baseline_value=import_grpc,
            target=f"<= {TARGET_RATIO:g}x baseline",
            met=list_json <= TARGET_RATIO * import_grpc,
        ),
        Figure(
            "nbctl list (text, median)",
            list_text,
            "ms",
            baseline=baseline,
            baseline_value=import_grpc,
            target=f"<= {TARGET_RATIO:g}x baseline",
            met=list_text <= TARGET_RATIO * import_grpc,
        ),
        Figure("python -c pass (median)", python_pass, "ms"),
        Figure(
            'python -c "import grpc" (median)',
            import_grpc,
            "ms",
            baseline="python -c pass",
            baseline_value=python_pass,
        ),
        Figure("first nbctl list, daemon autostarted (median)", cold, "ms"),
    ]
