"""Every failure a launch can meet ends in one clear line and a non-zero exit, nothing half-done.

Real processes: the shared local cluster, one daemon for the module, nbctl as a subprocess. The
kubeconfig failures use kubeconfigs written here (a missing file, an unknown context, a closed
port, a token of a user forbidden in the namespace); the CRD failure uses a bare kubesim with
nothing installed.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from launchkit import LaunchKit, LaunchResult, make_project


def _one_line_failure(result: LaunchResult) -> str:
    assert result.rc == 1, (result.rc, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("nbctl:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _kubeconfig(path: Path, server: str, *, token: str = "", context: str = "kubesim") -> Path:
    user: dict[str, Any] = {"token": token} if token else {}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def _admin(kit: LaunchKit, endpoint: str, body: dict[str, str]) -> None:
    info = json.loads((Path(kit.stack.stack.state_dir) / "kubesim" / "server.json").read_text())
    request = urllib.request.Request(
        f"{kit.stack.api_url}/_kubesim/{endpoint}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {info['adminToken']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        resp.read()


def test_missing_dockerfile_is_caught_before_anything_reaches_the_cluster(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "nodocker")
    (project / "Dockerfile").unlink()
    result = kit.launch(project, ns)
    line = _one_line_failure(result)
    assert "Dockerfile" in line
    assert "PHASE_UPLOADING" not in result.phases()
    assert kit.notebook(ns, "nodocker") is None, "no Notebook is created for a context that cannot be built"


def test_env_name_the_crd_refuses_is_caught_before_packaging(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    """`A.B` passes Kubernetes' own env name rule but not the Notebook CRD's: the daemon refuses it
    with the CRD's rule before packaging, instead of the API server refusing it (422) afterwards."""
    project = make_project(tmp_path, "dotted")
    spool = kit.daemon.state_dir / "contexts"
    before = set(spool.iterdir()) if spool.exists() else set()
    result = kit.launch(project, ns, "--env", "A.B=1")
    line = _one_line_failure(result)
    assert "invalid environment variable name 'A.B'" in line and "letters, digits and '_'" in line, line
    assert "422" not in line
    assert not {"PHASE_PACKAGING", "PHASE_UPLOADING"} & set(result.phases()), result.phases()
    assert result.of("progress") == [], "nothing was packaged or uploaded"
    assert (set(spool.iterdir()) if spool.exists() else set()) == before, "no archive was written"
    assert kit.notebook(ns, "dotted") is None, "no Notebook is created for a spec the CRD refuses"


def test_bad_sync_max_file_size_is_caught_before_packaging(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "badlimit")
    (project / "notebook.yaml").write_text("sync:\n  maxFileSize: 100MB\n")
    result = kit.launch(project, ns)
    line = _one_line_failure(result)
    assert "sync.maxFileSize" in line and "100Mi" in line and "'100MB'" in line, line
    assert not {"PHASE_PACKAGING", "PHASE_UPLOADING"} & set(result.phases()), result.phases()
    assert kit.notebook(ns, "badlimit") is None


def test_special_files_are_skipped_and_links_leaving_the_directory_refused(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "special")
    os.mkfifo(project / "a.fifo")
    (project / "inside.txt").symlink_to("hello.py")
    (project / "outside.txt").symlink_to("/etc/hostname")
    refused = kit.launch(project, ns, "--no-sync")
    line = _one_line_failure(refused)
    assert "outside.txt" in line and ".dockerignore" in line
    assert kit.notebook(ns, "special") is None, "refused before anything reached the cluster"

    (project / ".dockerignore").write_text("outside.txt\n")
    result = kit.launch(project, ns, "--no-sync")
    assert result.rc == 0, result.stderr
    warnings = " ".join(n["message"] for n in result.of("notice"))
    assert "a.fifo" in warnings and "FIFO" in warnings, result.of("notice")
    listing = kit.nbctl("logs", f"{ns}/special", "--build")
    assert listing.returncode == 0, listing.stderr


def test_no_kubeconfig(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "nokube")
    missing = tmp_path / "missing-kubeconfig"
    line = _one_line_failure(kit.launch(project, ns, env={"KUBECONFIG": str(missing)}))
    assert "kubeconfig" in line.lower() and str(missing) in line
    # No KUBECONFIG at all: the daemon's default (~/.kube/config, absent here) is named.
    line = _one_line_failure(kit.launch(project, ns, env={}))
    assert "kubeconfig" in line.lower()


def test_unknown_context(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "noctx")
    line = _one_line_failure(kit.launch(project, ns, "--context", "nowhere"))
    assert "nowhere" in line and "context" in line


