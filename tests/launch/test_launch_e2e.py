"""The launch end to end: nbctl → daemon → local cluster (kubesim, GCS emulator, nbd-controller).

Real processes on loopback: the session-scoped local cluster, one daemon for the module, nbctl as
a subprocess printing JSON events. Each test works in its own namespace on a copy of
examples/hello.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

from launchkit import LaunchKit, age, api_url, http_get, make_project, wait_until

PACKAGE, UPLOAD, BUILD = "STEP_PACKAGE", "STEP_UPLOAD", "STEP_BUILD"
UPLOADING, BUILDING, READY = "PHASE_UPLOADING", "PHASE_BUILDING", "PHASE_READY"


def test_launch_answers_through_the_url_then_relaunch_is_cached(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, unique=True)
    first = kit.launch(project, ns)
    assert first.rc == 0, first.stderr
    assert UPLOADING in first.phases() and BUILDING in first.phases()
    assert first.of("build_log"), "the build's log lines are streamed"
    assert {line["container"] for line in first.of("build_log")} == {"fetch", "build"}
    url = first.url
    assert url.startswith("http://127.0.0.1:") and "?token=" in url
    status, body = http_get(api_url(url))
    assert status == 200, body[:200]
    assert any(item["name"] == "hello.ipynb" for item in json.loads(body)["content"])
    # Without the token Jupyter refuses: the URL's token is the one that matters.
    assert http_get(api_url(url).split("?")[0])[0] in (401, 403)

    listed = kit.session(ns, "proj")
    assert listed is not None
    assert listed["phase"] == READY and listed["url"] == url
    assert listed["forward"]["state"] == "FORWARD_STATE_ACTIVE"
    assert listed["sync"]["state"] in (
        "SYNC_STATE_CONNECTING",
        "SYNC_STATE_SCANNING",
        "SYNC_STATE_SYNCING",
        "SYNC_STATE_WATCHING",
    )
    # The initial reconcile settles into watching both sides.
    wait_until(
        lambda: (kit.session(ns, "proj") or {}).get("sync", {}).get("state") == "SYNC_STATE_WATCHING",
        what="the sync to watch",
    )

    # Unchanged: nothing is packaged, uploaded or built again; the same URL comes back and the
    # running pod is kept (a relaunch of a live session re-attaches).
    pod_uid = kit.pods(ns, "nbd.dev/notebook=proj")[0].metadata.uid
    again = kit.launch(project, ns)
    assert again.rc == 0, again.stderr
    assert again.cached_steps() == {PACKAGE, UPLOAD, BUILD}
    assert UPLOADING not in again.phases() and BUILDING not in again.phases()
    assert again.url == url and again.md5 == first.md5
    assert [p.metadata.uid for p in kit.pods(ns, "nbd.dev/notebook=proj")] == [pod_uid]

    # Touched but not changed: packaged again (the stat changed), same MD5, so still no upload or build.
    now = time.time() - 60
    os.utime(project / "hello.py", (now, now))
    touched = kit.launch(project, ns)
    assert touched.rc == 0, touched.stderr
    assert PACKAGE not in touched.cached_steps()
    assert {UPLOAD, BUILD} <= touched.cached_steps()
    assert UPLOADING not in touched.phases() and BUILDING not in touched.phases()
    assert touched.md5 == first.md5

    # One file changed: a new MD5, uploaded and built.
    (project / "hello.py").write_text((project / "hello.py").read_text() + "\n# changed\n")
    age(project)
    changed = kit.launch(project, ns)
    assert changed.rc == 0, changed.stderr
    assert changed.md5 != first.md5
    assert UPLOADING in changed.phases() and BUILDING in changed.phases()
    assert not {UPLOAD, BUILD} & changed.cached_steps()
    assert http_get(api_url(changed.url))[0] == 200


def test_stop_relaunch_on_the_same_port_then_delete(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    import socket

    project = make_project(tmp_path, "stopper")
    # A port of its own (8888 and its neighbours are contended on a shared machine); the relaunch
    # below passes no --port: the session remembers it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = kit.launch(project, ns, "--port", str(port))
    assert first.rc == 0, first.stderr
    assert first.ready["local_port"] == port

    stopped = kit.nbctl("stop", f"{ns}/stopper", "--output", "json")
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not kit.pods(ns, "nbd.dev/notebook=stopper"), what="the notebook pod to go")
    nb = kit.notebook(ns, "stopper")
    assert nb is not None and nb["spec"]["suspend"] is True
    session = kit.session(ns, "stopper")
    assert session is not None and session["phase"] == "PHASE_STOPPED"
    assert session["sync"]["state"] == "SYNC_STATE_DISABLED"

    again = kit.launch(project, ns)
    assert again.rc == 0, again.stderr
    assert {UPLOAD, BUILD} <= again.cached_steps()
    assert BUILDING not in again.phases()
    assert again.ready["local_port"] == port
    assert http_get(api_url(again.url))[0] == 200

    deleted = kit.nbctl("stop", f"{ns}/stopper", "--delete")
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: kit.notebook(ns, "stopper") is None, what="the Notebook to be deleted")
    assert kit.session(ns, "stopper") is None


def test_logs_of_the_notebook_and_of_its_build(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "logged")
    launched = kit.launch(project, ns)
    assert launched.rc == 0, launched.stderr

    build = kit.nbctl("logs", f"{ns}/logged", "--build")
    assert build.returncode == 0, build.stderr
    lines = build.stdout.splitlines()
    fetch_at = next(i for i, line in enumerate(lines) if "nbd-fetch: downloaded" in line)
    build_at = next(i for i, line in enumerate(lines) if "load build definition from Dockerfile" in line)
    assert fetch_at < build_at, "the fetch init container's log comes before the build's"

    notebook = kit.nbctl("logs", f"{ns}/logged")
    assert notebook.returncode == 0, notebook.stderr
    assert notebook.stdout.strip(), "the notebook server logs something at start"
    assert launched.url.split("token=")[1] not in notebook.stdout + build.stdout


def test_attach_and_directories_whose_names_collide(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path / "a", "same")
    other = make_project(tmp_path / "b", "same")

    nothing = kit.launch(project, ns, "--attach")
    assert nothing.rc == 1
    assert "launch it without --attach" in nothing.stderr

    first = kit.launch(project, ns)
    assert first.rc == 0, first.stderr

    attached = kit.launch(project, ns, "--attach")
    assert attached.rc == 0, attached.stderr
    assert attached.url == first.url
    assert "PHASE_PACKAGING" not in attached.phases() and not attached.of("cached")

    clash = kit.launch(other, ns)
    assert clash.rc == 1
    assert f"already launched from {project}" in clash.stderr
    assert "--name" in clash.stderr
    assert len(clash.stderr.strip().splitlines()) == 1
    # The clash changed nothing: the first session still answers.
    assert http_get(api_url(first.url))[0] == 200

    renamed = kit.launch(other, ns, "--name", "same-b")
    assert renamed.rc == 0, renamed.stderr
    assert renamed.url != first.url


def test_kubectl_notebook_through_the_kubectl_plugin_mechanism(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    import shutil
    import subprocess
    import sys

    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is on PATH on these machines"
    project = make_project(tmp_path, "plugged")
    env = {**kit.daemon.env, **kit.env()}
    # kubectl finds `kubectl-notebook` on PATH: the venv's bin dir holds it.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    listed = subprocess.run([kubectl, "plugin", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "kubectl-notebook" in listed.stdout, listed.stdout + listed.stderr
    proc = subprocess.run(
        [kubectl, "notebook", "-d", str(project), "-n", ns],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    assert url.startswith("http://127.0.0.1:") and "token=" in url, proc.stdout
    assert http_get(api_url(url))[0] == 200
    # A failure keeps kubectl's exit code non-zero and the message on one line.
    bad = subprocess.run(
        [kubectl, "notebook", "-d", str(tmp_path / "nowhere"), "-n", ns],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0
    assert "is not a directory" in bad.stderr


def test_the_directory_and_the_notebook_stay_in_sync(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    import urllib.request

    project = make_project(tmp_path, "synced")
    launched = kit.launch(project, ns)
    assert launched.rc == 0, launched.stderr
    token = launched.url.split("token=")[1]
    base = launched.url.split("?")[0].rsplit("/", 1)[0]

    # The files from the image carry their local modification times, not the archive's 1970.
    def pod_time(rel: str) -> float:
        status, body = http_get(api_url(launched.url, f"api/contents/{rel}"))
        assert status == 200, body[:200]
        stamp = json.loads(body)["last_modified"]
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    for rel in ("hello.py", "notebook.yaml"):
        local = (project / rel).stat().st_mtime
        try:
            wait_until(
                lambda rel=rel, local=local: abs(pod_time(rel) - local) < 1.0,
                timeout=60,
                what=f"{rel} in the pod to show its local modification time",
            )
        except AssertionError as e:
            log = (kit.daemon.dirs.state_dir / "nbd.log").read_text(errors="replace").splitlines()
            told = [line for line in log if "file times" in line or "sync" in line.lower()][-20:]
            raise AssertionError(
                f"{e}; pod time {pod_time(rel)}, local {local}; daemon log:\n" + "\n".join(told)
            ) from e

    # Local → notebook: a file written here shows up in Jupyter's /content.
    (project / "from_laptop.txt").write_text("written locally\n")
    wait_until(
        lambda: http_get(api_url(launched.url, "api/contents/from_laptop.txt"))[0] == 200,
        what="the local file to reach the pod",
    )

    # Notebook → local: a file saved through Jupyter lands in the directory.
    body = json.dumps({"type": "file", "format": "text", "content": "written in the notebook\n"}).encode()
    request = urllib.request.Request(
        f"{base}/api/contents/from_notebook.txt",
        data=body,
        method="PUT",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status in (200, 201)
    target = project / "from_notebook.txt"
    wait_until(
        lambda: target.exists() and target.read_text() == "written in the notebook\n",
        what="the notebook's file to reach the directory",
    )
    session = kit.session(ns, "synced")
    assert session is not None and int(session["sync"].get("files_to_local") or 0) >= 1


def test_a_killed_daemon_comes_back_with_the_session(
    kit: LaunchKit, ns: str, tmp_path: Path, daemon_factory: Any
) -> None:
    """SIGKILL the daemon: the next one resumes the forward on the same port, nothing rebuilt."""
    import socket

    first_daemon = daemon_factory(env={"HOME": str(tmp_path)})
    own = LaunchKit(first_daemon, kit.stack)
    project = make_project(tmp_path, "survivor")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launched = own.launch(project, ns, "--port", str(port))
    assert launched.rc == 0, launched.stderr
    first_daemon.kill()

    second_daemon = daemon_factory(dirs=first_daemon.dirs, env={"HOME": str(tmp_path)})
    again = LaunchKit(second_daemon, kit.stack)
    wait_until(lambda: http_get(api_url(launched.url))[0] == 200, what="the resumed forward to answer")
    session = again.session(ns, "survivor")
    assert session is not None and session["phase"] == READY and session["url"] == launched.url
    relaunched = again.launch(project, ns)
    assert relaunched.rc == 0, relaunched.stderr
    assert relaunched.url == launched.url
    assert {UPLOAD, BUILD} <= relaunched.cached_steps()
    again.cleanup(ns)


def test_a_notebook_launched_from_elsewhere_is_not_taken_over(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    foreign = {
        "apiVersion": "nbd.dev/v1alpha1",
        "kind": "Notebook",
        "metadata": {
            "name": "foreign",
            "namespace": ns,
            "annotations": {"nbd.dev/local-directory": "/home/someone/foreign"},
        },
        "spec": {"image": "python:3.11-slim", "suspend": True},
    }
    kit.stack.custom().create_namespaced_custom_object("nbd.dev", "v1alpha1", ns, "notebooks", foreign)
    before = kit.notebook(ns, "foreign")
    assert before is not None
    project = make_project(tmp_path, "foreign")
    refused = kit.launch(project, ns)
    assert refused.rc == 1
    assert "launched from /home/someone/foreign" in refused.stderr and "--name" in refused.stderr
    after = kit.notebook(ns, "foreign")
    assert after is not None and after["metadata"]["generation"] == before["metadata"]["generation"]
    assert kit.session(ns, "foreign") is None


def test_an_image_without_jupyterlab_says_so_and_opens_what_it_has(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    """A prebuilt image with only jupyter_server: the URL is the server root, and the user is told why."""
    project = make_project(tmp_path)
    launched = kit.launch(project, ns, "--image", jupyter_image)
    assert launched.rc == 0, launched.stderr
    ready = launched.ready
    assert ready["ui"] == "server"
    assert "neither JupyterLab nor the notebook UI" in ready["note"]
    assert launched.url.startswith("http://127.0.0.1:") and "/?token=" in launched.url
    notices = [n.get("message", "") for n in launched.of("notice")]
    assert any("add `jupyterlab` to the Dockerfile" in m for m in notices), notices
    status, _ = http_get(api_url(launched.url, "api/status"))
    assert status == 200
