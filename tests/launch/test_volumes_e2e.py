"""The notebook pod's volumes end to end on the local cluster: a workspace claim that outlives
`nbctl stop` and a replaced pod, /dev/shm of the requested size, a data claim mounted read-only, a
missing data claim or an unknown StorageClass failing the launch clearly, and `nbctl stop --delete`
that keeps the workspace unless told `--yes`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launchkit import LaunchKit, make_project, wait_until

READY = "PHASE_READY"


def _exec(kit: LaunchKit, ns: str, pod: str, script: str) -> tuple[int, str]:
    """Runs `sh -c script` in the notebook container; (exit code, stdout and stderr)."""
    from kubernetes.stream import stream

    resp = stream(
        kit.stack.core().connect_get_namespaced_pod_exec,
        pod,
        ns,
        container="notebook",
        command=["sh", "-c", script],
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    resp.run_forever(timeout=30)
    return int(resp.returncode), str(resp.read_stdout()) + str(resp.read_stderr())


def _ready_pod(kit: LaunchKit, ns: str, name: str, not_uid: str = "") -> Any:
    def ready() -> Any:
        for p in kit.pods(ns, f"nbd.dev/notebook={name}"):
            conditions = {c.type: c.status for c in p.status.conditions or []}
            if (
                p.metadata.uid != not_uid
                and not p.metadata.deletion_timestamp
                and conditions.get("Ready") == "True"
            ):
                return p
        return None

    return wait_until(ready, 120, f"a Ready pod of {name}")


def _claims(kit: LaunchKit, ns: str) -> dict[str, Any]:
    return {c.metadata.name: c for c in kit.stack.core().list_namespaced_persistent_volume_claim(ns).items}


def test_the_workspace_outlives_stop_and_a_new_pod_and_goes_only_with_yes(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    project = make_project(tmp_path)
    flags = ("--image", jupyter_image, "--no-sync", "--workspace-size", "1Gi", "--shm", "32Mi")
    first = kit.launch(project, ns, *flags)
    assert first.rc == 0, first.stderr
    claim = _claims(kit, ns)["proj-workspace"]
    assert claim.metadata.labels["nbd.dev/component"] == "workspace"
    assert claim.metadata.labels["nbd.dev/notebook"] == "proj"
    assert [o.kind for o in claim.metadata.owner_references] == ["Notebook"]
    assert claim.spec.resources.requests["storage"] == "1Gi"
    pod = _ready_pod(kit, ns, "proj")
    # Seeded from the image once; a file written in the pod, outside any sync (--no-sync).
    rc, out = _exec(kit, ns, pod.metadata.name, "echo kept > /content/in-pod.txt && df -k /dev/shm | tail -1")
    assert rc == 0, out
    assert out.split()[1] == "32768", out  # /dev/shm is the 32Mi asked for

    stopped = kit.nbctl("stop", f"{ns}/proj")
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not kit.pods(ns, "nbd.dev/notebook=proj"), 60, "the pod to go")
    again = kit.launch(project, ns, *flags)
    assert again.rc == 0, again.stderr
    pod = _ready_pod(kit, ns, "proj")
    assert _exec(kit, ns, pod.metadata.name, "cat /content/in-pod.txt") == (0, "kept\n")

    # A replaced pod (deleted, as a node drain or loss does) finds the same files.
    kit.stack.core().delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
    replaced = _ready_pod(kit, ns, "proj", not_uid=pod.metadata.uid)
    assert _exec(kit, ns, replaced.metadata.name, "cat /content/in-pod.txt") == (0, "kept\n")

    # The size: never smaller; larger only where the StorageClass allows expansion (not this one).
    base = [f for f in flags if f != "1Gi" and f != "--workspace-size"]
    for size, words in (("512Mi", "cannot shrink"), ("2Gi", "allowVolumeExpansion")):
        resized = kit.launch(project, ns, *base, "--workspace-size", size)
        assert resized.rc != 0 and words in resized.stderr and "proj-workspace" in resized.stderr, (
            resized.stderr
        )
    assert _claims(kit, ns)["proj-workspace"].spec.resources.requests["storage"] == "1Gi"

    # No terminal and no --yes: refused in one line that names the claim and says what to pass.
    refused = kit.nbctl("stop", f"{ns}/proj", "--delete")
    assert refused.returncode != 0
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "proj-workspace (1Gi)" in message and "--yes" in message, message
    assert "proj-workspace" in _claims(kit, ns) and kit.notebook(ns, "proj") is not None

    deleted = kit.nbctl("stop", f"{ns}/proj", "--delete", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: "proj-workspace" not in _claims(kit, ns), 60, "the workspace claim to go")
    assert kit.notebook(ns, "proj") is None


def test_a_missing_data_claim_fails_clearly_then_a_created_one_is_mounted_read_only(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    project = make_project(tmp_path)
    (project / "notebook.yaml").write_text(
        "volumes:\n  - claim: dataset\n    mountPath: /data\n    readOnly: true\n"
    )
    missing = kit.launch(project, ns, "--image", jupyter_image, "--no-sync")
    assert missing.rc != 0
    assert "dataset" in missing.stderr and ns in missing.stderr and "spec.volumes" in missing.stderr, (
        missing.stderr
    )
    assert not kit.pods(ns, "nbd.dev/notebook=proj")

    kit.stack.core().create_namespaced_persistent_volume_claim(
        ns,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "dataset"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    # The controller goes on by itself once the claim exists.
    pod = _ready_pod(kit, ns, "proj")
    launched = kit.launch(project, ns, "--image", jupyter_image, "--no-sync")
    assert launched.rc == 0, launched.stderr
    rc, out = _exec(kit, ns, pod.metadata.name, "ls -d /data && touch /data/x")
    assert rc != 0 and "Read-only file system" in out, out


def test_an_unknown_storage_class_fails_the_launch_naming_it(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    project = make_project(tmp_path)
    failed = kit.launch(
        project,
        ns,
        "--image",
        jupyter_image,
        "--no-sync",
        "--workspace-size",
        "1Gi",
        "--workspace-storage-class",
        "no-such-class",
    )
    assert failed.rc != 0
    assert "no-such-class" in failed.stderr and "not provisioned" in failed.stderr, failed.stderr


def test_bad_volume_fields_are_refused_before_packaging(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    for flags, words in (
        (("--shm", "lots"), "--shm must be a size"),
        (("--workspace-size", "0"), "larger than 0"),
        (("--workspace-storage-class", "fast"), "--workspace-size"),
    ):
        refused = kit.launch(project, ns, *flags)
        assert refused.rc != 0 and words in refused.stderr, refused.stderr
        assert not refused.of("progress"), "nothing was packaged"
    (project / "notebook.yaml").write_text("volumes:\n  - claim: d\n    mountPath: /content/data\n")
    refused = kit.launch(project, ns)
    assert refused.rc != 0 and "overlaps the working directory" in refused.stderr, refused.stderr
    assert kit.notebook(ns, "proj") is None


def test_a_workspace_of_an_expandable_class_grows(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    storage = client.StorageV1Api(kit.stack.core().api_client)
    try:
        storage.create_storage_class(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "nbd-test-growable"},
                "provisioner": "kubesim.dev/host-path",
                "allowVolumeExpansion": True,
            }
        )
    except ApiException as e:
        if e.status != 409:
            raise
    project = make_project(tmp_path)
    flags = ("--image", jupyter_image, "--no-sync", "--workspace-storage-class", "nbd-test-growable")
    assert kit.launch(project, ns, *flags, "--workspace-size", "1Gi").rc == 0
    grown = kit.launch(project, ns, *flags, "--workspace-size", "2Gi")
    assert grown.rc == 0, grown.stderr
    wait_until(
        lambda: (_claims(kit, ns)["proj-workspace"].status.capacity or {}).get("storage") == "2Gi",
        60,
        "the workspace claim to grow",
    )


def _nbctl_on_a_terminal(kit: LaunchKit, answer: str, *args: str) -> tuple[int, str]:
    """nbctl with its stdin and stderr on a pseudo-terminal: waits for the question, answers it."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbctl", *args],
        env={**kit.daemon.env, **kit.env()},
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break  # the terminal closed: nbctl exited
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        rc = proc.wait(timeout=30)
    finally:
        os.close(master)
    return rc, seen.decode(errors="replace")


