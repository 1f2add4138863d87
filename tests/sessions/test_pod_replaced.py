"""A notebook pod deleted and recreated by the controller: the listener stays, new connections
reach the new pod, and the sync reconnects and refills the new pod's /content without deleting
or reverting anything local."""

from __future__ import annotations

import socket

from sessions_support import DOCKERFILE, jupyter_api, read, wait_for, write


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


def _conflict_copies(nb) -> tuple[list[str], list[str]]:
    local = sorted(p for p in nb.local_files() if ".conflict-" in p)
    pod = sorted(p for p in nb.pod_files() if ".conflict-" in p)
    return local, pod


def test_pod_replaced_with_a_built_image_keeps_local_edits(notebook_factory):
    """The new pod's /content holds the image's (older) files. The sync starts from the build
    context's files as its ancestor where the pod holds them, so a local edit since the build is
    pushed (no conflict copy), a local deletion deletes the image's copy, and nothing created
    locally since is lost."""
    nb = notebook_factory(build=True)
    assert nb.pod_read("main.py") == "print('hello')\n"
    assert _conflict_copies(nb) == ([], [])
    write(nb.directory / "main.py", "print('edited after the build')\n")
    write(nb.directory / "made_after_build.txt", "local\n")
    (nb.directory / "data" / "f00.txt").unlink()
    nb.flush()
    assert nb.pod_read("main.py") == "print('edited after the build')\n"
    assert nb.pod_read("data/f00.txt") is None

    new = _replace_pod(nb)
    wait_for(lambda: jupyter_api(nb.port)["version"], "the Jupyter API of the new pod")
    wait_for(
        lambda: nb.pod_read("main.py") == "print('edited after the build')\n", "the local edit in the new pod"
    )
    nb.wait_sync("watching")
    nb.flush()
    assert nb.pod()["uid"] == new["uid"]
    assert read(nb.directory / "main.py") == "print('edited after the build')\n"
    assert read(nb.directory / "made_after_build.txt") == "local\n"
    assert nb.pod_read("made_after_build.txt") == "local\n"
    assert nb.pod_read("data/f00.txt") is None, "deleted locally since the build: deleted in the new pod"
    assert read(nb.directory / "data" / "f00.txt") is None
    assert nb.local_files() == nb.pod_files()
    assert _conflict_copies(nb) == ([], [])
    assert not nb.sync().get("conflicts")


BUILD_CHANGES_CONTENT = (
    DOCKERFILE
    + """RUN echo "# added by the build" >> /content/main.py
RUN echo "made by the build" > /content/built.txt
"""
)


def test_a_file_the_build_changed_in_content_is_kept_as_a_conflict_copy(notebook_factory):
    """A context file the Dockerfile changed in /content has no ancestor (the pod's version is
    not the packaged one): the local file keeps its name and content, the image's version is
    kept aside, as before; a file the build created is pulled; the other files have their seed."""
    nb = notebook_factory(build=BUILD_CHANGES_CONTENT)
    built = "print('hello')\n# added by the build\n"
    local, pod = _conflict_copies(nb)
    assert len(local) == 1 and local[0].startswith("main.conflict-remote-") and local == pod, (local, pod)
    assert read(nb.directory / local[0]) == built
    assert read(nb.directory / "main.py") == "print('hello')\n"
    assert nb.pod_read("main.py") == "print('hello')\n"
    assert read(nb.directory / "built.txt") == "made by the build\n"
    (nb.directory / local[0]).unlink()  # the user resolves it
    write(nb.directory / "data" / "f01.txt", "edited\n")
    wait_for(lambda: nb.pod_read(local[0]) is None, "the resolved copy gone in the pod")

    _replace_pod(nb)
    wait_for(lambda: nb.pod_read("data/f01.txt") == "edited\n", "the local edit in the new pod")
    nb.wait_sync("watching")
    nb.flush()
    assert read(nb.directory / "main.py") == "print('hello')\n", "the local file is never overwritten"
    assert nb.pod_read("main.py") == "print('hello')\n"
    local, pod = _conflict_copies(nb)
    assert len(local) == 1 and local[0].startswith("main.conflict-remote-") and local == pod, (local, pod)
    assert read(nb.directory / local[0]) == built
    assert nb.local_files() == nb.pod_files()
