"""Manifest builders tested by dict equality (kubespawner style)."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import pytest

from nbd_controller.config import DEFAULT_BUILDKIT_IMAGE, DEFAULT_KANIKO_IMAGE, Config
from nbd_controller.manifests import (
    build_job,
    fetch_script,
    jupyter_command,
    notebook_pod,
    pod_spec_hash,
    seed_script,
    token_secret,
)

CONFIG = Config(bucket="b", registry="reg.example/proj", gpu_label_key="gpu.example/type")
OWNER = {
    "apiVersion": "nbd.dev/v1alpha1",
    "kind": "Notebook",
    "name": "nb1",
    "uid": "u-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
MD5 = "0123456789abcdef0123456789abcdef"


def _notebook(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "nb1", "namespace": "team", "uid": "u-1", "generation": 1}, "spec": spec}


def test_token_secret() -> None:
    assert token_secret(_notebook(), "s3cret") == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "nb1-token",
            "namespace": "team",
            "labels": {
                "nbd.dev/notebook": "nb1",
                "nbd.dev/component": "notebook",
                "app.kubernetes.io/managed-by": "nbd-controller",
            },
            "ownerReferences": [OWNER],
        },
        "type": "Opaque",
        "data": {"token": base64.b64encode(b"s3cret").decode()},
    }


BUILD_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "5Gi"},
    "limits": {"memory": "8Gi", "ephemeral-storage": "50Gi"},
}


def _expected_job(build_container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    build_container = {**build_container, "resources": BUILD_RESOURCES}
    labels = {
        "nbd.dev/requested-by": "nb1",
        "nbd.dev/requested-by-kind": "Notebook",
        "nbd.dev/component": "build",
        "app.kubernetes.io/managed-by": "nbd-controller",
        "nbd.dev/context-md5": MD5,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"nbd-build-{MD5}",
            "namespace": "team",
            "labels": labels,
            "annotations": {"nbd.dev/image": "IMG"},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 3600,
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "initContainers": [
                        {
                            "name": "fetch",
                            "image": "python:3.12-alpine",
                            "command": ["python3", "-c", fetch_script()],
                            "env": [
                                {"name": "NBD_CONTEXT_URL", "value": "https://signed/get"},
                                {"name": "NBD_CONTEXT_MD5", "value": MD5},
                                {"name": "NBD_WORKSPACE", "value": "/workspace"},
                            ],
                            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                            "resources": BUILD_RESOURCES,
                        }
                    ],
                    "containers": [build_container],
                    "volumes": volumes,
                },
            },
        },
    }


def test_buildkit_job_uses_buildctl_daemonless_with_the_real_arguments() -> None:
    job = build_job(
        CONFIG, _notebook(build={"upload": {"md5": MD5, "requestID": "r"}}), MD5, "IMG", "https://signed/get"
    )
    assert job == _expected_job(
        {
            "name": "build",
            "image": DEFAULT_BUILDKIT_IMAGE,
            "command": ["buildctl-daemonless.sh"],
            "args": [
                "build",
                "--frontend",
                "dockerfile.v0",
                "--local",
                "context=/workspace",
                "--local",
                "dockerfile=/workspace",
                "--output",
                "type=image,name=IMG,push=true",
                "--export-cache",
                "type=registry,ref=reg.example/proj/nbd/cache:team,mode=max",
                "--import-cache",
                "type=registry,ref=reg.example/proj/nbd/cache:team",
            ],
            "env": [{"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}],
            "securityContext": {
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "seccompProfile": {"type": "Unconfined"},
                "appArmorProfile": {"type": "Unconfined"},
            },
            "volumeMounts": [
                {"name": "workspace", "mountPath": "/workspace"},
                {"name": "buildkitd", "mountPath": "/home/user/.local/share/buildkit"},
            ],
        },
        [{"name": "workspace", "emptyDir": {}}, {"name": "buildkitd", "emptyDir": {}}],
    )


def test_kaniko_job_and_insecure_registry() -> None:
    config = Config(bucket="b", registry="r", builder="kaniko", insecure_registry=True)
    job = build_job(config, _notebook(), MD5, "IMG", "https://signed/get")
    assert job == _expected_job(
        {
            "name": "build",
            "image": DEFAULT_KANIKO_IMAGE,
            "args": [
                "--context=dir:///workspace",
                "--dockerfile=/workspace/Dockerfile",
                "--destination=IMG",
                "--cache=true",
                "--cache-repo=r/nbd/cache/team",
                "--insecure",
            ],
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
        },
        [{"name": "workspace", "emptyDir": {}}],
    )


def _build_container(config: Config, **kwargs: Any) -> dict[str, Any]:
    container: dict[str, Any] = build_job(config, _notebook(), MD5, "IMG", "u", **kwargs)["spec"]["template"][
        "spec"
    ]["containers"][0]
    return container


def test_buildkit_insecure_registry_output_and_cache() -> None:
    config = Config(bucket="b", registry="r", insecure_registry=True)
    assert _build_container(config)["args"][-6:] == [
        "--output",
        "type=image,name=IMG,push=true,registry.insecure=true",
        "--export-cache",
        "type=registry,ref=r/nbd/cache:team,mode=max,registry.insecure=true",
        "--import-cache",
        "type=registry,ref=r/nbd/cache:team,registry.insecure=true",
    ]


@pytest.mark.parametrize("builder", ["buildkit", "kaniko"])
def test_cache_off_a_cache_repo_of_its_own_and_a_rebuild(builder: str) -> None:
    off = Config(bucket="b", registry="r", builder=builder, build_cache=False)
    args = _build_container(off)["args"]
    assert not any("cache" in a for a in args if a != "--cache=false")
    own = Config(bucket="b", registry="r", builder=builder, cache_repo="cache.example/team-cache")
    args = _build_container(own)["args"]
    ref = "cache.example/team-cache:team" if builder == "buildkit" else "cache.example/team-cache/team"
    assert any(ref in a for a in args)
    # A forced rebuild takes nothing from the cache; BuildKit still exports what it built.
    rebuild = _build_container(own, import_cache=False)["args"]
    assert not any("--import-cache" in a or "--cache=true" in a for a in rebuild)
    if builder == "buildkit":
        assert "--export-cache" in rebuild


@pytest.mark.parametrize(
    ("builder", "docker_config"), [("buildkit", "/home/user/.docker"), ("kaniko", "/kaniko/.docker")]
)
def test_registry_secret_and_build_service_account(builder: str, docker_config: str) -> None:
    config = Config(
        bucket="b", registry="r", builder=builder, registry_secret="regcred", build_service_account="builder"
    )
    spec = build_job(config, _notebook(), MD5, "IMG", "u")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "builder"
    assert spec["automountServiceAccountToken"] is True
    assert {
        "name": "registry-auth",
        "secret": {"secretName": "regcred", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]},
    } in spec["volumes"]
    container = spec["containers"][0]
    assert {"name": "registry-auth", "mountPath": docker_config, "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "DOCKER_CONFIG", "value": docker_config} in container["env"]
    pod = notebook_pod(config, _notebook(), "IMG")
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    plain = Config(bucket="b", registry="r", builder=builder)
    assert "imagePullSecrets" not in notebook_pod(plain, _notebook(), "IMG")["spec"]
    assert (
        "serviceAccountName" not in build_job(plain, _notebook(), MD5, "IMG", "u")["spec"]["template"]["spec"]
    )


def test_notebook_pod_with_gpu_env_and_defaults() -> None:
    notebook = _notebook(
        port=9999,
        workdir="/content",
        resources={"gpu": {"count": 2, "type": "nvidia-l4"}, "cpu": "2", "memory": "8Gi"},
        env=[{"name": "A", "value": "1"}, {"name": "JUPYTER_TOKEN", "value": "ignored"}],
    )
    pod = notebook_pod(CONFIG, notebook, "IMG")
    expected_hash = pod["metadata"]["annotations"]["nbd.dev/spec-hash"]
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "nb1-notebook",
            "namespace": "team",
            "labels": {
                "nbd.dev/notebook": "nb1",
                "nbd.dev/component": "notebook",
                "app.kubernetes.io/managed-by": "nbd-controller",
            },
            "annotations": {"nbd.dev/spec-hash": expected_hash},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"},
            "nodeSelector": {"gpu.example/type": "nvidia-l4"},
            # A GPU pod tolerates the GPU nodes' taint by itself (GKE and EKS taint them).
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            # /content is an emptyDir (at subPath workdir), seeded from the image's /content once.
            "initContainers": [
                {
                    "name": "seed-workdir",
                    "image": "IMG",
                    "command": [
                        "/bin/sh",
                        "-c",
                        'set -eu; if [ ! -e "$1/.nbd-seeded" ]; then rm -rf "$1/workdir"; mkdir "$1/workdir"; '
                        'if [ -d "$2" ]; then cp -a "$2/." "$1/workdir/"; fi; chmod -R g+rwX "$1/workdir"; '
                        ': > "$1/.nbd-seeded"; fi',
                        "seed-workdir",
                        "/nbd-workdir-volume",
                        "/content",
                    ],
                    "workingDir": "/",
                    "volumeMounts": [{"name": "workdir", "mountPath": "/nbd-workdir-volume"}],
                    # A built image's tag is pushed again by a forced rebuild: always ask the registry.
                    "imagePullPolicy": "Always",
                    "resources": {
                        "requests": {"cpu": "2", "memory": "8Gi"},
                        "limits": {"cpu": "2", "memory": "8Gi"},
                    },
                }
            ],
            "containers": [
                {
                    "name": "notebook",
                    "image": "IMG",
                    "command": [
                        "/bin/sh",
                        "-c",
                        'if command -v jupyter-lab >/dev/null 2>&1; then exec jupyter lab "$@"; fi; '
                        'if command -v jupyter-notebook >/dev/null 2>&1; then exec jupyter notebook "$@"; fi; '
                        'exec jupyter server "$@"',
                        "jupyter",
                        "--ip=0.0.0.0",
                        "--port=9999",
                        "--port-retries=0",
                        "--allow-root",
                        "--no-browser",
                        "--notebook-dir=/content",
                    ],
                    "workingDir": "/content",
                    "env": [
                        {
                            "name": "JUPYTER_TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "nb1-token", "key": "token"}},
                        },
                        {"name": "NBD_NOTEBOOK", "value": "nb1"},
                        {"name": "A", "value": "1"},
                    ],
                    "ports": [{"name": "http", "containerPort": 9999, "protocol": "TCP"}],
                    # /dev/shm: memory-backed, half the memory limit by default.
                    "volumeMounts": [
                        {"name": "workdir", "mountPath": "/content", "subPath": "workdir"},
                        {"name": "dshm", "mountPath": "/dev/shm"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/api", "port": 9999},
                        "periodSeconds": 2,
                        "timeoutSeconds": 2,
                        "failureThreshold": 3,
                    },
                    "imagePullPolicy": "Always",
                    "resources": {
                        # the configured ephemeral-storage defaults, the spec's cpu and memory
                        "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "1Gi"},
                        "limits": {
                            "ephemeral-storage": "50Gi",
                            "cpu": "2",
                            "memory": "8Gi",
                            "nvidia.com/gpu": "2",
                        },
                    },
                }
            ],
            "volumes": [
                {"name": "workdir", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}},
            ],
        },
    }


# The configured defaults (Config's): small requests, and a disk bound the kubelet enforces.
DEFAULTS = {
    "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
    "limits": {"ephemeral-storage": "50Gi"},
}


@pytest.mark.parametrize(
    ("spec", "command", "resources", "selector"),
    [
        ({}, jupyter_command(8888, "/content"), DEFAULTS, None),
        (
            {"command": ["python3", "-m", "http.server", "8888"], "workdir": "/w"},
            ["python3", "-m", "http.server", "8888"],
            DEFAULTS,
            None,
        ),
        (
            {"resources": {"gpu": {"count": 0, "type": "t4"}}},
            jupyter_command(8888, "/content"),
            DEFAULTS,
            None,
        ),
        (
            {"resources": {"gpu": {"count": 1}}},
            jupyter_command(8888, "/content"),
            {**DEFAULTS, "limits": {"ephemeral-storage": "50Gi", "nvidia.com/gpu": "1"}},
            None,
        ),
    ],
)
def test_notebook_pod_variants(
    spec: dict[str, Any], command: list[str], resources: Any, selector: Any
) -> None:
    pod = notebook_pod(CONFIG, _notebook(**spec), "IMG")
    container = pod["spec"]["containers"][0]
    assert container["command"] == command
    assert container.get("resources") == resources
    assert pod["spec"].get("nodeSelector") == selector
    # Whatever the workdir, it is the volume, seeded from the same directory of the image.
    workdir = spec.get("workdir", "/content")
    assert container["volumeMounts"] == [
        {"name": "workdir", "mountPath": workdir, "subPath": "workdir"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    (seed,) = pod["spec"]["initContainers"]
    assert seed["command"] == seed_script(workdir) and seed["command"][-1] == workdir
    # The seed asks the same cpu and memory (the pod's QoS class stays), and no GPU or disk bound.
    assert seed["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    # No memory limit: /dev/shm is 1Gi.
    assert pod["spec"]["volumes"] == [
        {"name": "workdir", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]


def _seed(volume: Any, workdir: Any) -> None:
    subprocess.run(seed_script(str(workdir))[:-2] + [str(volume), str(workdir)], check=True)


def test_the_seed_copies_the_image_workdir_once_keeping_modes_times_and_links(tmp_path: Any) -> None:
    import os

    image = tmp_path / "image-content"
    (image / "sub").mkdir(parents=True)
    (image / "main.py").write_text("print('hello')\n")
    (image / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(image / "run.sh", 0o750)
    os.utime(image / "main.py", (1_600_000_000, 1_600_000_000))
    os.symlink("main.py", image / "link.py")
    volume = tmp_path / "volume"
    volume.mkdir()
    _seed(volume, image)
    work = volume / "workdir"
    assert (work / "main.py").read_text() == "print('hello')\n"
    assert (work / "main.py").stat().st_mtime == 1_600_000_000
    # The owner's bits are kept; the group (the pod's fsGroup) may write, as on the volume itself.
    assert (work / "run.sh").stat().st_mode & 0o777 == 0o770
    assert (work / "main.py").stat().st_mode & 0o070 == 0o060
    assert os.readlink(work / "link.py") == "main.py" and (work / "sub").is_dir()
    assert (volume / ".nbd-seeded").exists()

    # Edits in the volume (what the user did since) survive the seed running again.
    (work / "main.py").write_text("edited\n")
    (work / "new.txt").write_text("new\n")
    _seed(volume, image)
    assert (work / "main.py").read_text() == "edited\n" and (work / "new.txt").read_text() == "new\n"


def test_the_seed_redoes_a_copy_cut_short_and_makes_an_empty_workdir_without_one(tmp_path: Any) -> None:
    volume = tmp_path / "volume"
    (volume / "workdir").mkdir(parents=True)
    (volume / "workdir" / "half.txt").write_text("half")  # a copy cut short: no marker
    image = tmp_path / "image-content"
    image.mkdir()
    (image / "a.txt").write_text("a")
    _seed(volume, image)
    assert sorted(p.name for p in (volume / "workdir").iterdir()) == ["a.txt"]

    empty = tmp_path / "empty-volume"
    empty.mkdir()
    _seed(empty, tmp_path / "no-such-dir-in-the-image")
    assert list((empty / "workdir").iterdir()) == [] and (empty / ".nbd-seeded").exists()


def test_a_seed_that_cannot_copy_fails_without_marking_the_volume_seeded(tmp_path: Any) -> None:
    """The init container exits non-zero, so the pod does not start (the kubelet retries it and
    the pod shows why), and nothing claims the volume was seeded: the next try copies again."""
    import os

    image = tmp_path / "image-content"
    image.mkdir()
    (image / "a.txt").write_text("a")
    volume = tmp_path / "volume"
    volume.mkdir()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cp").write_text("#!/bin/sh\necho 'cp: error writing: No space left on device' >&2\nexit 1\n")
    os.chmod(fake / "cp", 0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(
        seed_script(str(image))[:-2] + [str(volume), str(image)], capture_output=True, text=True, env=env
    )
    assert result.returncode != 0 and "No space left on device" in result.stderr
    assert not (volume / ".nbd-seeded").exists()
    _seed(volume, image)
    assert (volume / "workdir" / "a.txt").read_text() == "a" and (volume / ".nbd-seeded").exists()


def test_spec_hash_changes_with_what_matters() -> None:
    a = notebook_pod(CONFIG, _notebook(), "IMG")
    assert pod_spec_hash(a) == pod_spec_hash(notebook_pod(CONFIG, _notebook(), "IMG"))
    assert pod_spec_hash(a) != pod_spec_hash(notebook_pod(CONFIG, _notebook(), "IMG2"))
    assert pod_spec_hash(a) != pod_spec_hash(notebook_pod(CONFIG, _notebook(port=1234), "IMG"))


@pytest.mark.parametrize(
    ("scripts", "expected"),
    [
        (("jupyter", "jupyter-lab", "jupyter-notebook"), "lab"),
        (("jupyter", "jupyter-notebook"), "notebook"),
        (("jupyter",), "server"),
    ],
)
def test_default_command_starts_the_richest_ui_the_image_has(tmp_path, scripts, expected) -> None:
    """The command runs as written: with a fake `jupyter` on PATH, the subcommand it picks and the options."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in scripts:
        script = bindir / name
        script.write_text('#!/bin/sh\necho "$(basename "$0") $*"\n')
        script.chmod(0o755)
    command = jupyter_command(8888, "/content")
    done = subprocess.run(
        command, env={"PATH": f"{bindir}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "jupyter",
        expected,
        "--ip=0.0.0.0",
        "--port=8888",
        "--port-retries=0",
        "--allow-root",
        "--no-browser",
        "--notebook-dir=/content",
    ]


def test_a_separate_build_namespace_holds_the_build_job_without_an_owner() -> None:
    from nbd_controller.naming import build_job_name

    config = Config(bucket="b", registry="r", build_namespace="nbd-builds")
    job = build_job(
        config, _notebook(build={"upload": {"md5": MD5, "requestID": "r"}}), MD5, "IMG", "https://get"
    )
    meta = job["metadata"]
    assert meta["namespace"] == "nbd-builds"
    assert "ownerReferences" not in meta  # an owner must share the dependent's namespace
    assert job["spec"]["ttlSecondsAfterFinished"] == 24 * 3600
    assert meta["labels"]["nbd.dev/for-namespace"] == "team"
    assert job["spec"]["template"]["metadata"]["labels"]["nbd.dev/for-namespace"] == "team"
    # Two namespaces building the same content in the shared namespace get two Jobs.
    assert meta["name"] == build_job_name(MD5, "team") != build_job_name(MD5, "other")
    assert len(meta["name"]) <= 63
    # The build namespace itself builds as before.
    same = Config(bucket="b", registry="r", build_namespace="team")
    assert build_job(same, _notebook(build={"upload": {"md5": MD5, "requestID": "r"}}), MD5, "IMG", "u")[
        "metadata"
    ]["ownerReferences"]


def test_placement_merges_the_cluster_defaults_with_the_spec() -> None:
    from nbd_controller.manifests import placement

    config = Config(
        bucket="b",
        registry="r",
        gpu_label_key="cloud.google.com/gke-accelerator",
        default_tolerations=({"key": "team", "operator": "Exists"},),
        default_node_selector={"pool": "shared", "zone": "a"},
        default_priority_class="low",
    )
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spec = {
        "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}},
        "nodeSelector": {"pool": "gpu", "cloud.google.com/gke-accelerator": "ignored"},
        # A toleration the defaults have already is not repeated; the GPU taint's neither.
        "tolerations": [{"key": "team", "operator": "Exists"}, gpu, {"key": "spot", "operator": "Exists"}],
        "priorityClassName": "high",
    }
    assert placement(config, spec, {"cloud.google.com/gke-accelerator": "nvidia-l4"}) == {
        # The spec's keys override the defaults'; the GPU type's label overrides both.
        "nodeSelector": {"pool": "gpu", "zone": "a", "cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "team", "operator": "Exists"}, gpu, {"key": "spot", "operator": "Exists"}],
        "priorityClassName": "high",
    }
    # No GPU asked for: no GPU toleration; no spec values: the defaults alone.
    assert placement(config, {}, {}) == {
        "nodeSelector": {"pool": "shared", "zone": "a"},
        "tolerations": [{"key": "team", "operator": "Exists"}],
        "priorityClassName": "low",
    }
    assert placement(Config(bucket="b", registry="r"), {"resources": {"gpu": {"count": 0}}}, {}) == {}