def test_cluster_unreachable(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _kubeconfig(tmp_path / "closed", f"http://127.0.0.1:{port}")
    project = make_project(tmp_path, "unreach")
    result = kit.launch(project, ns, env={"KUBECONFIG": str(config)}, timeout=90)
    line = _one_line_failure(result)
    assert f"127.0.0.1:{port}" in line
    assert result.seconds < 60


def test_forbidden_namespace(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    _admin(kit, "auth/tokens", {"token": f"tok-{ns}", "user": f"bob-{ns}"})
    _admin(kit, "auth/forbid", {"user": f"bob-{ns}", "namespace": ns})
    config = _kubeconfig(tmp_path / "bob", kit.stack.api_url, token=f"tok-{ns}")
    project = make_project(tmp_path, "forbidden")
    line = _one_line_failure(kit.launch(project, ns, env={"KUBECONFIG": str(config)}))
    assert "forbidden" in line.lower() or "not allowed" in line.lower()
    assert ns in line


def test_crd_not_installed(kit: LaunchKit, ns: str, tmp_path: Path, kubesim_factory: Any) -> None:
    bare = kubesim_factory(kubelet=False)
    project = make_project(tmp_path, "nocrd")
    line = _one_line_failure(kit.launch(project, "default", env={"KUBECONFIG": str(bare.kubeconfig)}))
    assert "kubectl apply -k" in line
    assert "controller" in line


def test_build_failure_shows_the_log_tail(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "badbuild")
    (project / "Dockerfile").write_text("FROM python:3.11-slim\nRUN echo about-to-fail && exit 3\n")
    result = kit.launch(project, ns)
    line = _one_line_failure(result)
    assert "build failed" in line and f"nbctl logs {ns}/badbuild --build" in line
    failed = result.of("failed")[-1]
    assert failed["reason"] == "BuildFailed"
    assert any("about-to-fail" in t for t in failed["log_tail"]), failed["log_tail"]
    session = kit.session(ns, "badbuild")
    assert session is not None and session["phase"] == "PHASE_FAILED"
    # The text output shows the tail too.
    text = kit.nbctl("launch", str(project), "-n", ns)
    assert text.returncode == 1
    assert "about-to-fail" in text.stderr


def test_unschedulable_gpu_request(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "greedy")
    result = kit.launch(project, ns, "--gpus", "4")
    line = _one_line_failure(result)
    assert "cannot be scheduled" in line
    assert "nvidia.com/gpu" in line or "GPU" in line
    assert result.of("failed")[-1]["reason"] == "Unschedulable"
    # The stale Unschedulable of the old request must not fail the next launch.
    fits = kit.launch(project, ns)
    assert fits.rc == 0, fits.stderr


def test_port_taken(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "porty")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _one_line_failure(kit.launch(project, ns, "--port", str(port)))
    assert str(port) in line
    assert "in use" in line or "taken" in line
    freed = kit.launch(project, ns, "--port", str(port))
    assert freed.rc == 0, freed.stderr
    assert freed.ready["local_port"] == port


def test_unreadable_files(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    """Root reads everything: this daemon runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from fixtures_daemon import DaemonProcess, NbdDirs, _wait_serving

    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        import pytest

        pytest.skip("needs root and setpriv to run a daemon that cannot read everything")
    dirs = NbdDirs(Path(tempfile.mkdtemp(prefix="nbdu-", dir="/tmp")))
    env = {**os.environ, **dirs.env, "HOME": str(dirs.root)}
    output = dirs.root / "daemon.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [
                setpriv,
                "--bounding-set",
                "-dac_override,-dac_read_search",
                sys.executable,
                "-m",
                "nbd",
                "--socket",
                str(dirs.socket),
                "--state-dir",
                str(dirs.state_dir),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = DaemonProcess(dirs=dirs, proc=proc, env=env, output=output)
    try:
        _wait_serving(daemon)
        weak = LaunchKit(daemon, kit.stack)
        project = make_project(tmp_path, "secretive")
        (project / "secret.key").write_text("k")
        os.chmod(project / "secret.key", 0)
        line = _one_line_failure(weak.launch(project, ns))
        assert f"cannot read {project / 'secret.key'}: Permission denied" in line
        assert ".dockerignore" in line
        assert weak.notebook(ns, "secretive") is None

        os.chmod(project / "secret.key", 0o600)
        (project / "private").mkdir()
        os.chmod(project / "private", 0)
        line = _one_line_failure(weak.launch(project, ns))
        assert f"cannot read directory {project / 'private'}" in line

        os.chmod(project / "private", 0o700)
        os.chmod(project / "notebook.yaml", 0)
        line = _one_line_failure(weak.launch(project, ns))
        assert "notebook.yaml" in line and "permissions" in line
    finally:
        for path in (project / "secret.key", project / "private", project / "notebook.yaml"):
            if path.exists():
                os.chmod(path, 0o700)
        daemon.stop()
        shutil.rmtree(dirs.root, ignore_errors=True)


def test_no_controller_running(daemon_factory: Any, stack_factory: Any, tmp_path: Path) -> None:
    stack = stack_factory(controller=False)
    daemon = daemon_factory(env={"HOME": str(tmp_path), "NBD_CONTROLLER_TIMEOUT": "3"})
    kit = LaunchKit(daemon, stack)
    project = make_project(tmp_path, "lonely")
    result = kit.launch(project, "default")
    line = _one_line_failure(result)
    assert "nbd-controller running" in line and "kubectl get notebook lonely" in line
    assert result.seconds < 30
    session = kit.session("default", "lonely")
    assert session is not None and session["phase"] == "PHASE_FAILED"
