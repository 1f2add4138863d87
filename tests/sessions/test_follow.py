"""A session follows its Notebook in the cluster: deleted, suspended or changed elsewhere, with the
daemon running and with it stopped, and through the watch's failures (dropped streams, an expired
resourceVersion, an API server that refuses for a while)."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from sessions_support import jupyter_api, kubesim_admin, read, wait_for, write

from nbdapi.v1 import notebooks_pb2 as pb


def kubectl(nb: Any, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", nb.stack.kubeconfig, "-n", nb.namespace, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def identity_of(dirs: Any) -> str:
    """The identity a daemon on these dirs writes on Notebooks (user@host#id)."""
    ident = (dirs.state_dir / "identity").read_text().strip()
    return f"{getpass.getuser()}@{socket.gethostname()}#{ident}"


def notebook_object(nb: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(kubectl(nb, "get", "notebook", nb.name, "-o", "json"))
    return data


def wait_phase(nb: Any, phase: str, timeout: float = 60.0) -> dict[str, Any]:
    wanted = f"PHASE_{phase.upper()}"
    return wait_for(  # type: ignore[no-any-return]
        lambda: (s := nb.status()) and s["phase"] == wanted and s, f"the session to be {phase}", timeout
    )


def wait_notebook(nb: Any, state: str, timeout: float = 60.0) -> dict[str, Any]:
    wanted = f"NOTEBOOK_STATE_{state.upper()}"
    last: list[dict[str, Any]] = []

    def check() -> dict[str, Any] | None:
        s = nb.status()
        last[:] = [s]
        return s if s.get("notebook", {}).get("state") == wanted else None

    try:
        return wait_for(check, f"the session's Notebook to be {state}", timeout)  # type: ignore[no-any-return]
    except AssertionError as e:
        Path("/tmp/follow-daemon.log").write_text(nb.daemon.log_text())
        raise AssertionError(f"{e}; the session: {last}") from None


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def restart_without_resume_wait(nb: Any) -> None:
    """Starts the next daemon on the same dirs (a gone or suspended session never syncs again, so
    `restart_daemon`'s wait for the sync would never end)."""
    nb.daemon = nb.restart()


def assert_gone(nb: Any, session: dict[str, Any], port: int) -> None:
    assert "deleted in the cluster" in session["message"]
    assert f"nbctl launch {nb.directory}" in session["message"]
    assert session.get("url", "") == ""
    assert session["forward"]["state"] == "FORWARD_STATE_STOPPED"
    assert session["sync"]["state"] == "SYNC_STATE_DISABLED"
    assert session["notebook"]["state"] == "NOTEBOOK_STATE_DELETED"
    assert refused(port), f"the forward's listener on {port} is still open"


# --- deleted ----------------------------------------------------------------------------------


def test_deleted_with_the_daemon_running(notebook_factory, jupyter_image):
    nb = notebook_factory()
    port = nb.port
    assert nb.status()["notebook"]["state"] == "NOTEBOOK_STATE_FOLLOWING"
    write(nb.directory / "mine.txt", "local work\n")
    nb.flush()
    nb.pod_write("from_pod.txt", "made in the pod\n")
    before = nb.local_files()

    with nb.daemon.client() as client:
        from test_events import Collector

        collector = Collector(client.events([nb.name]))
        try:
            kubectl(nb, "delete", "notebook", nb.name, "--wait=false")
            session = wait_phase(nb, "gone")
            assert_gone(nb, session, port)
            assert wait_for(
                lambda: collector.find(
                    lambda e: e.kind == pb.SESSION_EVENT_KIND_UPDATED and e.session.phase == pb.PHASE_GONE
                ),
                "an UPDATED event of the gone session",
            )
        finally:
            collector.close()

    # The last pull kept what the pod had; nothing local was lost.
    assert read(nb.directory / "from_pod.txt") == "made in the pod\n"
    assert read(nb.directory / "mine.txt") == "local work\n"
    assert before <= nb.local_files() | {"from_pod.txt"}
    listed = nb.nbctl("list").stdout
    assert "gone" in listed and "deleted" in listed

    # What a gone session answers, and what brings it back.
    sync = nb.nbctl("sync", nb.name, check=False)
    assert sync.returncode == 1 and "deleted in the cluster" in sync.stderr, sync.stderr
    stop = nb.nbctl("stop", nb.name, check=False)
    assert stop.returncode == 1 and "is gone" in stop.stderr and "--delete" in stop.stderr, stop.stderr
    nb.launch("--image", jupyter_image)
    assert nb.port == port
    session = wait_notebook(nb, "following")
    assert session["phase"] == "PHASE_READY"
    wait_for(lambda: jupyter_api(port)["version"], "the Jupyter API after the new launch")
    nb.wait_sync("watching")
    nb.flush()
    assert nb.pod_read("mine.txt") == "local work\n"


def test_deleted_while_the_daemon_is_stopped(notebook_factory):
    nb = notebook_factory()
    port = nb.port
    nb.daemon.kill()
    kubectl(nb, "delete", "notebook", nb.name)
    restart_without_resume_wait(nb)
    session = wait_phase(nb, "gone")
    assert_gone(nb, session, port)
    assert (nb.directory / "main.py").exists()
    # Forgotten on request; the local directory stays.
    assert nb.nbctl_json("stop", nb.name, "--delete")["phase"] == "PHASE_STOPPED"
    assert nb.nbctl("list", "--output", "json").stdout.strip() == ""
    assert (nb.directory / "main.py").exists()


def test_deleted_by_another_nbd_names_it(notebook_factory, daemon_factory, nbd_dirs, jupyter_image):
    nb = notebook_factory()
    other = daemon_factory(dirs=nbd_dirs, env={"KUBECONFIG": nb.stack.kubeconfig})
    launched = other.run_nbctl(
        "launch",
        str(nb.directory),
        "--name",
        nb.name,
        "-n",
        nb.namespace,
        "--image",
        jupyter_image,
        "--no-sync",
        timeout=240,
    )
    assert launched.returncode == 0, launched.stderr
    identity = identity_of(nbd_dirs)
    stopped = other.run_nbctl("stop", nb.name, "--delete", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    session = wait_phase(nb, "gone")
    assert f"deleted in the cluster by another nbd ({identity})" in session["message"]
    assert session["notebook"]["changed_by"] == f"another nbd ({identity})"


# --- suspended --------------------------------------------------------------------------------


def test_suspended_with_the_daemon_running(notebook_factory, jupyter_image):
    nb = notebook_factory()
    port = nb.port
    kubectl(nb, "patch", "notebook", nb.name, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
    session = wait_phase(nb, "suspended")
    assert session["message"].startswith("suspended in the cluster by kubectl-patch")
    assert session["notebook"]["state"] == "NOTEBOOK_STATE_SUSPENDED"
    assert session["forward"]["state"] == "FORWARD_STATE_STOPPED"
    assert session["sync"]["state"] == "SYNC_STATE_DISABLED"
    assert refused(port)
    assert "suspended" in nb.nbctl("list").stdout
    # It stays suspended (its own suspend is not read as a spec change later), and a launch
    # starts it again.
    assert nb.status()["notebook"]["state"] == "NOTEBOOK_STATE_SUSPENDED"
    nb.launch("--image", jupyter_image)
    assert wait_notebook(nb, "following")["phase"] == "PHASE_READY"
    wait_for(lambda: jupyter_api(port)["version"], "the Jupyter API after the relaunch")


def test_suspended_while_the_daemon_is_stopped(notebook_factory):
    nb = notebook_factory()
    port = nb.port
    nb.daemon.stop()
    kubectl(nb, "patch", "notebook", nb.name, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
    restart_without_resume_wait(nb)
    session = wait_phase(nb, "suspended")
    assert "suspended in the cluster by kubectl-patch" in session["message"]
    assert refused(port)


def test_a_stopped_session_started_again_elsewhere_says_so(notebook_factory):
    nb = notebook_factory()
    assert nb.nbctl_json("stop", nb.name)["phase"] == "PHASE_STOPPED"
    assert wait_notebook(nb, "following")["phase"] == "PHASE_STOPPED"  # its own suspend is its own
    kubectl(nb, "patch", "notebook", nb.name, "--type", "merge", "-p", '{"spec":{"suspend":false}}')
    session = wait_notebook(nb, "changed")
    assert session["phase"] == "PHASE_STOPPED"
    assert "started again in the cluster by kubectl-patch" in session["notebook"]["message"]


# --- spec changed -----------------------------------------------------------------------------


def test_spec_changed_by_a_second_daemon(notebook_factory, daemon_factory, nbd_dirs, jupyter_image):
    nb = notebook_factory()
    other = daemon_factory(dirs=nbd_dirs, env={"KUBECONFIG": nb.stack.kubeconfig})
    result = other.run_nbctl(
        "launch",
        str(nb.directory),
        "--name",
        nb.name,
        "-n",
        nb.namespace,
        "--image",
        jupyter_image,
        "--memory",
        "300Mi",
        "--no-sync",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    identity = identity_of(nbd_dirs)
    session = wait_notebook(nb, "changed")
    assert session["phase"] == "PHASE_READY"
    assert session["notebook"]["changed_by"] == f"another nbd ({identity})"
    assert "spec was changed in the cluster by another nbd" in session["notebook"]["message"]
    assert "changed" in nb.nbctl("list").stdout
    assert "spec was changed" in nb.nbctl("status", nb.name).stdout
    generation = notebook_object(nb)["metadata"]["generation"]
    # This daemon never writes its own spec back: after more events (a restart of the first
    # daemon, whose resume reads the Notebook), the other daemon's spec stands.
    nb.daemon.stop()
    restart_without_resume_wait(nb)
    session = wait_notebook(nb, "changed")
    obj = notebook_object(nb)
    assert obj["metadata"]["generation"] == generation
    assert obj["spec"]["resources"]["memory"] == "300Mi"
    assert obj["metadata"]["annotations"]["nbd.dev/written-by"] == identity


def test_spec_edited_with_kubectl(notebook_factory, jupyter_image):
    nb = notebook_factory()
    kubectl(
        nb,
        "patch",
        "notebook",
        nb.name,
        "--type",
        "merge",
        "-p",
        '{"spec":{"env":[{"name":"EDITED","value":"1"}]}}',
    )
    session = wait_notebook(nb, "changed")
    assert session["phase"] == "PHASE_READY"
    assert session["notebook"]["changed_by"] == "kubectl-patch"
    assert notebook_object(nb)["spec"]["env"] == [{"name": "EDITED", "value": "1"}]
    # A launch here applies this directory's spec again (server-side apply: the fields the edit
    # set and the launch does not stay the editor's), and the session follows it from there.
    generation = notebook_object(nb)["metadata"]["generation"]
    nb.launch("--image", jupyter_image, "--memory", "200Mi")
    session = wait_notebook(nb, "following")
    assert session["phase"] == "PHASE_READY"
    assert int(session["notebook"]["generation"]) > generation


# --- the watch's failures ---------------------------------------------------------------------


def test_deleted_after_the_watch_was_dropped(notebook_factory):
    nb = notebook_factory()
    admin = kubesim_admin(nb.stack)
    assert admin.drop_streams() >= 1
    kubectl(nb, "delete", "notebook", nb.name, "--wait=false")
    assert_gone(nb, wait_phase(nb, "gone"), nb.port)


def test_deleted_after_the_watch_expired(notebook_factory):
    """The watch's resourceVersion leaves the server's history while it reconnects: the 410 makes
    the follower list again, and the deletion is still seen."""
    nb = notebook_factory()
    admin = kubesim_admin(nb.stack)
    admin.set_history_size(1)
    try:
        admin.stall_streams()  # the follower's watch hears nothing more
        # Events the stalled watch misses, pushing its version out of the history.
        for i in range(3):
            kubectl(nb, "annotate", "notebook", nb.name, f"nbd.test/poke={i}", "--overwrite")
        admin.drop_streams()
        wait_for(lambda: "expired" in nb.daemon.log_text(), "the follower's 410 in the daemon log")
        kubectl(nb, "delete", "notebook", nb.name, "--wait=false")
        assert_gone(nb, wait_phase(nb, "gone"), nb.port)
    finally:
        admin.set_history_size(10000)


def test_a_refusing_api_server_is_reported_then_recovered(notebook_factory):
    nb = notebook_factory()
    admin = kubesim_admin(nb.stack)
    try:
        admin.unavailable(8, status=403)
        admin.drop_streams()
        session = wait_notebook(nb, "error", timeout=8)
        assert "cannot read the Notebook in the cluster" in session["notebook"]["message"]
        assert session["phase"] == "PHASE_READY"
    finally:
        wait_for(lambda: admin.status()["unavailableFor"] == 0, "the refusal to end", timeout=15)
    assert wait_notebook(nb, "following")["phase"] == "PHASE_READY"
    kubectl(nb, "patch", "notebook", nb.name, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
    wait_phase(nb, "suspended")


def test_local_files_survive_a_deletion_mid_sync(notebook_factory):
    nb = notebook_factory(files=20)
    for i in range(20):
        write(nb.directory / "data" / f"f{i:02d}.txt", f"edited {i}\n")
    kubectl(nb, "delete", "notebook", nb.name, "--wait=false")
    wait_phase(nb, "gone")
    for i in range(20):
        assert read(nb.directory / "data" / f"f{i:02d}.txt") == f"edited {i}\n"
