"""The notebook container restarted in its pod (an OOM kill, a failed liveness probe, a crash): the
pod keeps its uid, the container starts from its image again, and kubesim's kubelet, like a real
one, keeps only the pod's volumes. Whatever was synced must survive: no local file and no local
edit is lost, and /content in the pod still has them, whether the daemon watched the restart or
was down meanwhile."""

from __future__ import annotations

import json
from typing import Any

from sessions_support import jupyter_api, kubesim_admin, read, wait_for, write

EDITED = "print('edited after the launch')\n"


def _notebook_container(nb: Any) -> dict[str, Any]:
    """The notebook container's containerID, restartCount and readiness, as the pod status says."""
    pod = nb.stack.core().read_namespaced_pod(nb.pod()["name"], nb.namespace)
    (cs,) = [c for c in pod.status.container_statuses or [] if c.name == "notebook"]
    return {
        "id": cs.container_id or "",
        "restarts": cs.restart_count,
        "ready": bool(cs.ready),
        "uid": pod.metadata.uid,
    }


def _bound_instance(nb: Any) -> tuple[str, str]:
    """The (pod uid, containerID) the session's sync ancestor is bound to, as persisted."""
    (path,) = list(nb.daemon.state_dir.rglob(f"*+{nb.namespace}+{nb.name}.json"))
    sync = json.loads(path.read_text())["session"]["runtime"]["sync"]
    return sync["pod_uid"], sync.get("container_id", "")


def _edit_locally_and_settle(nb: Any) -> None:
    assert nb.pod_read("main.py") == "print('hello')\n"  # the image's version
    write(nb.directory / "main.py", EDITED)
    write(nb.directory / "made_after_launch.txt", "local\n")
    nb.pod_write("made_in_the_pod.txt", "pod\n")
    wait_for(lambda: read(nb.directory / "made_in_the_pod.txt") == "pod\n", "the pod's file locally")
    nb.flush()
    assert nb.pod_read("main.py") == EDITED
    assert nb.pod_read("made_after_launch.txt") == "local\n"


def _restart_container(nb: Any, before: dict[str, Any]) -> dict[str, Any]:
    kubesim_admin(nb.stack).kill_pod(nb.namespace, nb.pod()["name"])
    after: dict[str, Any] = wait_for(
        lambda: (c := _notebook_container(nb)) and c["restarts"] > before["restarts"] and c["ready"] and c,
        "the notebook container to be restarted and Ready",
    )
    assert after["uid"] == before["uid"] and after["id"] != before["id"]
    return after


def _nothing_lost(nb: Any) -> None:
    expected = {"main.py": EDITED, "made_after_launch.txt": "local\n", "made_in_the_pod.txt": "pod\n"}
    assert {path: read(nb.directory / path) for path in expected} == expected, "local files"
    assert {path: nb.pod_read(path) for path in expected} == expected, "the pod's /content"
    assert nb.local_files() == nb.pod_files()
    # /content is a volume: the restarted container finds what was synced, so nothing differs.
    assert not [p for p in nb.local_files() if ".conflict-" in p]


def test_a_container_restart_loses_no_local_edit(notebook_factory):
    nb = notebook_factory(build=True)
    _edit_locally_and_settle(nb)
    before = _notebook_container(nb)

    after = _restart_container(nb, before)
    wait_for(lambda: jupyter_api(nb.port)["version"], "the Jupyter API of the restarted container")
    nb.wait_sync("watching")
    nb.flush()
    _nothing_lost(nb)
    wait_for(lambda: _bound_instance(nb) == (after["uid"], after["id"]), "the sync bound to the new instance")

    # And the sync goes on both ways with the new instance.
    write(nb.directory / "after.txt", "to the restarted container\n")
    nb.pod_write("from_restarted.txt", "restarted\n")
    wait_for(lambda: nb.pod_read("after.txt") == "to the restarted container\n", "a local edit in the pod")
    wait_for(lambda: read(nb.directory / "from_restarted.txt") == "restarted\n", "a pod edit locally")


def test_a_container_restart_while_the_daemon_is_down_loses_no_local_edit(notebook_factory):
    """The next daemon finds another container instance than the one its ancestor was agreed with."""
    nb = notebook_factory(build=True)
    _edit_locally_and_settle(nb)
    before = _notebook_container(nb)
    nb.daemon.kill()
    after = _restart_container(nb, before)

    nb.restart_daemon()
    wait_for(lambda: jupyter_api(nb.port)["version"], "the forward after the daemon restart")
    nb.wait_sync("watching")
    nb.flush()
    _nothing_lost(nb)
    wait_for(lambda: _bound_instance(nb) == (after["uid"], after["id"]), "the sync bound to the new instance")


def test_a_session_recorded_without_the_container_id_resumes_without_its_ancestor(notebook_factory):
    """A session file written before the containerID was recorded cannot say which instance its
    ancestor belongs to: the next daemon syncs from an empty ancestor (nothing is deleted or
    reverted) and binds the session to the instance it finds."""
    nb = notebook_factory(build=True)
    _edit_locally_and_settle(nb)
    current = _notebook_container(nb)
    assert nb.daemon.stop() == 0
    (path,) = list(nb.daemon.state_dir.rglob(f"*+{nb.namespace}+{nb.name}.json"))
    data = json.loads(path.read_text())
    del data["session"]["runtime"]["sync"]["container_id"]
    path.write_text(json.dumps(data))

    nb.restart_daemon()
    wait_for(lambda: _bound_instance(nb) == (current["uid"], current["id"]), "the sync bound to the instance")
    nb.wait_sync("watching")
    nb.flush()
    _nothing_lost(nb)
    assert [
        line
        for line in nb.daemon.log_text().splitlines()
        if "notebook container of " in line
        and f"/{nb.namespace}/{nb.name} replaced: restarting its sync from an empty ancestor" in line
    ]
