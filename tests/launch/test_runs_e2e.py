"""`nbctl run` end to end, as a person uses it: the local cluster, the controller, the daemon.

Each test runs `nbctl` as a subprocess against the module's daemon and reads what a person reads:
stdout (the run's own output), stderr (nbd's lines), the exit code. The projects are small (a
`python:3.11-slim` image with the directory copied in), except where a notebook must open or torch
must train.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polling
import pytest
from fixtures_daemon import DaemonProcess, NbdDirs, _spawn, _wait_serving
from launchkit import REPO, LaunchKit, age, api_url, http_get, make_project

SLIM = "FROM python:3.11-slim\nWORKDIR /content\nCOPY . /content\n"


def project(root: Path, name: str, files: dict[str, str], dockerfile: str = SLIM) -> Path:
    target = root / name
    target.mkdir(parents=True)
    (target / "Dockerfile").write_text(dockerfile)
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    age(target)
    return target


def run(kit: LaunchKit, directory: Path, ns: str, *args: str, timeout: float = 300.0) -> Any:
    return kit.nbctl("run", str(directory), "-n", ns, *args, timeout=timeout)


def run_json(kit: LaunchKit, directory: Path, ns: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = run(kit, directory, ns, "--output", "json", *args)
    return (
        proc.returncode,
        [json.loads(line) for line in proc.stdout.splitlines() if line.strip()],
        proc.stderr,
    )


def run_object(kit: LaunchKit, ns: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        obj: dict[str, Any] = kit.stack.custom().get_namespaced_custom_object(
            "nbd.dev", "v1alpha1", ns, "runs", name
        )
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def build_jobs(kit: LaunchKit, ns: str) -> list[Any]:
    return list(kit.stack.batch().list_namespaced_job(ns, label_selector="nbd.dev/component=build").items)


SCRIPT = """\
    import os, sys
    print("hello from the run", flush=True)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/result.txt", "w") as f:
        f.write("forty-two\\n")
    print("wrote outputs/result.txt", flush=True)
    sys.exit(3)
