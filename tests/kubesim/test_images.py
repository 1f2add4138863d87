"""The node's image store: name normalisation, put/get, providers and built-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubesim.images import Image, ImageConfig, ImageStore, InvalidReference, matches, normalize


@pytest.mark.parametrize(
    "ref, canonical",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("gcr.io/proj/img:v1", "gcr.io/proj/img:v1"),
        ("localhost:5000/a", "localhost:5000/a:latest"),
        ("localhost/a:b", "localhost/a:b"),
        ("python:3.11-slim", "docker.io/library/python:3.11-slim"),
        ("a@sha256:" + "0" * 64, "docker.io/library/a@sha256:" + "0" * 64),
    ],
)
def test_normalize(ref: str, canonical: str) -> None:
    assert normalize(ref) == canonical


@pytest.mark.parametrize("ref", ["", "UPPER", "a b", "img:bad tag", "x@sha256:zz"])
def test_normalize_rejects(ref: str) -> None:
    with pytest.raises(InvalidReference):
        normalize(ref)


@pytest.mark.parametrize(
    "pattern, ref, ok",
    [
        ("moby/buildkit:*", "moby/buildkit:v0.16.0", True),
        ("moby/buildkit", "docker.io/moby/buildkit:latest", True),
        ("moby/buildkit:v*", "moby/buildkit:latest", False),
        ("python", "python:3.12", True),
        ("python", "pythonx", False),
        ("*.example.com/*", "reg.example.com/team:1", True),
        ("busybox:*", "NOT VALID", False),
    ],
)
def test_matches(pattern: str, ref: str, ok: bool) -> None:
    assert matches(pattern, ref) is ok


def test_builtins_resolve_with_any_tag(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    for ref, cmd in (("busybox", ["sh"]), ("alpine:3.20", ["/bin/sh"])):
        image = store.get(ref)
        assert image is not None and image.config.cmd == cmd and image.rootfs is None
    assert store.get("nosuch/image:v1") is None


def test_python_images_carry_a_python_environment_of_their_own(tmp_path: Path) -> None:
    """`python:*` is one layer: a virtual environment at /kubesim-python, first on the image's PATH."""
    store = ImageStore(tmp_path)
    image = store.get("python:3.11-slim")
    assert image is not None and image.config.cmd == ["python3"] and image.rootfs is not None
    assert len(image.layers) == 1
    assert image.config.env_value("PATH").split(":")[0] == "/kubesim-python/bin"
    env = image.rootfs / "kubesim-python"
    assert (env / "pyvenv.cfg").is_file() and (env / "bin" / "pip").is_file()
    assert "/kubesim-python/bin/python" in (env / "bin" / "pip").read_text().splitlines()[0]
    other = store.get("python:3.12")
    assert other is not None and other.layers == image.layers  # one interpreter here: one base layer


def test_put_get_replace_and_list(tmp_path: Path) -> None:
    rootfs = tmp_path / "src"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "app" / "x").write_text("1")
    store = ImageStore(tmp_path / "images")
    store.put(
        "example.com/t/app:v1",
        ImageConfig(entrypoint=["python3"], cmd=["-m", "app"], env=["A=1"], workdir="/app"),
        rootfs,
    )
    image = store.get("example.com/t/app:v1")
    assert image is not None and image.config.workdir == "/app" and image.config.env == ["A=1"]
    assert image.rootfs is not None and (image.rootfs / "app" / "x").read_text() == "1"
    (rootfs / "app" / "x").write_text("2")  # the store holds a copy
    assert (image.rootfs / "app" / "x").read_text() == "1"
    store.put("example.com/t/app:v1", {"Entrypoint": ["sh"], "WorkingDir": "/w"})
    again = store.get("example.com/t/app:v1")
    assert again is not None and again.config.entrypoint == ["sh"] and again.config.workdir == "/w"
    assert again.rootfs is not None and not (again.rootfs / "app").exists()
    assert store.list() == ["example.com/t/app:v1"]
    assert json.loads((again.rootfs.parent / "config.json").read_text())["name"] == "example.com/t/app:v1"


def test_put_missing_rootfs_raises_and_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    with pytest.raises(FileNotFoundError):
        store.put("a/b", ImageConfig(), tmp_path / "missing")
    assert store.list() == [] and store.get("a/b") is None


def test_providers_resolve_in_order_before_builtins(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    calls: list[str] = []

    def builder(ref: str) -> Image | None:
        calls.append(ref)
        return Image(ref, ImageConfig(entrypoint=["buildctl-daemonless.sh"]))

    store.register_provider("moby/buildkit:*", builder)
    store.register_provider("moby/*", lambda ref: None)
    store.register_provider("python:*", lambda ref: Image(ref, ImageConfig(cmd=["custom"])))
    image = store.get("moby/buildkit:v0.16.0-rootless")
    assert image is not None and image.config.entrypoint == ["buildctl-daemonless.sh"]
    assert calls == ["docker.io/moby/buildkit:v0.16.0-rootless"]
    assert store.get("moby/other") is None
    python = store.get("python:3.11")
    assert python is not None and python.config.cmd == ["custom"]


def test_config_from_oci_json() -> None:
    cfg = ImageConfig.from_json(
        {"config": {"Entrypoint": ["e"], "Cmd": ["c"], "Env": ["A=1"], "WorkingDir": "/w"}}
    )
    assert cfg == ImageConfig(["e"], ["c"], ["A=1"], "/w")


def test_pod_runs_a_put_image_with_its_layer_config_and_private_copy(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import time

    from kubernetes import client

    from kubesim.testing import start_inprocess

    rootfs = tmp_path / "rootfs"
    (rootfs / "kubesim-test-app").mkdir(parents=True)
    (rootfs / "kubesim-test-app" / "run.sh").write_text(
        '#!/bin/sh\necho "$GREETING from $(pwd) args:$*"\necho changed > /kubesim-test-app/state\n'
    )
    (rootfs / "kubesim-test-app" / "run.sh").chmod(0o755)
    server = start_inprocess(tmp_path_factory.mktemp("images-inproc"))
    try:
        kubelet = server.extra["cluster"].kubelet
        kubelet.images.put(
            "registry.example/team/app:v1",
            ImageConfig(
                entrypoint=["/kubesim-test-app/run.sh"],
                cmd=["default-arg"],
                env=["GREETING=hello"],
                workdir="/kubesim-test-app",
            ),
            rootfs,
        )
        api = server.api_client()
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "app"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "registry.example/team/app:v1"}],
                },
            },
        )
        deadline = time.monotonic() + 30
        while core.read_namespaced_pod("app", "default").status.phase != "Succeeded":
            assert time.monotonic() < deadline, "pod did not succeed"
            time.sleep(0.1)
        assert (
            core.read_namespaced_pod_log("app", "default")
            == "hello from /kubesim-test-app args:default-arg\n"
        )
        # The pod wrote into its own copy of the layer, not into the store.
        image = kubelet.images.get("registry.example/team/app:v1")
        assert image is not None and image.rootfs is not None
        assert not (image.rootfs / "kubesim-test-app" / "state").exists()
        assert not Path("/kubesim-test-app/state").exists()
        api.close()
    finally:
        server.stop()
