"""nbd on a hardened cluster: TLS, RBAC enforced for everyone but the admin, and owner-reference
permissions enforced (as OpenShift does). The controller runs as its service account with only what
`rbac-controller.yaml` grants; the user runs the daemon with only a RoleBinding of
`nbd-notebook-user`. Together they prove both roles are complete: a launch, a kernel and a run
work, and every object the controller makes blocks its owner's deletion."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_daemon import DaemonProcess
from fixtures_stack import LocalStack, make_namespace
from kubernetes import client
from launchkit import LaunchKit, api_url, http_get, make_project

from devstack import down, up
from devstack.stack import PLAIN_USER, controller_env


@pytest.fixture(scope="module")
def hardened() -> Iterator[LocalStack]:
    state = tempfile.mkdtemp(prefix="nbd-hard-", dir="/tmp")
    try:
        yield LocalStack(up(state, rbac=True))
    finally:
        down(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def user_ns(hardened: LocalStack) -> Iterator[str]:
    name = make_namespace(hardened, "h")
    client.RbacAuthorizationV1Api(hardened.core().api_client).create_namespaced_role_binding(
        name,
        {
            "metadata": {"name": "nbd-user"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "nbd-notebook-user",
            },
            "subjects": [{"kind": "User", "name": PLAIN_USER, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    yield name
    try:
        hardened.core().delete_namespace(name)
    except Exception:
        pass


def test_a_plain_user_launches_and_runs_on_a_hardened_cluster(
    launch_daemon: DaemonProcess, hardened: LocalStack, user_ns: str, tmp_path: Path
) -> None:
    kit = LaunchKit(launch_daemon, hardened)
    as_user = {"KUBECONFIG": hardened.stack.user_kubeconfig}
    project = make_project(tmp_path, "hard")
    try:
        launched = kit.launch(project, user_ns, env=as_user)
        assert launched.rc == 0, launched.stderr + hardened.log("controller")[-3000:]
        status, body = http_get(api_url(launched.url, "api/kernelspecs"))
        assert status == 200, body[:300]

        # Every object the controller made names its owner with blockOwnerDeletion, which the
        # cluster allowed only because the controller's role may update notebooks/finalizers.
        pods = hardened.core().list_namespaced_pod(user_ns, label_selector="nbd.dev/notebook=hard").items
        assert pods and all(r.block_owner_deletion for p in pods for r in p.metadata.owner_references)

        ran = kit.nbctl(
            "run", str(project), "-n", user_ns, "--", "python", "hello.py", env=as_user, timeout=300
        )
        assert ran.returncode == 0, ran.stderr
    finally:
        kit.nbctl("stop", f"{user_ns}/hard", "--delete", env=as_user)


def test_a_user_without_a_binding_gets_one_line_naming_the_role(
    launch_daemon: DaemonProcess, hardened: LocalStack, tmp_path: Path
) -> None:
    kit = LaunchKit(launch_daemon, hardened)
    bare = make_namespace(hardened, "nobind")
    launched = kit.launch(
        make_project(tmp_path, "nobind"), bare, env={"KUBECONFIG": hardened.stack.user_kubeconfig}
    )
    assert launched.rc != 0
    lines = [line for line in launched.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, launched.stderr
    assert f'User "{PLAIN_USER}" cannot' in lines[0] and "forbidden" in lines[0], lines[0]


def test_a_controller_whose_role_lacks_finalizers_refuses_to_start(hardened: LocalStack) -> None:
    rbac_api = client.RbacAuthorizationV1Api(hardened.core().api_client)
    role = rbac_api.read_cluster_role("nbd-controller")
    original = client.ApiClient().sanitize_for_serialization(role.rules)
    trimmed = [r for r in original if not any(res.endswith("/finalizers") for res in r["resources"])]
    assert len(trimmed) == len(original) - 1
    rbac_api.patch_cluster_role("nbd-controller", {"rules": trimmed})
    state = Path(hardened.stack.state_dir)
    # The store's own port: the check refuses before the store would listen on it.
    store_url = hardened.stack.gcs_url or hardened.stack.s3_url or hardened.stack.extra["store_listen_url"]
    port = int(store_url.rsplit(":", 1)[1])
    env = controller_env(hardened.stack, str(state / "signing-key.json"), port, port)
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nbd_controller.main",
                "--kubeconfig",
                str(state / "controller.kubeconfig"),
            ],
            env={**env, "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        rbac_api.patch_cluster_role("nbd-controller", {"rules": original})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "nbd-controller: missing permissions: update notebooks/finalizers (nbd.dev), "
        "update runs/finalizers (nbd.dev); grant them in its ClusterRole (cluster/manifests/rbac-controller.yaml)"
    ), proc.stderr[-2000:]
    assert time.monotonic() - started < 60
