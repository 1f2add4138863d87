"""A session outlives its daemon: after a SIGKILL the next daemon brings the forward back on the
same port and resumes the two-way sync from its ancestor, without spurious conflicts."""

from __future__ import annotations

import socket

from sessions_support import jupyter_api, read, wait_for, write


def test_daemon_killed_and_restarted_resumes_forward_and_sync(notebook_factory):
    nb = notebook_factory()
    port, url = nb.port, nb.url
    assert jupyter_api(port)["version"]
    write(nb.directory / "main.py", "print('v1')\n")
    nb.flush()
    assert nb.pod_read("main.py") == "print('v1')\n"

    nb.daemon.kill()
    # While no daemon runs: edits on both sides, a local delete, and the pod is still there.
    write(nb.directory / "main.py", "print('v2, edited while the daemon was dead')\n")
    write(nb.directory / "new_local.txt", "made locally\n")
    (nb.directory / "data" / "f00.txt").unlink()
    nb.pod_write("from_pod.txt", "made in the pod\n")
    nb.pod_write("data/f01.txt", "changed in the pod\n")

    nb.restart_daemon()
    wait_for(lambda: jupyter_api(port)["version"], f"the Jupyter API through 127.0.0.1:{port} again")
    session = wait_for(
        lambda: (s := nb.status()) and s["forward"]["state"] == "FORWARD_STATE_ACTIVE" and s,
        "the forward to be active",
    )
    assert session["phase"] == "PHASE_READY"
    assert session["url"] == url
    assert session["forward"]["local_port"] == port

    nb.wait_sync("watching")
    status = nb.flush()
    assert nb.pod_read("main.py") == "print('v2, edited while the daemon was dead')\n"
    assert nb.pod_read("new_local.txt") == "made locally\n"
    assert nb.pod_read("data/f00.txt") is None
    assert read(nb.directory / "from_pod.txt") == "made in the pod\n"
    assert read(nb.directory / "data" / "f01.txt") == "changed in the pod\n"
    assert status.get("conflicts", []) == []
    assert not [p for p in nb.local_files() if ".conflict-" in p]
    assert nb.local_files() == nb.pod_files()


def test_pause_outlives_a_daemon_restart(notebook_factory):
    nb = notebook_factory()
    assert nb.sync("pause")["state"] == "SYNC_STATE_PAUSED"
    assert nb.daemon.stop() == 0  # a graceful stop this time
    nb.restart_daemon()
    wait_for(lambda: jupyter_api(nb.port)["version"], "the forward after the restart")
    write(nb.directory / "paused.txt", "not yet\n")
    assert nb.sync()["state"] == "SYNC_STATE_PAUSED"
    assert nb.pod_read("paused.txt") is None
    assert nb.sync("resume")["state"] != "SYNC_STATE_PAUSED"
    nb.flush()
    assert nb.pod_read("paused.txt") == "not yet\n"


def test_restart_while_the_pod_is_not_ready(notebook_factory):
    """The daemon comes back while the pod is being replaced: the forward waits for the new pod
    and the sync connects to it once it is Ready, then converges."""
    nb = notebook_factory()
    old = nb.pod()
    nb.daemon.kill()
    nb.stack.core().delete_namespaced_pod(old["name"], nb.namespace, grace_period_seconds=0)
    write(nb.directory / "while_down.txt", "local\n")
    nb.restart_daemon()
    wait_for(lambda: (p := nb.pod()) and p["uid"] != old["uid"] and p["ready"], "the new pod to be Ready")
    wait_for(lambda: jupyter_api(nb.port)["version"], "the Jupyter API of the new pod")
    nb.wait_sync("watching")
    nb.flush()
    assert nb.pod_read("while_down.txt") == "local\n"
    assert nb.local_files() == nb.pod_files()


def test_restart_with_the_port_taken_moves_the_url(notebook_factory):
    nb = notebook_factory()
    old_port, token = nb.port, nb.token
    nb.daemon.kill()
    squatter = socket.socket()
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        nb.restart_daemon()
        session = wait_for(
            lambda: (s := nb.status()) and s["forward"]["local_port"] != old_port and s,
            "the forward on another port",
        )
        new_port = session["forward"]["local_port"]
        assert session["url"] == f"http://127.0.0.1:{new_port}/?token={token}"
        wait_for(lambda: jupyter_api(new_port)["version"], "the Jupyter API on the new port")
    finally:
        squatter.close()
    # The next restart keeps the new port (it is what the session now records).
    nb.daemon.kill()
    nb.restart_daemon()
    assert nb.status()["forward"]["local_port"] == new_port
    wait_for(lambda: jupyter_api(new_port)["version"], "the Jupyter API on the recorded port")
