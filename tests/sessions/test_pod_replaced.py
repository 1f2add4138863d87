"""A notebook pod deleted and recreated by the controller: the listener stays, new connections
reach the new pod, and the sync reconnects and refills the new pod's /content without deleting
or reverting anything local."""

from __future__ import annotations

import socket

from sessions_support import jupyter_api, read, wait_for, write


def _replace_pod(nb):
    old = nb.pod()
    nb.stack.core().delete_namespaced_pod(old["name"], nb.namespace, grace_period_seconds=0)
    return wait_for(
        lambda: (p := nb.pod()) and p["uid"] != old["uid"] and p["ready"] and p,
        "the controller's new pod to be Ready",
    )


def test_pod_replaced_with_a_prebuilt_image(notebook_factory):
    nb = notebook_factory()
    port = nb.port
    write(nb.directory / "made_after_launch.txt", "local\n")
    nb.flush()
    nb.pod_write("from_old_pod.txt", "old pod\n")
    wait_for(lambda: read(nb.directory / "from_old_pod.txt") == "old pod\n", "the old pod's file locally")

    old = nb.pod()
    nb.stack.core().delete_namespaced_pod(old["name"], nb.namespace, grace_period_seconds=0)
    # The listener never closes: a TCP connect succeeds while there is no pod behind it.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    wait_for(lambda: (p := nb.pod()) and p["uid"] != old["uid"] and p["ready"], "the new pod to be Ready")
    wait_for(lambda: jupyter_api(port)["version"], "the Jupyter API of the new pod through the same port")
    wait_for(
        lambda: nb.status()["forward"]["state"] == "FORWARD_STATE_ACTIVE", "the forward to be active again"
    )

    nb.wait_sync("watching")
    nb.flush()
    # The new pod's empty /content is refilled from local; nothing local went away.
    assert nb.pod_read("made_after_launch.txt") == "local\n"
    assert nb.pod_read("from_old_pod.txt") == "old pod\n"
    assert read(nb.directory / "made_after_launch.txt") == "local\n"
    assert nb.local_files() == nb.pod_files()
    assert not [p for p in nb.local_files() if ".conflict-" in p]

    # And the sync goes on both ways with the new pod.
    write(nb.directory / "after.txt", "to the new pod\n")
    nb.pod_write("from_new_pod.txt", "new pod\n")
    wait_for(lambda: nb.pod_read("after.txt") == "to the new pod\n", "a local edit in the new pod")
    wait_for(lambda: read(nb.directory / "from_new_pod.txt") == "new pod\n", "a new pod's edit locally")


def test_pod_replaced_with_a_built_image_keeps_local_edits(notebook_factory):
    """The new pod's /content holds the image's (older) files: they must not revert local edits
    made since the build, nor delete files created since."""
    nb = notebook_factory(build=True)
    assert nb.pod_read("main.py") == "print('hello')\n"
    write(nb.directory / "main.py", "print('edited after the build')\n")
    write(nb.directory / "made_after_build.txt", "local\n")
    nb.flush()
    assert nb.pod_read("main.py") == "print('edited after the build')\n"

    new = _replace_pod(nb)
    wait_for(lambda: jupyter_api(nb.port)["version"], "the Jupyter API of the new pod")
    nb.wait_sync("watching")
    nb.flush()
    assert nb.pod()["uid"] == new["uid"]
    assert read(nb.directory / "main.py") == "print('edited after the build')\n"
    assert read(nb.directory / "made_after_build.txt") == "local\n"
    assert nb.pod_read("main.py") == "print('edited after the build')\n"
    assert nb.pod_read("made_after_build.txt") == "local\n"
    assert nb.local_files() == nb.pod_files()
    # The image's older main.py differs from the local one: at most it is kept aside as a
    # conflict copy (nothing is lost either way), never over the local version.
    copies = [p for p in nb.local_files() if ".conflict-" in p]
    assert all(p.startswith("main.conflict-") for p in copies), copies
    assert all(read(nb.directory / p) == "print('hello')\n" for p in copies)
