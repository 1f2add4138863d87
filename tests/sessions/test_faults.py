"""Every stream dropped by the API server (kubesim's drop-streams fault): forwarded connections
close cleanly, new ones work, and the sync reconnects and converges."""

from __future__ import annotations

import socket

from sessions_support import jupyter_api, kubesim_admin, read, wait_for, write


def _open_http(port: int) -> socket.socket:
    """A kept-alive HTTP connection through the forward, with one answered request on it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return s


def test_dropped_streams(notebook_factory):
    nb = notebook_factory()
    admin = kubesim_admin(nb.stack)
    conn = _open_http(nb.port)
    before = int(nb.sync()["cycles"])

    dropped = admin.drop_streams()
    assert dropped >= 2  # at least the forwarded connection and the sync agent's exec

    # The forwarded connection ends cleanly: EOF (or a reset), never a hang.
    conn.settimeout(10)
    try:
        rest = conn.recv(65536)
        while rest:
            rest = conn.recv(65536)
    except ConnectionResetError:
        pass
    finally:
        conn.close()

    # New connections work.
    wait_for(lambda: jupyter_api(nb.port)["version"], "the Jupyter API through a new connection")
    # The sync reconnects and converges, both ways.
    write(nb.directory / "after_drop.txt", "local\n")
    nb.pod_write("pod_after_drop.txt", "pod\n")
    wait_for(lambda: nb.pod_read("after_drop.txt") == "local\n", "a local edit in the pod after the drop")
    wait_for(
        lambda: read(nb.directory / "pod_after_drop.txt") == "pod\n", "a pod edit locally after the drop"
    )
    status = nb.flush()
    assert status["state"] == "SYNC_STATE_WATCHING"
    assert int(status["cycles"]) > before
    assert status.get("conflicts", []) == []
    assert nb.local_files() == nb.pod_files()
    session = nb.status()
    assert session["forward"]["state"] == "FORWARD_STATE_ACTIVE"
    assert session["phase"] == "PHASE_READY"


def test_streams_dropped_while_the_api_server_is_unavailable(notebook_factory):
    """The API server answers 503 for a few seconds right after dropping every stream: the
    reconnects fail for a while, then the forward and the sync recover by themselves."""
    nb = notebook_factory()
    admin = kubesim_admin(nb.stack)
    try:
        admin.unavailable(3)
        admin.drop_streams()
        write(nb.directory / "during_outage.txt", "local\n")
    finally:
        wait_for(lambda: admin.status()["unavailableFor"] == 0, "the outage to end", timeout=10)
    wait_for(lambda: jupyter_api(nb.port)["version"], "the Jupyter API after the outage")
    wait_for(lambda: nb.pod_read("during_outage.txt") == "local\n", "the outage's local edit in the pod")
    nb.pod_write("after_outage.txt", "pod\n")
    wait_for(
        lambda: read(nb.directory / "after_outage.txt") == "pod\n", "a pod edit locally after the outage"
    )
    wait_for(
        lambda: (
            (s := nb.status())
            and s["forward"]["state"] == "FORWARD_STATE_ACTIVE"
            and s["sync"]["state"] == "SYNC_STATE_WATCHING"
        ),
        "the session to be active and watching",
    )
    assert nb.flush().get("conflicts", []) == []
