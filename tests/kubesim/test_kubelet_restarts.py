"""A container restart as a real kubelet does it: a new instance with a new containerID starts from
its image again (what it wrote outside its volumes is gone, commands exec'd into it die with it),
and the pod's volumes keep everything. One kubesim subprocess for the module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for

from kubesim.images import ImageConfig, ImageStore
from kubesim.testing import KubesimServer, start_inprocess, start_kubesim

pytestmark = pytest.mark.timeout(120)

IMAGE = "registry.example/restarts/app:1"


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("restarts"))
    rootfs = tmp_path_factory.mktemp("image-rootfs")
    (rootfs / "content").mkdir()
    (rootfs / "content" / "from_image.txt").write_text("as built\n")
    # The node reads its images from its store on disk, as after a registry push.
    ImageStore(server.state_dir / "node" / "images").put(IMAGE, ImageConfig(workdir="/content"), rootfs)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def core(ks: KubesimServer) -> Iterator[Any]:
    from kubernetes import client

    api = ks.api_client()
    yield client.CoreV1Api(api)
    api.close()


def _pod(name: str, script: str, image: str = IMAGE, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": image,
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "terminationGracePeriodSeconds": 1,
            **spec,
        },
    }


def _status(core: Any, name: str, init: bool = False) -> Any:
    st = core.read_namespaced_pod(name, "default").status
    statuses = st.init_container_statuses if init else st.container_statuses
    return statuses[0] if statuses else None


def _running(core: Any, name: str, restarts: int) -> Any:
    cs = _status(core, name)
    return cs if cs is not None and cs.restart_count == restarts and cs.state.running else None


def _log(core: Any, name: str, container: str = "c") -> str:
    """The container's log ("" while it has none: not started yet)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return str(core.read_namespaced_pod_log(name, "default", container=container))
    except ApiException as e:
        if e.status == 400:
            return ""
        raise


def _delete(core: Any, name: str) -> None:
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


# Each instance says what it found, then changes its image's file, writes a file of its own
# outside any volume and appends to a file in the emptyDir.
SCRIPT = (
    'echo "image file: $(cat /content/from_image.txt)"; echo "own file: $(cat /content/mine 2>/dev/null)"; '
    'echo "volume lines: $(cat /data/kept 2>/dev/null | wc -l)"; '
    "echo changed > /content/from_image.txt; echo mine > /content/mine; echo run >> /data/kept; "
    "echo written; sleep 3600"
)


@pytest.mark.parametrize("how", ["kill", "liveness"])
def test_a_restarted_container_starts_from_its_image_and_keeps_its_volumes(
    core: Any, ks: KubesimServer, how: str
) -> None:
    name = f"fresh-{how}"
    manifest = _pod(name, SCRIPT)
    if how == "liveness":
        # Fails once /content/unhealthy exists: a restart by the kubelet's own decision. A fresh
        # instance has no such file, so it stays alive.
        manifest["spec"]["containers"][0]["livenessProbe"] = {
            "exec": {"command": ["sh", "-c", "! test -e /content/unhealthy"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        }
    core.create_namespaced_pod("default", manifest)
    first = wait_for(lambda: _running(core, name, 0), 30, "the first instance running")
    wait_for(lambda: "written" in _log(core, name), 15, "the first instance's writes")
    assert _log(core, name).splitlines()[:3] == ["image file: as built", "own file: ", "volume lines: 0"]
    if how == "kill":
        ks.admin.kill_pod("default", name)
    else:
        ks.kubectl("exec", name, "-c", "c", "--", "touch", "/content/unhealthy")
    second = wait_for(lambda: _running(core, name, 1), 30, "the restarted instance running")
    wait_for(lambda: "written" in _log(core, name), 15, "the second instance's writes")
    # The image's file is as built again, the instance's own file is gone, the volume kept its line.
    assert _log(core, name).splitlines()[:3] == ["image file: as built", "own file: ", "volume lines: 1"]
    assert first.container_id.startswith("kubesim://") and second.container_id.startswith("kubesim://")
    assert len(second.container_id) == len("kubesim://") + 64 and second.container_id != first.container_id
    last = second.last_state.terminated
    assert last.container_id == first.container_id and last.exit_code == 137
    _delete(core, name)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_commands_exec_d_into_a_container_die_with_its_instance(core: Any, ks: KubesimServer) -> None:
    name = "exec-orphan"
    core.create_namespaced_pod("default", _pod(name, SCRIPT))
    wait_for(lambda: _running(core, name, 0), 30, "running")
    # A detached loop started by exec outlives the exec (as a sync agent or a kernel may); it
    # leaves its pid in the volume.
    ks.kubectl(
        "exec",
        name,
        "-c",
        "c",
        "--",
        "sh",
        "-c",
        "nohup sh -c 'echo $$ > /data/orphan.pid; while true; do sleep 0.1; done' >/dev/null 2>&1 &",
    )
    pid_file = wait_for(
        lambda: next(ks.state_dir.rglob(f"default_{name}_*/volumes/data/orphan.pid"), None),
        10,
        "the exec'd loop's pid",
    )
    pid = int(wait_for(lambda: pid_file.read_text().strip(), 10, "the pid written"))
    assert _alive(pid)
    ks.admin.kill_pod("default", name)
    wait_for(lambda: not _alive(pid), 15, "the exec'd loop to die with its instance")
    wait_for(lambda: _running(core, name, 1), 30, "the restarted instance running")
    _delete(core, name)


def test_init_and_main_containers_of_one_image_have_filesystems_of_their_own(core: Any) -> None:
    """An init container sees its image's /content, not the volume the main container mounts there
    (what nbd's notebook pod relies on to seed its /content volume from the image)."""
    name = "seeded"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            # The subPath folder does not exist yet when the init container runs: it makes it.
            "initContainers": [
                {
                    "name": "seed",
                    "image": IMAGE,
                    "workingDir": "/",
                    "command": [
                        "sh",
                        "-c",
                        "echo init > /content/init_only; mkdir /seed/content; "
                        "cp -a /content/. /seed/content/",
                    ],
                    "volumeMounts": [{"name": "work", "mountPath": "/seed"}],
                }
            ],
            "containers": [
                {
                    "name": "c",
                    "image": IMAGE,
                    "command": ["sh", "-c", "ls /content; echo done; sleep 3600"],
                    "volumeMounts": [{"name": "work", "mountPath": "/content", "subPath": "content"}],
                }
            ],
            "volumes": [{"name": "work", "emptyDir": {}}],
            "terminationGracePeriodSeconds": 1,
        },
    }
    core.create_namespaced_pod("default", manifest)
    wait_for(lambda: "done" in _log(core, name), 30, "the main container's listing")
    assert _log(core, name).splitlines() == ["from_image.txt", "init_only", "done"]
    _delete(core, name)


