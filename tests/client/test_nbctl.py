"""nbctl as users run it: a subprocess, its stdout, stderr and exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

import nbdclient
from nbdapi.v1 import notebooks_pb2 as pb

FORBIDDEN = ("nbd", "kubernetes", "aiohttp", "watchdog", "google.cloud", "rich")


def nbctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, **kw
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nbctl", *args],
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def kubectl_notebook(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from nbctl.main import kubectl_plugin_main; sys.exit(kubectl_plugin_main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60
    )


# A test runner started in the background inherits SIGINT ignored, and so would nbctl, whereas a
# user's terminal delivers it. This runs nbctl with Python's KeyboardInterrupt handler installed.
# (Not a pre-exec hook: forking a process that runs gRPC threads is unsafe.)
INTERRUPTIBLE_NBCTL = [
    sys.executable,
    "-c",
    "import signal, runpy; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('nbctl', run_name='__main__')",
]


def assert_one_line_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 1, done
    assert done.stderr == f"nbctl: {message}\n"


# --- imports ---------------------------------------------------------------------------------------


def test_nbctl_never_imports_the_daemon_kubernetes_or_rich(daemon_factory):
    d = daemon_factory(capabilities="none")
    code = (
        "import sys\n"
        "from nbctl.main import main\n"
        "from nbctl import commands, launch, output\n"
        "rc = main(['list', '--output', 'json'])\n"
        "rc2 = main(['status', 'nothing'])\n"
        f"bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(rc, rc2, bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=d.env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "0 1 []", done.stderr


def test_nbctl_autostart_path_imports_no_daemon_code(nbd_isolated_env):
    code = (
        "import sys\n"
        "from nbctl.main import main\n"
        "rc = main(['list'])\n"
        f"bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "main(['daemon', 'stop'])\n"
        "print(rc, bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
    assert "serving on" in nbd_isolated_env.paths.log_file.read_text(), "the daemon was started"


# --- the daemon's life -----------------------------------------------------------------------------


def test_nbctl_autostarts_the_daemon_and_daemon_stop_stops_it(nbd_isolated_env):
    env = dict(os.environ)
    done = nbctl("list", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no sessions; launch one with `nbctl launch DIR`\n"
    status = nbctl("daemon", "status", "--output", "json", env=env)
    info = json.loads(status.stdout)
    assert status.returncode == 0 and info["running"] is True
    assert info["socket"] == str(nbd_isolated_env.socket) and info["version"] == nbdclient.__version__
    human = nbctl("daemon", "status", env=env)
    assert f"is running (pid {info['pid']}" in human.stdout
    stopped = nbctl("daemon", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout == f"nbd stopped (pid {info['pid']})\n"
    assert (
        not Path(f"/proc/{info['pid']}").exists()
        or "Z" in Path(f"/proc/{info['pid']}/stat").read_text().split()[2]
    )
    after = nbctl("daemon", "status", env=env)
    assert (
        after.returncode == 1 and after.stdout == f"nbd is not running (socket {nbd_isolated_env.socket})\n"
    )
    again = nbctl("daemon", "stop", env=env)
    assert again.returncode == 0 and again.stdout == "nbd is not running\n"


def test_daemon_start_then_logs(nbd_isolated_env):
    env = dict(os.environ)
    started = nbctl("daemon", "start", env=env)
    assert started.returncode == 0 and started.stdout.startswith(
        f"nbd {nbdclient.__version__} is running (pid "
    )
    logs = nbctl("daemon", "logs", "--tail", "5", env=env)
    assert logs.returncode == 0 and "serving on" in logs.stdout
    assert len(logs.stdout.splitlines()) <= 5
    as_json = nbctl("daemon", "logs", "--output", "json", env=env)
    assert all("text" in json.loads(line) for line in as_json.stdout.splitlines())
    assert nbctl("daemon", "stop", env=env).returncode == 0


def test_daemon_logs_follow_prints_new_lines_until_interrupted(daemon_factory):
    d = daemon_factory(capabilities="none")
    proc = subprocess.Popen(
        [*INTERRUPTIBLE_NBCTL, "daemon", "logs", "-f"],
        env=d.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with d.client() as client:
            try:
                client.get("marker-session-xyz")
            except nbdclient.NbdClientError:
                pass
        deadline = time.monotonic() + 20
        seen = ""
        while "marker-session-xyz" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "marker-session-xyz" in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
    finally:
        proc.kill()
        proc.wait()


def test_version_mismatch_through_nbctl(daemon_factory):
    d = daemon_factory(capabilities="none", env={"NBD_TEST_DAEMON_VERSION": "9.9.9"})
    env = {k: v for k, v in d.env.items() if k != "NBD_TEST_DAEMON_VERSION"}
    assert_one_line_error(
        nbctl("list", env=env),
        f"nbd daemon is version 9.9.9 but this client is {nbdclient.__version__}; "
        "restart it with `nbctl daemon stop` (it restarts on next use)",
    )
    version = nbctl("version", env=env)
    assert "daemon: nbd 9.9.9" in version.stdout and "restart it with `nbctl daemon stop`" in version.stdout
    assert nbctl("daemon", "stop", env=env).returncode == 0
    assert d.proc.wait(15) == 0


def test_version_json_without_a_daemon(nbd_isolated_env):
    done = nbctl("version", "--output", "json")
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "client": {"version": nbdclient.__version__, "api_version": "v1"},
        "daemon": None,
    }
    assert not nbd_isolated_env.socket.exists(), "version must not start the daemon"


# --- sessions through the test capability ----------------------------------------------------------


def test_session_commands_human_and_json(fake_daemon, tmp_path):
    env = fake_daemon.env
    launched = nbctl("launch", str(tmp_path), "--name", "nb", "-n", "team", "--output", "json", env=env)
    assert launched.returncode == 0, launched.stderr
    events = [json.loads(line) for line in launched.stdout.splitlines()]
    assert events[-1]["ready"]["url"] == "http://127.0.0.1:8889/?token=tok"
    progress = next(e["progress"] for e in events if "progress" in e)
    assert {"done_bytes", "total_bytes", "eta_seconds"} <= set(progress)  # snake_case, defaults present
    assert any("build_log" in e for e in events)

    listed = nbctl("list", "--output", "json", env=env)
    (session,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (session["name"], session["namespace"], session["phase"], session["ref"]) == (
        "nb",
        "team",
        "PHASE_READY",
        "nb",
    )
    assert session["directory"] == str(tmp_path)

    table = nbctl("list", env=env).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "NAMESPACE",
        "CONTEXT",
        "PHASE",
        "URL",
        "SYNC",
        "NOTEBOOK",
        "AUTO-STOP",
        "DIRECTORY",
    ]
    assert table[1].split()[:4] == ["nb", "team", "fake", "ready"]

    status = nbctl("status", "nb", env=env)
    assert "phase:" in status.stdout and "http://127.0.0.1:8889/?token=tok" in status.stdout
    assert json.loads(nbctl("status", "team/nb", "-o", "json", env=env).stdout)["pod"] == "nb-pod"

    logs = nbctl("logs", "nb", "--build", "--tail", "2", env=env)
    assert logs.stdout == "build line 4\nbuild line 5\n"
    logs_json = nbctl("logs", "nb", "-o", "json", env=env)
    assert [json.loads(l)["text"] for l in logs_json.stdout.splitlines()][0] == "notebook line 1"

    paused = nbctl("sync", "nb", "pause", env=env)
    assert paused.returncode == 0 and paused.stdout.startswith("state:    paused")
    assert json.loads(nbctl("sync", "nb", "-o", "json", env=env).stdout)["state"] == "SYNC_STATE_PAUSED"

    stopped = nbctl("stop", "nb", env=env)
    assert stopped.stdout == "stopped nb\n"
    deleted = nbctl("stop", "nb", "--delete", "-o", "json", env=env)
    assert json.loads(deleted.stdout)["name"] == "nb"
    assert nbctl("list", "-o", "json", env=env).stdout == ""


def test_errors_are_one_line_with_exit_code_1(fake_daemon):
    env = fake_daemon.env
    assert_one_line_error(nbctl("status", "ghost", env=env), "no session ghost; see `nbctl list`")
    assert_one_line_error(nbctl("logs", "ghost", "--tail", "-1", env=env), "--tail must be 0 (all) or more")
    assert_one_line_error(
        nbctl("launch", "/does/not/exist", env=env),
        "/does/not/exist is not a directory; give the directory of the notebook project",
    )
    internal = nbctl("launch", "/tmp", "--name", "boom", env=env)
    assert internal.returncode == 1 and len(internal.stderr.splitlines()) == 1
    assert "internal error in the nbd daemon" in internal.stderr and "secret" not in internal.stderr


def test_usage_errors_exit_2():
    assert nbctl().returncode == 2
    assert nbctl("bogus").returncode == 2
    assert nbctl("sync", "nb", "explode").returncode == 2
    assert nbctl("launch", "--gpus", "many").returncode == 2


def test_unimplemented_capabilities_are_clear(daemon_factory, tmp_path):
    d = daemon_factory(capabilities="none")
    assert_one_line_error(
        nbctl("launch", str(tmp_path), env=d.env),
        "launch is not available in this daemon build: the launch capability is not installed",
    )
    assert_one_line_error(
        nbctl("sync", "nb", env=d.env),
        "sync is not available in this daemon build: the sync capability is not installed",
    )


# --- launch rendering against the in-process fake server -------------------------------------------


def test_launch_renders_phases_progress_logs_pod_and_prints_the_url_alone(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = fake_nbd_server.happy_events()
    done = nbctl("launch", str(tmp_path), env=fake_nbd_server.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "http://127.0.0.1:8890/?token=abc\n"
    err = done.stderr
    for expected in (
        "==> packaging: 3 files",
        "packaging: 4.0 MiB / 4.0 MiB (100%)",
        "upload: cached (already uploaded)",
        "==> building",
        "| STEP 1/3: FROM python:3.11",
        "warning: port 8888 is busy; using 8890",
        "pod nb-0: Pending (ContainerCreating)",
        "pod nb-0: Running, ready",
        "nb keeps running and syncing in the nbd daemon; `nbctl stop nb` stops it",
    ):
        assert expected in err, f"{expected!r} not in:\n{err}"
    assert err.index("==> packaging") < err.index("==> building") < err.index("keeps running")


def test_launch_request_carries_the_clients_paths_and_flags(fake_nbd_server, tmp_path, monkeypatch):
    fake_nbd_server.script.events = fake_nbd_server.happy_events()
    (tmp_path / "nb.yaml").write_text("image: x\n")
    env = {**fake_nbd_server.env, "KUBECONFIG": "rel/a.yaml:/abs/b.yaml"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbctl",
            "launch",
            "-d",
            ".",
            "-f",
            "nb.yaml",
            "--name",
            "x",
            "-n",
            "ns",
            "--context",
            "ctx",
            "--gpus",
            "2",
            "--gpu-type",
            "a100",
            "--image",
            "img:1",
            "--port",
            "9000",
            "--no-sync",
            "--attach",
            "--env",
            "A=1",
            "--cpu",
            "2",
            "--memory",
            "4Gi",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (req,) = fake_nbd_server.requests
    assert req.directory == str(tmp_path) and req.notebook_file == str(tmp_path / "nb.yaml")
    assert req.kubeconfig == f"{tmp_path}/rel/a.yaml:/abs/b.yaml"
    assert (req.name, req.namespace, req.context, req.local_port, req.no_sync, req.attach) == (
        "x",
        "ns",
        "ctx",
        9000,
        True,
        True,
    )
    assert req.spec.gpu_count == 2 and req.spec.gpu_type == "a100" and req.spec.image == "img:1"
    assert dict(req.spec.env) == {"A": "1"} and (req.spec.cpu, req.spec.memory) == ("2", "4Gi")
    explicit = nbctl("launch", str(tmp_path), "--kubeconfig", "/k/config", env=env)
    assert explicit.returncode == 0
    assert fake_nbd_server.requests[-1].kubeconfig == "/k/config"
    assert not fake_nbd_server.requests[-1].spec.HasField("gpu_count")


def test_kubectl_notebook_is_launch(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = fake_nbd_server.happy_events()
    done = kubectl_notebook("-d", str(tmp_path), "--gpus", "1", env=fake_nbd_server.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "http://127.0.0.1:8890/?token=abc\n"
    assert fake_nbd_server.requests[0].directory == str(tmp_path)
    assert fake_nbd_server.requests[0].spec.gpu_count == 1
    usage = kubectl_notebook("--help", env=fake_nbd_server.env)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: kubectl notebook [-h] [-d DIR]")
    missing = kubectl_notebook("-d", str(tmp_path / "absent"), env=fake_nbd_server.env)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"kubectl notebook: {tmp_path / 'absent'} is not a directory; give the directory of the notebook project\n"
    )


def test_launch_json_lines(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = fake_nbd_server.happy_events()
    done = nbctl("launch", str(tmp_path), "--output", "json", env=fake_nbd_server.env)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(fake_nbd_server.script.events)
    assert lines[0]["phase"] == {"phase": "PHASE_PACKAGING", "message": "3 files"}
    assert lines[5]["build_log"]["text"] == "STEP 1/3: FROM python:3.11"
    assert lines[-1]["ready"]["local_port"] == 8890


def test_launch_failure_event_exits_1_with_the_message_and_log_tail(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = [
        fake_nbd_server.event(phase=pb.PhaseChanged(phase=pb.PHASE_BUILDING)),
        fake_nbd_server.event(
            failed=pb.Failure(
                reason="BuildFailed",
                message="the image build failed; fix the Dockerfile",
                log_tail=["ERROR: bad instruction", "exit 1"],
            )
        ),
    ]
    done = nbctl("launch", str(tmp_path), env=fake_nbd_server.env)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[-1] == "nbctl: the image build failed; fix the Dockerfile"
    assert "    | ERROR: bad instruction" in lines and "Traceback" not in done.stderr


def test_launch_error_status_is_one_line(fake_nbd_server, tmp_path):
    fake_nbd_server.script.error = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "the Notebook CRD is not installed; run kubectl apply -k cluster/manifests",
    )
    assert_one_line_error(
        nbctl("launch", str(tmp_path), env=fake_nbd_server.env),
        "the Notebook CRD is not installed; run kubectl apply -k cluster/manifests",
    )


def test_launch_ending_without_ready_is_an_error(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = [fake_nbd_server.event(phase=pb.PhaseChanged(phase=pb.PHASE_PACKAGING))]
    done = nbctl("launch", str(tmp_path), env=fake_nbd_server.env)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("nbctl: the launch ended before the notebook was ready")


def test_unimplemented_method_of_an_older_daemon(fake_nbd_server):
    done = nbctl("list", env=fake_nbd_server.env)
    assert done.returncode == 1 and done.stderr == "nbctl: Method not implemented!\n"


def test_version_mismatch_of_the_fake(fake_nbd_server, tmp_path):
    fake_nbd_server.version = "0.0.1"
    done = nbctl("launch", str(tmp_path), env=fake_nbd_server.env)
    assert done.returncode == 1 and "nbd daemon is version 0.0.1 but this client is" in done.stderr


def test_ctrl_c_cancels_the_launch_and_exits_130(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = [fake_nbd_server.event(phase=pb.PhaseChanged(phase=pb.PHASE_PACKAGING))]
    fake_nbd_server.script.hang = True
    proc = subprocess.Popen(
        [*INTERRUPTIBLE_NBCTL, "launch", str(tmp_path)],
        env=fake_nbd_server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake_nbd_server.launch_started.wait(30)
        # Interrupt once the client has rendered the first event: the stream is being read.
        assert proc.stderr.readline() == "==> packaging\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
        assert fake_nbd_server.cancelled.wait(10), "the server never saw the cancellation"
        assert proc.stderr.read().splitlines()[-1] == "nbctl: launch cancelled"
    finally:
        proc.kill()
        proc.wait()


def test_open_hands_the_url_to_the_browser(fake_nbd_server, tmp_path):
    fake_nbd_server.script.events = fake_nbd_server.happy_events()
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    done = nbctl("launch", str(tmp_path), "--open", env={**fake_nbd_server.env, "BROWSER": f"{browser} %s"})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert opened.read_text().strip() == "http://127.0.0.1:8890/?token=abc"


def test_progress_bars_on_a_terminal_render_and_end(tmp_path):
    import io

    from nbctl.launch import LaunchRenderer
    from nbdapi.v1 import notebooks_pb2

    out, err = io.StringIO(), io.StringIO()
    r = LaunchRenderer(out, err, progress_bars=True)
    for done_bytes in (0, 1024, 2048):
        r.handle(
            notebooks_pb2.LaunchEvent(
                progress=notebooks_pb2.Progress(
                    phase=notebooks_pb2.PHASE_UPLOADING, done_bytes=done_bytes, total_bytes=2048
                )
            )
        )
    r.handle(notebooks_pb2.LaunchEvent(build_log=notebooks_pb2.LogLine(text="building")))
    r.handle(notebooks_pb2.LaunchEvent(ready=notebooks_pb2.Ready(url="http://127.0.0.1:1/?token=t")))
    r.close()
    assert out.getvalue() == "http://127.0.0.1:1/?token=t\n"
    assert "building" in err.getvalue()
    assert r.url == "http://127.0.0.1:1/?token=t" and r.failure is None


def test_concurrent_first_calls_share_one_daemon(nbd_isolated_env):
    env = dict(os.environ)
    # Each finds no daemon and starts one; all but one of those lose the lock and exit, and every
    # client ends up talking to the winner.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nbctl", "list", "--output", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    status = json.loads(nbctl("daemon", "status", "--output", "json", env=env).stdout)
    assert status["running"] is True
    log = nbd_isolated_env.paths.log_file.read_text()
    assert log.count("serving on") == 1, "exactly one daemon served"
    assert nbctl("daemon", "stop", env=env).returncode == 0
