"""Who a container runs as: the kubelet's rules by table, then real pods on kubesim (runAsUser,
the image's USER, fsGroup on volumes, runAsNonRoot, exec'd commands) and a build's USER."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

from kubesim.identity import Identity, NonRootViolation, PasswdEntry, UnknownUser, resolve_identity
from kubesim.images import ImageConfig, ImageStore
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)

PASSWD = {
    "0": PasswdEntry(0, 0, "/root"),
    "root": PasswdEntry(0, 0, "/root"),
    "1000": PasswdEntry(1000, 100, "/home/jovyan"),
    "jovyan": PasswdEntry(1000, 100, "/home/jovyan"),
}
GROUPS = {"users": 100}


def _pod(
    pod_sc: dict[str, Any] | None = None, c_sc: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    container: dict[str, Any] = {"name": "c", **({"securityContext": c_sc} if c_sc else {})}
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": [container], **({"securityContext": pod_sc} if pod_sc else {})},
    }
    return pod, container


@pytest.mark.parametrize(
    ("pod_sc", "c_sc", "image_user", "want"),
    [
        (None, None, "", Identity(0, 0, (), "/root")),
        (None, None, "1000", Identity(1000, 100, (), "/home/jovyan")),
        (None, None, "1000:5", Identity(1000, 5, (), "/home/jovyan")),
        (None, None, "jovyan", Identity(1000, 100, (), "/home/jovyan")),
        (None, None, "jovyan:users", Identity(1000, 100, (), "/home/jovyan")),
        (None, None, "4242", Identity(4242, 0, (), "/")),
        ({"runAsUser": 2000}, None, "1000", Identity(2000, 0, (), "/")),
        ({"runAsUser": 2000}, {"runAsUser": 1000}, "", Identity(1000, 100, (), "/home/jovyan")),
        ({"runAsGroup": 7}, None, "1000", Identity(1000, 7, (), "/home/jovyan")),
        (
            {"fsGroup": 100, "supplementalGroups": [5, 100]},
            None,
            "1000",
            Identity(1000, 100, (5, 100), "/home/jovyan"),
        ),
        ({"fsGroup": 100}, None, "", Identity(0, 0, (100,), "/root")),
        ({"runAsNonRoot": True}, None, "1000", Identity(1000, 100, (), "/home/jovyan")),
        ({"runAsNonRoot": True, "runAsUser": 1000}, None, "", Identity(1000, 100, (), "/home/jovyan")),
    ],
)
def test_identity_rules(pod_sc: Any, c_sc: Any, image_user: str, want: Identity) -> None:
    pod, container = _pod(pod_sc, c_sc)
    assert resolve_identity(pod, container, image_user, PASSWD.get, GROUPS.get) == want


@pytest.mark.parametrize(
    ("pod_sc", "c_sc", "image_user", "message"),
    [
        (
            {"runAsNonRoot": True},
            None,
            "",
            "container has runAsNonRoot and image will run as root (pod: 'p_ns(u-1)', container: c)",
        ),
        (
            None,
            {"runAsNonRoot": True},
            "0",
            "container has runAsNonRoot and image will run as root (pod: 'p_ns(u-1)', container: c)",
        ),
        (
            {"runAsNonRoot": True},
            {"runAsUser": 0},
            "1000",
            "container's runAsUser breaks non-root policy (pod: 'p_ns(u-1)', container: c)",
        ),
        (
            {"runAsNonRoot": True},
            None,
            "jovyan",
            "container has runAsNonRoot and image has non-numeric user (jovyan), cannot verify user is non-root "
            "(pod: 'p_ns(u-1)', container: c)",
        ),
    ],
)
def test_run_as_non_root_refusals(pod_sc: Any, c_sc: Any, image_user: str, message: str) -> None:
    pod, container = _pod(pod_sc, c_sc)
    with pytest.raises(NonRootViolation) as e:
        resolve_identity(pod, container, image_user, PASSWD.get, GROUPS.get)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("image_user", "message"),
    [
        ("nobody-here", "unable to find user nobody-here: no matching entries in passwd file"),
        ("1000:nogroup-here", "unable to find group nogroup-here: no matching entries in group file"),
    ],
)
def test_unknown_names_fail_as_runc_does(image_user: str, message: str) -> None:
    pod, container = _pod()
    with pytest.raises(UnknownUser, match=message):
        resolve_identity(pod, container, image_user, PASSWD.get, GROUPS.get)


def test_prefix_drops_to_the_identity() -> None:
    assert Identity(0, 0, (), "/root").prefix() == []
    assert Identity(1000, 100, (), "/").prefix() == [
        "setpriv",
        "--reuid=1000",
        "--regid=100",
        "--clear-groups",
        "--",
    ]
    assert Identity(0, 0, (100,), "/").prefix() == ["setpriv", "--reuid=0", "--regid=0", "--groups=100", "--"]


# --- real pods ---------------------------------------------------------------------------------

USER_IMAGE = "registry.example/identity/user1000:1"
NAMED_IMAGE = "registry.example/identity/named:1"


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("identity"))
    rootfs = tmp_path_factory.mktemp("rootfs")
    (rootfs / "content").mkdir()
    (rootfs / "content" / "built.txt").write_text("as built\n")  # root-owned, 0644, as COPY makes it
    store = ImageStore(server.state_dir / "node" / "images")
    store.put(USER_IMAGE, ImageConfig(workdir="/content", user="1000"), rootfs)
    store.put(NAMED_IMAGE, ImageConfig(user="no-such-user-anywhere"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def _create(core: Any, name: str, image: str, script: str, **spec: Any) -> None:
    container: dict[str, Any] = {"name": "c", "image": image, "command": ["sh", "-c", script]}
    container.update(spec.pop("container", {}))
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
                **spec,
            },
        },
    )


def _finished_log(core: Any, name: str) -> str:
    wait_for(
        lambda: core.read_namespaced_pod(name, "default").status.phase in ("Succeeded", "Failed"),
        timeout=60,
        what=f"pod {name} to finish",
    )
    return str(core.read_namespaced_pod_log(name, "default"))


def test_the_image_user_runs_the_container_and_root_owned_image_files_stay_read_only(core: Any) -> None:
    _create(
        core,
        "imguser",
        USER_IMAGE,
        "id -u; id -g; echo $HOME; (echo x >> /content/built.txt) 2>/dev/null || echo denied",
    )
    out = _finished_log(core, "imguser").split()
    assert out[0] == "1000" and out[3] == "denied", out


def _claim(core: Any, name: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )


def test_run_as_user_and_fs_group_make_volumes_writable(core: Any) -> None:
    _claim(core, "ws")
    script = (
        "id -u; id -G; stat -c '%a %g' /data /claim; "
        "echo a > /data/f && echo a > /claim/f && echo wrote; stat -c '%g' /data/f /claim/f"
    )
    _create(
        core,
        "fsgroup",
        "busybox",
        script,
        securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
        volumes=[
            {"name": "data", "emptyDir": {}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "ws"}},
        ],
        container={
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "claim", "mountPath": "/claim"}]
        },
    )
    lines = _finished_log(core, "fsgroup").splitlines()
    assert lines[0] == "1000"
    assert set(lines[1].split()) == {"3000", "2000"}
    assert lines[2] == "2777 2000" and lines[3] == "2775 2000", lines  # setgid, group rwx
    assert lines[4] == "wrote" and lines[5:] == ["2000", "2000"], lines


def test_a_claim_without_fs_group_is_not_writable_by_a_non_root_user(core: Any) -> None:
    _claim(core, "ws2")
    _create(
        core,
        "nofsgroup",
        "busybox",
        "stat -c '%a %u' /claim; (echo a > /claim/f) 2>/dev/null || echo denied",
        securityContext={"runAsUser": 1000},
        volumes=[{"name": "claim", "persistentVolumeClaim": {"claimName": "ws2"}}],
        container={"volumeMounts": [{"name": "claim", "mountPath": "/claim"}]},
    )
    assert _finished_log(core, "nofsgroup").splitlines() == ["755 0", "denied"]


def test_run_as_non_root_refuses_a_root_image(core: Any) -> None:
    _create(core, "nonroot", "busybox", "true", securityContext={"runAsNonRoot": True})

    def waiting() -> Any:
        cs = core.read_namespaced_pod("nonroot", "default").status.container_statuses
        return (
            cs
            and cs[0].state.waiting
            and cs[0].state.waiting.reason == "CreateContainerConfigError"
            and cs[0]
        )

    cs = wait_for(waiting, what="CreateContainerConfigError")
    assert cs.state.waiting.message.startswith("container has runAsNonRoot and image will run as root (pod: ")


def test_an_unknown_image_user_is_a_start_error(core: Any) -> None:
    _create(core, "named", NAMED_IMAGE, "true")

    def terminated() -> Any:
        cs = core.read_namespaced_pod("named", "default").status.container_statuses
        return cs and cs[0].state.terminated and cs[0]

    cs = wait_for(terminated, what="the start error")
    assert cs.state.terminated.reason == "StartError"
    assert (
        "unable to find user no-such-user-anywhere: no matching entries in passwd file"
        in cs.state.terminated.message
    )


def test_exec_runs_as_the_container_user(ks: KubesimServer, core: Any) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "execuser"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "securityContext": {"runAsUser": 1000, "fsGroup": 100},
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("execuser", "default").status.phase == "Running", what="Running"
    )
    out = ks.kubectl("exec", "execuser", "--", "sh", "-c", "id -u; id -G")
    uid, groups = out.stdout.splitlines()
    assert uid == "1000" and "100" in groups.split(), out.stdout


def test_a_build_records_user_and_runs_later_steps_as_it(tmp_path: Path) -> None:
    import io

    from kubesim.images.buildkit import build

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\nWORKDIR /content\nRUN id -u > /content/root-step\nUSER 1000\n"
        "RUN id -u; touch /content/user-step 2>/dev/null || echo cannot-write-root-dir\n"
    )
    store = ImageStore(tmp_path / "images", tmp_path / "layers")
    out = io.StringIO()
    code = build(
        context=context, dockerfile=context / "Dockerfile", target="reg.test/u:1", store=store, out=out
    )
    log = out.getvalue()
    assert code == 0, log
    image = store.get("reg.test/u:1")
    assert image is not None and image.config.user == "1000"
    assert (
        "cannot-write-root-dir" in log
        and "\n1000\n" in log.replace("#7 ", "\n").replace("#8 ", "\n")
        or "1000" in log
    )
    assert "cannot-write-root-dir" in log, log
