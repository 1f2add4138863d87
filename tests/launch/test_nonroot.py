"""A notebook image that runs as a non-root user (`USER 1000`, as Jupyter's docker-stacks images do)
launches, saves from Jupyter and syncs both ways on the local cluster, which runs containers as
their user and gives volumes to the pod's fsGroup as a real kubelet does."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fixtures_stack import LocalStack, make_namespace, push_image
from launchkit import LaunchKit, make_project, wait_until

# A team's prebuilt image that runs as uid 1000, as Jupyter's docker-stacks images do.
NONROOT_IMAGE = "registry.example/nbd-tests/jupyter-nonroot:1"
_NONROOT_DOCKERFILE = (
    "FROM python:3.11-slim\nRUN --mount=type=cache,target=/root/.cache/pip pip install jupyter_server\n"
    "ENV HOME=/tmp\nUSER 1000\n"
)


def _api(url: str, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    token = url.split("token=", 1)[1]
    parts = urllib.parse.urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    request = urllib.request.Request(
        f"{base}/api/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def test_a_uid_1000_image_launches_saves_and_syncs(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "nonroot")
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "USER 1000\n")
    launched = kit.launch(project, ns)
    if launched.rc != 0:
        logs = kit.nbctl("logs", f"{ns}/nonroot")
        raise AssertionError(f"{launched.stderr}\n{logs.stdout[-3000:]}{logs.stderr[-1000:]}")
    url = launched.url

    pod = kit.pods(ns, "nbd.dev/notebook=nonroot")[0]
    assert pod.spec.security_context.fs_group is not None, "the workspace volume is given to a group"

    # Jupyter, running as uid 1000, saves a new notebook file into /content.
    status, body = _api(
        url,
        "contents/from_jupyter.txt",
        "PUT",
        {"type": "file", "format": "text", "content": "saved in the pod\n"},
    )
    assert status in (200, 201), body
    wait_until(
        lambda: (
            (project / "from_jupyter.txt").is_file()
            and (project / "from_jupyter.txt").read_text() == "saved in the pod\n"
        ),
        timeout=60,
        what="Jupyter's save to reach the local directory",
    )
    # It also overwrites a file that came with the image (seeded into the volume).
    status, body = _api(
        url, "contents/hello.py", "PUT", {"type": "file", "format": "text", "content": "x = 1\n"}
    )
    assert status in (200, 201), body
    wait_until(
        lambda: (project / "hello.py").read_text() == "x = 1\n", timeout=60, what="the overwrite to sync back"
    )

    # A local edit reaches the pod (the sync agent writes as the container's user).
    (project / "local_edit.txt").write_text("from the laptop\n")

    def pod_has_it() -> bool:
        status, body = _api(url, "contents/local_edit.txt?content=1")
        return status == 200 and body["content"] == "from the laptop\n"

    wait_until(pod_has_it, timeout=60, what="the local edit to reach the pod")
    # And a kernel runs as that user.
    status, kernel = _api(url, "kernels", "POST", {"name": "python3"})
    assert status in (200, 201), kernel
    session = kit.session(ns, "nonroot") or {}
    assert not session.get("sync", {}).get("conflicts"), session


def _restrict(kit: LaunchKit, ns: str) -> None:
    kit.stack.core().patch_namespace(
        ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )


def test_a_non_root_image_launches_in_a_restricted_namespace(
    kit: LaunchKit, ns: str, tmp_path: Path, local_stack: LocalStack
) -> None:
    # Builders need Unconfined profiles, which no enforcing namespace admits: a team's prebuilt image.
    image = push_image(local_stack, NONROOT_IMAGE, _NONROOT_DOCKERFILE)
    _restrict(kit, ns)
    project = make_project(tmp_path, "strict")
    launched = kit.launch(project, ns, "--image", image)
    assert launched.rc == 0, launched.stderr
    pod = kit.pods(ns, "nbd.dev/notebook=strict")[0]
    assert pod.spec.security_context.run_as_non_root is True
    assert all(c.security_context.capabilities.drop == ["ALL"] for c in pod.spec.containers)
    status, body = _api(launched.url, "status")
    assert status == 200, body
    (project / "edit.txt").write_text("synced into a restricted pod\n")

    def pod_has_it() -> bool:
        status, body = _api(launched.url, "contents/edit.txt?content=1")
        return status == 200 and body["content"] == "synced into a restricted pod\n"

    wait_until(pod_has_it, timeout=60, what="the local edit to reach the restricted pod")


def test_a_root_image_in_a_restricted_namespace_fails_with_what_to_change(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    _restrict(kit, ns)
    launched = kit.launch(make_project(tmp_path, "rootimg"), ns, "--image", jupyter_image)
    assert launched.rc != 0
    lines = [line for line in launched.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, launched.stderr
    assert "runAsNonRoot and image will run as root" in lines[0], lines[0]
    assert "add `USER 1000` (a numeric non-root user) to the Dockerfile" in lines[0], lines[0]


def test_a_build_in_a_restricted_namespace_fails_at_once_naming_the_label(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    _restrict(kit, ns)
    launched = kit.launch(make_project(tmp_path, "nobuild"), ns, timeout=90)
    assert launched.rc != 0
    lines = [line for line in launched.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, launched.stderr
    assert (
        "refuses the build pod" in lines[0] and "pod-security.kubernetes.io/enforce=privileged" in lines[0]
    ), lines[0]
    assert 'violates PodSecurity "restricted:latest"' in lines[0], lines[0]


def test_builds_in_a_separate_namespace_serve_a_restricted_one(
    launch_daemon: Any, stack_factory: Any, tmp_path: Path
) -> None:
    """The admin's layout for clusters that enforce Pod Security: users' namespaces at
    `restricted`, builds in one `privileged` namespace of their own (NBD_BUILD_NAMESPACE)."""
    stack = stack_factory(controller_extra_env={"NBD_BUILD_NAMESPACE": "nbd-builds"})
    core = stack.core()
    core.create_namespace(
        {"metadata": {"name": "nbd-builds", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    )
    ns = make_namespace(stack, "strict")
    core.patch_namespace(ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    kit = LaunchKit(launch_daemon, stack)
    project = make_project(tmp_path, "split")
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "USER 1000\n")
    try:
        launched = kit.launch(project, ns, timeout=300)
        assert launched.rc == 0, launched.stderr + stack.log("controller")[-3000:]
        jobs = (
            stack.batch()
            .list_namespaced_job("nbd-builds", label_selector=f"nbd.dev/for-namespace={ns}")
            .items
        )
        assert len(jobs) == 1 and not jobs[0].metadata.owner_references
        assert (
            stack.batch().list_namespaced_job(ns).items == []
        )  # nothing of the build in the user's namespace
        status, body = _api(launched.url, "status")
        assert status == 200, body
        # The same content again is not built again: the record is the user namespace's.
        kit.nbctl("stop", f"{ns}/split", "--delete")
        again = kit.launch(project, ns, timeout=300)
        assert again.rc == 0, again.stderr
        assert "STEP_BUILD" in again.cached_steps(), again.cached_steps()
    finally:
        kit.cleanup(ns)