def test_on_a_terminal_stop_delete_asks_naming_the_claim(
    kit: LaunchKit, ns: str, tmp_path: Path, jupyter_image: str
) -> None:
    project = make_project(tmp_path)
    launched = kit.launch(project, ns, "--image", jupyter_image, "--no-sync", "--workspace-size", "1Gi")
    assert launched.rc == 0, launched.stderr
    rc, shown = _nbctl_on_a_terminal(kit, "n", "stop", f"{ns}/proj", "--delete")
    assert rc != 0 and "proj-workspace (1Gi)" in shown and "nothing deleted" in shown, shown
    assert "proj-workspace" in _claims(kit, ns) and kit.notebook(ns, "proj") is not None
    rc, shown = _nbctl_on_a_terminal(kit, "y", "stop", f"{ns}/proj", "--delete")
    assert rc == 0, shown
    wait_until(lambda: "proj-workspace" not in _claims(kit, ns), 60, "the workspace claim to go")


def test_a_non_root_image_seeds_and_writes_a_workspace_through_the_fs_group(
    kit: LaunchKit, ns: str, tmp_path: Path
) -> None:
    """A claim's root is root-owned 0755 (a fresh filesystem's): the seed and Jupyter, running as
    uid 1000, write it only because the pod's fsGroup is given the volume."""
    from fixtures_stack import push_image
    from test_nonroot import _NONROOT_DOCKERFILE, NONROOT_IMAGE

    image = push_image(kit.stack, NONROOT_IMAGE, _NONROOT_DOCKERFILE)
    project = make_project(tmp_path)
    launched = kit.launch(project, ns, "--image", image, "--no-sync", "--workspace-size", "1Gi")
    assert launched.rc == 0, launched.stderr
    pod = _ready_pod(kit, ns, "proj")
    rc, out = _exec(
        kit, ns, pod.metadata.name, "id -u; echo mine > /content/by-uid-1000.txt && ls -ld /content"
    )
    assert rc == 0, out
    assert out.splitlines()[0] == "1000", out