"""


def test_a_run_streams_its_log_exits_with_its_code_and_its_outputs_come_back(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    directory = project(tmp_path, "job", {"job.py": SCRIPT})
    proc = run(kit, directory, ns, "--name", "job-one", "--", "python", "job.py")
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "hello from the run\nwrote outputs/result.txt\n"
    assert "==> failed, exit code 3" in proc.stderr

    status = kit.nbctl("status", "job-one", "-n", ns)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^exit code +3$", status.stdout, re.M), status.stdout
    listed = kit.nbctl("runs", "-n", ns)
    assert listed.returncode == 0 and "job-one" in listed.stdout and "failed" in listed.stdout

    # The outputs outlive the run's pod, and come back into the directory it ran from.
    fetched = kit.nbctl("fetch", "job-one", "-n", ns, timeout=300)
    assert fetched.returncode == 0, fetched.stderr
    assert (directory / "outputs" / "result.txt").read_text() == "forty-two\n"
    assert "fetched 1 file(s)" in fetched.stderr

    # A local edit since the fetch is never overwritten: the run's version goes beside it.
    (directory / "outputs" / "result.txt").write_text("my edit\n")
    again = kit.nbctl("fetch", "job-one", "-n", ns, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (directory / "outputs" / "result.txt").read_text() == "my edit\n"
    copies = sorted(p.name for p in (directory / "outputs").iterdir() if "conflict-run" in p.name)
    assert len(copies) == 1 and (directory / "outputs" / copies[0]).read_text() == "forty-two\n"
    assert "kept your result.txt" in again.stderr


def test_a_run_of_launched_content_neither_uploads_nor_builds_and_the_notebook_sees_its_outputs(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    directory = make_project(tmp_path)
    launched = kit.launch(directory, ns)
    assert launched.rc == 0, launched.stderr
    jobs = len(build_jobs(kit, ns))
    write = "import os; os.makedirs('outputs', exist_ok=True); open('outputs/score.txt', 'w').write('0.93\\n'); print('same image')"
    rc, events, stderr = run_json(kit, directory, ns, "--name", "after-launch", "--", "python", "-c", write)
    assert rc == 0, stderr
    cached = {e["cached"]["step"] for e in events if "cached" in e}
    assert {"STEP_UPLOAD", "STEP_BUILD"} <= cached
    assert not [
        e for e in events if "phase" in e and e["phase"]["phase"] in ("PHASE_UPLOADING", "PHASE_BUILDING")
    ]
    assert [e["log"]["text"] for e in events if "log" in e] == ["same image"]
    assert len(build_jobs(kit, ns)) == jobs
    finished = [e["finished"] for e in events if "finished" in e]
    assert finished and finished[-1]["phase"] == "RUN_PHASE_SUCCEEDED" and finished[-1]["image"]

    # The run's outputs come into the directory, and the notebook of that directory sees them
    # through its sync.
    fetched = kit.nbctl("fetch", "after-launch", "-n", ns, timeout=300)
    assert fetched.returncode == 0, fetched.stderr
    assert (directory / "outputs" / "score.txt").read_text() == "0.93\n"
    url = api_url(launched.url, "api/contents/outputs/score.txt")

    def in_the_notebook() -> bool:
        code, body = http_get(url)
        return code == 200 and json.loads(body).get("content") == "0.93\n"

    polling.wait_for(in_the_notebook, timeout=60, what="the fetched output in the notebook's /content")


RANKS = """\
    import os, socket, sys, time
    rank = int(os.environ["NODE_RANK"])
    world = int(os.environ["WORLD_SIZE"])
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    print(f"rank {rank} of {world}, master {addr}:{port}", flush=True)
    if rank == 0:
        server = socket.create_server(("0.0.0.0", port))
        conn, _ = server.accept()
        got = conn.recv(100).decode()
        print(f"rank 0 got {got!r}", flush=True)
        conn.sendall(b"welcome")
        conn.close()
    else:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = socket.create_connection((addr, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.sendall(f"hello from rank {rank}".encode())
        print(f"rank {rank} got {conn.recv(100).decode()!r}", flush=True)
"""


def test_two_ranks_meet_through_master_addr(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    directory = project(tmp_path, "ranks", {"ranks.py": RANKS})
    proc = run(kit, directory, ns, "--name", "ranks", "--nodes", "2", "--", "python", "ranks.py")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "[rank 0] rank 0 got 'hello from rank 1'" in lines
    assert "[rank 1] rank 1 got 'welcome'" in lines
    assert any(line.startswith("[rank 1] rank 1 of 2, master ranks-0.ranks") for line in lines), lines


def test_a_failing_rank_fails_the_run_and_stops_the_others(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    script = """\
        import os, sys, time
        if os.environ["NODE_RANK"] == "1":
            print("rank 1 fails", flush=True)
            sys.exit(7)
        print("rank 0 waits", flush=True)
        time.sleep(600)
    """
    directory = project(tmp_path, "fail", {"fail.py": script})
    proc = run(kit, directory, ns, "--name", "failing", "--nodes", "2", "--", "python", "fail.py")
    assert proc.returncode == 7, proc.stderr
    assert "[rank 1] rank 1 fails" in proc.stdout.splitlines()
    assert "exit code 7 (rank 1)" in proc.stderr
    # Rank 0 does not sleep on: its pod goes with the failed run.
    polling.wait_for(
        lambda: all(
            (p.status.phase in ("Failed", "Succeeded")) or p.metadata.deletion_timestamp
            for p in kit.pods(ns, "nbd.dev/run=failing")
        ),
        timeout=90,
        what="rank 0's pod to stop",
    )


@pytest.fixture
def own_daemon() -> Iterator[tuple[NbdDirs, list[DaemonProcess]]]:
    dirs = NbdDirs(Path(tempfile.mkdtemp(prefix="nbdr-", dir="/tmp")))
    home = dirs.root / "home"
    home.mkdir(parents=True)
    started: list[DaemonProcess] = []
    try:
        yield dirs, started
    finally:
        for d in started:
            d.stop()
        shutil.rmtree(dirs.root, ignore_errors=True)


def _start(dirs: NbdDirs) -> DaemonProcess:
    d = _spawn(dirs, None, {"HOME": str(dirs.root / "home"), "KUBECONFIG": ""}, ())
    d.env.pop("KUBECONFIG", None)
    _wait_serving(d)
    return d


def test_detach_then_logs_follow_from_a_restarted_daemon_then_stop(
    kit: LaunchKit, ns: str, tmp_path: Path, own_daemon: tuple[NbdDirs, list[DaemonProcess]]
) -> None:
    dirs, started = own_daemon
    first = _start(dirs)
    started.append(first)
    script = """\
        import time
        print("started", flush=True)
        for i in range(3):
            time.sleep(1)
            print(f"tick {i}", flush=True)
    """
    directory = project(tmp_path, "detached", {"d.py": script, "long.py": "import time\ntime.sleep(600)\n"})
    env = {"KUBECONFIG": kit.kubeconfig}
    proc = first.run_nbctl(
        "run",
        str(directory),
        "-n",
        ns,
        "--name",
        "detached",
        "--detach",
        "--",
        "python",
        "d.py",
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "detached\n" and "is running" in proc.stderr

    # The laptop goes away: the daemon stops. The run goes on in the cluster.
    first.stop()
    second = _start(dirs)
    started.append(second)
    follow = second.run_nbctl("logs", "detached", "-n", ns, "-f", env=env, timeout=300)
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == ["started", "tick 0", "tick 1", "tick 2"]

    # Stop: the pods go, the Run and its phase stay.
    proc = second.run_nbctl(
        "run",
        str(directory),
        "-n",
        ns,
        "--name",
        "long",
        "--detach",
        "--",
        "python",
        "long.py",
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stopped = second.run_nbctl("stop", "long", "-n", ns, env=env, timeout=200)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("run long: stopped")
    polling.wait_for(
        lambda: not kit.pods(ns, "nbd.dev/run=long,nbd.dev/component=run"),
        timeout=90,
        what="the run's pods to go",
    )
    obj = run_object(kit, ns, "long")
    assert obj is not None and obj["status"]["phase"] == "Stopped"


def test_unknown_runs_and_bad_input_say_what_to_do(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    for args, message in (
        (
            ("status", "nope", "-n", ns),
            "nbctl: no session or run nope; `nbctl list` shows the sessions, `nbctl runs` the runs\n",
        ),
        (
            ("logs", "nope", "--run", "-n", ns),
            f"nbctl: no run 'nope' in namespace {ns}; `nbctl runs` lists the runs\n",
        ),
        (
            ("stop", "nope", "--run", "-n", ns),
            f"nbctl: no run 'nope' in namespace {ns}; `nbctl runs` lists the runs\n",
        ),
        (
            ("fetch", "nope", "-n", ns),
            f"nbctl: no run 'nope' in namespace {ns}; `nbctl runs` lists the runs\n",
        ),
    ):
        proc = kit.nbctl(*args)
        assert proc.returncode == 1 and proc.stderr == message, (args, proc.stderr)
    directory = project(tmp_path, "bad", {"x.py": "print(1)\n"})
    proc = run(kit, directory, ns, "--name", "Bad_Name", "--", "python", "x.py")
    assert proc.returncode == 1
    assert proc.stderr.startswith("nbctl: run name 'Bad_Name' is not valid")
    empty = kit.nbctl("runs", "-n", ns)
    assert empty.returncode == 0 and "no runs in namespace" in empty.stderr


def _torch_wheel_available() -> bool:
    import subprocess
    import sys

    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-index",
            "-d",
            tempfile.mkdtemp(),
            "torch==2.13.0",
        ],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _torch_wheel_available(),
    reason="no local torch 2.13.0 wheel; the socket test covers the ranks meeting",
)
@pytest.mark.timeout(1200)
def test_torchrun_on_two_nodes_all_reduces_with_gloo(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    directory = make_project(tmp_path, "ddp", source=REPO / "examples" / "ddp")
    # The example's own training, without its JupyterLab layer (a run needs none).
    (directory / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY requirements.txt /tmp/requirements.txt\n"
        "RUN pip install -r /tmp/requirements.txt\nWORKDIR /content\nCOPY . /content\n"
    )
    age(directory)
    proc = run(
        kit,
        directory,
        ns,
        "--name",
        "ddp",
        "--nodes",
        "2",
        "--fetch",
        "--",
        "torchrun",
        "train.py",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "[rank 0] rank 0/2: all_reduce gives 3 (expected 3)" in lines, lines
    assert "[rank 1] rank 1/2: all_reduce gives 3 (expected 3)" in lines, lines
    assert "fetched 2 file(s)" in proc.stderr
    metrics = json.loads((directory / "outputs" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["loss"] < 1.0
