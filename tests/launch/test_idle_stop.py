"""Idle auto-stop end to end: a notebook left alone is suspended by the controller, one in use or
with a busy kernel is not, and a relaunch resumes it without uploading or building again.

The shared cluster's controller looks at an idle-stopping notebook every second; this module's
daemon stamps the Notebook's activity every second while it is used (both are 60 s by default).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_daemon import DaemonProcess, NbdDirs, _spawn, _wait_serving
from fixtures_stack import LocalStack
from jupyterkit import busy_for, kernel_state, start_kernel
from launchkit import LaunchKit, make_project, wait_until

from nbdcontract import duration_seconds

pytestmark = pytest.mark.timeout(300)

PACKAGE, UPLOAD, BUILD = "STEP_PACKAGE", "STEP_UPLOAD", "STEP_BUILD"
STOP_AFTER = 6


@pytest.fixture(scope="module")
def launch_daemon() -> Iterator[DaemonProcess]:
    dirs = NbdDirs(Path(tempfile.mkdtemp(prefix="nbdi-", dir="/tmp")))
    home = dirs.root / "home"
    home.mkdir(parents=True)
    d = _spawn(dirs, None, {"HOME": str(home), "KUBECONFIG": "", "NBD_ACTIVITY_INTERVAL": "1"}, ())
    d.env.pop("KUBECONFIG", None)
    try:
        _wait_serving(d)
        yield d
    finally:
        d.stop()
        shutil.rmtree(dirs.root, ignore_errors=True)


def _ready_condition(notebook: dict[str, Any]) -> dict[str, Any]:
    for condition in (notebook.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return dict(condition)
    return {}


def _idle_stopped(kit: LaunchKit, ns: str, name: str) -> dict[str, Any] | None:
    notebook = kit.notebook(ns, name)
    if notebook and _ready_condition(notebook).get("reason") == "IdleStopped":
        return notebook
    return None


def test_an_unused_notebook_stops_one_in_use_does_not_and_a_relaunch_resumes_it(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, unique=True)
    first = kit.launch(project, ns, "--idle-stop", f"{STOP_AFTER}s")
    assert first.rc == 0, first.stderr
    name = first.ready["session"]["name"]
    notebook = kit.notebook(ns, name)
    assert notebook is not None and notebook["spec"]["idle"] == {"stopAfter": f"{STOP_AFTER}s"}

    # The controller publishes when it will stop; `nbctl status` and `list` show it.
    wait_until(
        lambda: ((kit.notebook(ns, name) or {}).get("status") or {}).get("idle", {}).get("stopAt"),
        30,
        "status.idle.stopAt",
    )
    status = wait_until(
        lambda: (
            (p := kit.nbctl("status", f"{ns}/{name}")).returncode == 0
            and "auto-stop:" in p.stdout
            and p.stdout
        ),
        30,
        "auto-stop in nbctl status",
    )
    assert f"after {STOP_AFTER}s idle" in status
    listed = kit.nbctl("list")
    assert "AUTO-STOP" in listed.stdout

    # A connection held open through nbd's forward is use: the daemon stamps the activity, and
    # the notebook outlives its deadline several times over.
    port = urllib.parse.urlsplit(first.url).port
    held = socket.create_connection(("127.0.0.1", int(port or 0)))
    try:
        wait_until(
            lambda: (
                "nbd.dev/activity" in ((kit.notebook(ns, name) or {})["metadata"].get("annotations") or {})
            ),
            20,
            "the daemon's activity stamp",
        )
        deadline = time.monotonic() + 3 * STOP_AFTER
        while time.monotonic() < deadline:
            assert not (kit.notebook(ns, name) or {})["spec"].get("suspend"), "stopped while in use"
            time.sleep(0.5)
    finally:
        held.close()

    # Left alone (the daemon's forward, its probe and the sync still running): stopped.
    stopped = wait_until(lambda: _idle_stopped(kit, ns, name), 60, "the idle stop")
    assert stopped["spec"]["suspend"] is True
    mark = stopped["metadata"]["annotations"]["nbd.dev/idle-stopped"]
    assert _ready_condition(stopped)["message"] == (
        f"Stopped after {mark} idle; launch it again to resume (its workspace is kept)."
    )
    assert stopped["status"]["phase"] == "Suspended"
    wait_until(lambda: not kit.pods(ns, f"nbd.dev/notebook={name}"), 30, "the pod to go")
    session = wait_until(
        lambda: (s := kit.session(ns, name)) and s.get("phase") == "PHASE_SUSPENDED" and s, 30, "the session"
    )
    assert session["message"].startswith(f"stopped after {mark} idle")
    assert "nbctl launch" in session["message"]
    shown = kit.nbctl("status", f"{ns}/{name}")
    assert shown.returncode == 0 and "stopped after" in shown.stdout

    # The same directory again: resumed with nothing uploaded or built, and the mark is gone.
    again = kit.launch(project, ns)
    assert again.rc == 0, again.stderr
    assert {UPLOAD, BUILD} <= again.cached_steps()
    resumed = wait_until(
        lambda: (
            (n := kit.notebook(ns, name))
            and "nbd.dev/idle-stopped" not in (n["metadata"].get("annotations") or {})
            and n
        ),
        30,
        "the idle-stop mark to go",
    )
    assert not resumed["spec"].get("suspend")


def test_a_busy_kernel_is_never_stopped_even_with_no_client(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, unique=True)
    launched = kit.launch(project, ns, "--idle-stop", f"{STOP_AFTER}s", "--no-sync")
    assert launched.rc == 0, launched.stderr
    name = launched.ready["session"]["name"]
    kernel = start_kernel(launched.url)
    cell = 4 * STOP_AFTER
    busy_for(launched.url, kernel, cell)  # returns with its socket closed; the cell runs on
    started = time.monotonic()
    wait_until(
        lambda: ((kit.notebook(ns, name) or {}).get("status") or {}).get("idle", {}).get("busy"),
        20,
        "the controller to see the busy kernel",
    )
    # Busy for several deadlines with no connection at all: never stopped.
    while kernel_state(launched.url, kernel) == "busy":
        notebook = kit.notebook(ns, name) or {}
        assert not notebook["spec"].get("suspend"), "a busy notebook was stopped"
        assert time.monotonic() - started < cell + 30, "the cell never ended"
        time.sleep(0.5)
    assert time.monotonic() - started > 2 * STOP_AFTER
    # Once the cell is done (and these polls of its state, Jupyter API requests, stopped), the
    # idle time counts again and the notebook is stopped.
    stopped = wait_until(lambda: _idle_stopped(kit, ns, name), 60, "the idle stop after the cell")
    assert duration_seconds(stopped["metadata"]["annotations"]["nbd.dev/idle-stopped"]) >= STOP_AFTER


def test_a_bad_idle_stop_is_one_line_before_anything_is_packaged(
    kit: LaunchKit, ns: str, tmp_path: Path, local_stack: LocalStack
) -> None:
    project = make_project(tmp_path, unique=True)
    proc = kit.nbctl("launch", str(project), "-n", ns, "--idle-stop", "soon")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and "--idle-stop" in lines[-1] and "is not a duration" in lines[-1], proc.stderr
    (project / "notebook.yaml").write_text("idle:\n  stopAfter: 2 hours\n")
    proc = kit.nbctl("launch", str(project), "-n", ns)
    assert proc.returncode != 0 and "idle.stopAfter" in proc.stderr and "e.g. 2h" in proc.stderr
    assert kit.notebook(ns, project.name) is None
