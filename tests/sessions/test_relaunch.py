"""Stop, then launch again: the notebook comes back on the same local port, and syncs."""

from __future__ import annotations

import socket

import pytest
from sessions_support import jupyter_api, read, wait_for, write


def test_stop_then_relaunch_keeps_the_port(notebook_factory, jupyter_image):
    nb = notebook_factory()
    port = nb.port
    write(nb.directory / "before_stop.txt", "kept\n")
    nb.flush()
    nb.sync("pause")  # a pause lasts until the session stops: the relaunch syncs again

    stopped = nb.nbctl_json("stop", nb.name)
    assert stopped["phase"] == "PHASE_STOPPED"
    assert stopped["forward"]["state"] == "FORWARD_STATE_STOPPED"
    assert stopped["sync"]["state"] == "SYNC_STATE_DISABLED"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # Edited while stopped: reaches the new pod after the relaunch.
    write(nb.directory / "while_stopped.txt", "local\n")

    nb.launch("--image", jupyter_image)
    assert nb.port == port
    wait_for(lambda: jupyter_api(port)["version"], "the Jupyter API after the relaunch")
    nb.wait_sync("watching")
    nb.flush()
    assert nb.pod_read("while_stopped.txt") == "local\n"
    assert nb.pod_read("before_stop.txt") == "kept\n"
    assert read(nb.directory / "before_stop.txt") == "kept\n"
    assert nb.local_files() == nb.pod_files()
    session = nb.status()
    assert session["forward"]["state"] == "FORWARD_STATE_ACTIVE" and session["forward"]["local_port"] == port