def test_a_sub_path_leaving_its_volume_is_a_config_error(core: Any) -> None:
    name = "bad-subpath"
    manifest = _pod(name, "sleep 3600")
    manifest["spec"]["containers"][0]["volumeMounts"][0]["subPath"] = "../../etc"
    core.create_namespaced_pod("default", manifest)

    def config_error() -> Any:
        cs = _status(core, name)
        return (
            cs is not None
            and cs.state.waiting is not None
            and cs.state.waiting.reason == "CreateContainerConfigError"
            and cs.state.waiting.message
        )

    assert "subPath '../../etc' must be a relative path" in wait_for(
        config_error, 30, "CreateContainerConfigError"
    )
    _delete(core, name)


def test_a_container_whose_mounts_fail_is_a_start_error(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount namespace of an instance cannot be made: StartError with mount's words, then
    the restart policy decides, as after any failed start."""
    from kubernetes import client

    import kubesim.kubelet.namespaces as namespaces

    real = namespaces._container_script

    def failing(overlay: Any, mounts: Any) -> str:
        return real(overlay, [namespaces.Mount("/nonexistent-kubesim-source", "/zz-kubesim-target"), *mounts])

    monkeypatch.setattr(namespaces, "_container_script", failing)
    server = start_inprocess(tmp_path_factory.mktemp("mountfail"))
    try:
        api = server.api_client()
        core = client.CoreV1Api(api)
        core.create_namespaced_pod("default", _pod("nomount", "sleep 3600", "busybox", restartPolicy="Never"))

        def failed() -> Any:
            cs = _status(core, "nomount")
            return cs is not None and cs.state.terminated is not None and cs.state.terminated

        term = wait_for(failed, 30, "StartError")
        assert term.reason == "StartError" and term.exit_code == 128
        assert "error during container init" in term.message and "/nonexistent-kubesim-source" in term.message
        assert core.read_namespaced_pod("nomount", "default").status.phase == "Failed"
        api.close()
    finally:
        server.stop()


def test_container_namespace_reports_a_failed_overlay(tmp_path: Path) -> None:
    from kubesim.kubelet.namespaces import ContainerNamespace, Overlay, Sandbox, namespaces_available

    if not namespaces_available()[0]:
        pytest.skip("needs namespaces")

    async def scenario() -> str:
        sandbox = Sandbox("p")
        await sandbox.start([])
        try:
            ns = ContainerNamespace(sandbox)
            for d in ("u", "w", "m"):
                (tmp_path / d).mkdir()
            with pytest.raises(RuntimeError) as e:
                await ns.start(
                    Overlay(
                        str(tmp_path),
                        ("missing-lower",),
                        str(tmp_path / "u"),
                        str(tmp_path / "w"),
                        str(tmp_path / "m"),
                    ),
                    [],
                )
            assert ns.pid is None
            return str(e.value)
        finally:
            await sandbox.stop()

    assert "mount" in asyncio.run(scenario())
