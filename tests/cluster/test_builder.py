"""kubesim's BuildKit stand-in: real arguments in, BuildKit's log lines and errors out, the image in
the store with the Dockerfile's config and the context's files where COPY put them."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubesim.images import ImageStore
from kubesim.images.buildkit import build, parse_dockerfile, register
from kubesim.images.utility import register as register_utility

ROOT = Path(__file__).resolve().parents[2]
REF = "registry.test:5000/nbd/team-context:0123456789abcdef0123456789abcdef"


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "images")
    register(s)
    register_utility(s)
    return s


def _context(tmp_path: Path, dockerfile: str | None, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    if dockerfile is not None:
        (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def test_parse_dockerfile_joins_continuations_and_keeps_flags() -> None:
    parsed = parse_dockerfile("# c\nFROM python:3.11 AS base\nRUN a \\\n  && b\n\nCOPY --chown=1:1 . /x\n")
    assert [(i.keyword, i.text, i.line, i.flags) for i in parsed] == [
        ("FROM", "python:3.11 AS base", 2, ()),
        ("RUN", "a  && b", 3, ()),
        ("COPY", ". /x", 6, ("--chown=1:1",)),
    ]


def test_builds_the_example_project(store: ImageStore, tmp_path: Path) -> None:
    ctx = tmp_path / "hello"
    shutil.copytree(ROOT / "examples" / "hello", ctx)
    out = io.StringIO()
    code = build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out)
    log = out.getvalue()
    assert code == 0, log
    lines = log.splitlines()
    assert lines[0] == "#1 [internal] load build definition from Dockerfile"
    assert "#2 [internal] load metadata for docker.io/library/python:3.11-slim" in lines
    assert any(line.startswith("#4 [1/6] FROM docker.io/library/python:3.11-slim") for line in lines)
    assert (
        '#5 [2/6] RUN --mount=type=cache,target=/root/.cache/pip pip install "jupyterlab>=4.2,<5" ipykernel'
        in lines
    )
    assert f"#11 naming to {REF} done" in lines
    image = store.get(REF)
    assert image is not None and image.rootfs is not None
    assert image.config.workdir == "/content"
    assert (image.rootfs / "content" / "hello.py").read_text() == (
        ROOT / "examples/hello/hello.py"
    ).read_text()
    assert (image.rootfs / "tmp" / "requirements.txt").is_file()
    # What the Dockerfile installs is in the image's own Python environment, first on its PATH.
    assert image.config.env_value("PATH").startswith("/kubesim-python/bin:")
    site = _site_packages(image.rootfs)
    for package in ("jupyterlab", "ipykernel", "humanize", "jupyter_server"):
        assert (site / package).is_dir(), f"{package} is not installed in the image"
    assert (image.rootfs / "kubesim-python" / "bin" / "jupyter-lab").is_file()


def _site_packages(rootfs: Path) -> Path:
    return next((rootfs / "kubesim-python" / "lib").glob("python3*/site-packages"))


def _build(store: ImageStore, ctx: Path, target: str = REF) -> list[str]:
    out = io.StringIO()
    code = build(context=ctx, dockerfile=ctx / "Dockerfile", target=target, store=store, out=out)
    assert code == 0, out.getvalue()
    return out.getvalue().splitlines()


def _cached(lines: list[str]) -> list[str]:
    """The steps a build log reports as cache hits, by their instruction."""
    names = {}
    for line in lines:
        vertex, _, rest = line.partition(" ")
        if rest.startswith("[") and "/" in rest.split("]")[0]:
            names[vertex] = rest.split("] ", 1)[1]
    return [names[line.split()[0]] for line in lines if line.endswith(" CACHED") and line.split()[0] in names]


def test_a_notebook_edit_reuses_every_layer_before_copy(tmp_path: Path) -> None:
    """BuildKit's cache: parent + instruction + digest of the files COPY brings in; times do not count."""
    store = ImageStore(tmp_path / "images", tmp_path / "layers")  # a cache of this test's own
    register(store)
    ctx = _context(
        tmp_path,
        (
            "FROM python:3.11-slim\n"
            "WORKDIR /content\n"
            "COPY requirements.txt /tmp/requirements.txt\n"
            "RUN --mount=type=cache,target=/cache echo ran >> /cache/runs && echo installed > /content/deps.txt\n"
            "COPY . /content\n"
        ),
        {"requirements.txt": "humanize\n", "nb.ipynb": "{}"},
    )
    first = _build(store, ctx)
    assert _cached(first) == []
    runs = next((store.layers.root / ".cache").glob("*/runs"))
    assert runs.read_text() == "ran\n"

    (ctx / "nb.ipynb").write_text('{"cells": []}')
    os.utime(ctx / "requirements.txt", (1, 1))  # touched, not changed
    second = _build(store, ctx)
    assert _cached(second) == [
        "WORKDIR /content",
        "COPY requirements.txt /tmp/requirements.txt",
        "RUN --mount=type=cache,target=/cache echo ran >> /cache/runs && echo installed > /content/deps.txt",
    ]
    assert runs.read_text() == "ran\n", "a cached RUN does not run"
    image = store.get(REF)
    assert image is not None and image.rootfs is not None
    assert (image.rootfs / "content" / "nb.ipynb").read_text() == '{"cells": []}'
    assert (image.rootfs / "content" / "deps.txt").read_text() == "installed\n"

    # A changed requirement invalidates its COPY and everything after it.
    (ctx / "requirements.txt").write_text("humanize>=4\n")
    third = _build(store, ctx)
    assert _cached(third) == ["WORKDIR /content"]
    assert runs.read_text() == "ran\nran\n"


def test_env_change_invalidates_the_run_after_it(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", tmp_path / "layers")
    register(store)
    ctx = _context(tmp_path, "FROM python:3.11-slim\nENV MODE=a\nWORKDIR /w\nRUN echo $MODE > mode\n")
    _build(store, ctx)
    (ctx / "Dockerfile").write_text("FROM python:3.11-slim\nENV MODE=b\nWORKDIR /w\nRUN echo $MODE > mode\n")
    lines = _build(store, ctx)
    assert _cached(lines) == ["WORKDIR /w"]
    image = store.get(REF)
    assert image is not None and image.rootfs is not None
    assert (image.rootfs / "w" / "mode").read_text() == "b\n"


def test_pip_installs_into_the_image_alone(store: ImageStore, tmp_path: Path) -> None:
    """A package one image installs is seen neither by another image nor by the host."""
    with_pkg = _context(
        tmp_path,
        (
            "FROM python:3.11-slim\nRUN --mount=type=cache,target=/root/.cache/pip pip install humanize\n"
            "WORKDIR /out\nRUN python3 -c 'import humanize; print(humanize.intword(12345678))' > check.txt\n"
        ),
    )
    lines = _build(store, with_pkg, "reg.test/a:1")
    assert any("Successfully installed humanize" in line for line in lines) or _cached(lines)
    a = store.get("reg.test/a:1")
    assert a is not None and a.rootfs is not None
    assert (a.rootfs / "out" / "check.txt").read_text() == "12.3 million\n"
    assert (_site_packages(a.rootfs) / "humanize").is_dir()

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "Dockerfile").write_text(
        "FROM python:3.11-slim\nWORKDIR /out\n"
        "RUN python3 -c 'import humanize' 2> err.txt; echo $? > code.txt\n"
    )
    _build(store, plain, "reg.test/b:1")
    b = store.get("reg.test/b:1")
    assert b is not None and b.rootfs is not None
    assert (b.rootfs / "out" / "code.txt").read_text() == "1\n"
    assert "No module named 'humanize'" in (b.rootfs / "out" / "err.txt").read_text()
    assert not (_site_packages(b.rootfs) / "humanize").exists()
    base = store.get("python:3.11-slim")
    assert (
        base is not None
        and base.rootfs is not None
        and not (_site_packages(base.rootfs) / "humanize").exists()
    )
    host = subprocess.run([sys.executable, "-c", "import humanize"], capture_output=True)
    assert host.returncode != 0, "the host's Python does not see what an image installed"


def test_run_cannot_change_the_hosts_system_directories(store: ImageStore, tmp_path: Path) -> None:
    marker = f"/etc/kubesim-build-test-{os.getpid()}"
    ctx = _context(tmp_path, f"FROM python:3.11-slim\nRUN echo x > {marker}\n")
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    log = out.getvalue()
    assert not os.path.exists(marker)
    assert "Read-only file system" in log
    assert "may write only under the image's own top-level paths" in log
    assert log.splitlines()[-1].startswith(
        f'error: failed to solve: process "/bin/sh -c echo x > {marker}" did not '
        "complete successfully: exit code: "
    )


def test_a_file_deleted_by_run_is_gone_from_the_image(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(
        tmp_path,
        (
            "FROM python:3.11-slim\nCOPY a.txt b.txt /content/\nRUN rm /content/a.txt && rm -r /kubesim-python/include\n"
        ),
        {"a.txt": "a", "b.txt": "b"},
    )
    _build(store, ctx)
    image = store.get(REF)
    assert image is not None and image.rootfs is not None
    assert sorted(os.listdir(image.rootfs / "content")) == ["b.txt"]
    assert not (image.rootfs / "kubesim-python" / "include").exists()
    base = store.get("python:3.11-slim")
    assert (
        base is not None and base.rootfs is not None and (base.rootfs / "kubesim-python" / "include").exists()
    )


def test_a_failing_run_shows_its_output(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM python:3.11-slim\nRUN echo about-to-fail && exit 3\n")
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    lines = out.getvalue().splitlines()
    assert any(line.startswith("#5 ") and line.endswith(" about-to-fail") for line in lines), lines
    assert lines[-1] == (
        'error: failed to solve: process "/bin/sh -c echo about-to-fail && exit 3" did not complete '
        "successfully: exit code: 3"
    )
    assert store.get(REF) is None


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--mount=type=secret,id=x", "RUN --mount=type=secret: only type=cache is supported by this builder"),
        ("--mount=type=cache,target=rel", "a cache mount needs an absolute target"),
        ("--frobnicate", "RUN --frobnicate: unknown flag"),
    ],
)
def test_run_flags_this_builder_cannot_honour_fail_the_build(
    store: ImageStore, tmp_path: Path, flag: str, message: str
) -> None:
    ctx = _context(tmp_path, f"FROM python:3.11-slim\nRUN {flag} true\n")
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    assert message in out.getvalue().splitlines()[-1]


def test_missing_dockerfile_fails_with_buildkits_message(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(tmp_path, None, {"a.py": "x"})
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        "error: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory"
    )
    assert store.get(REF) is None


def test_env_cmd_entrypoint_run_and_args(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(
        tmp_path,
        (
            'ARG BASE=python:3.12\nFROM ${BASE}\nARG GREETING=hi\nENV A=1 B="two words"\nENV C ${GREETING}-x\n'
            "WORKDIR /app\nRUN echo made > made.txt && echo visible\n"
            'COPY src/ lib/\nCOPY *.txt /notes/\nCMD ["python3", "-m", "http.server"]\n'
        ),
        {"src/m.py": "m", "one.txt": "1", "two.txt": "2"},
    )
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 0, (
        out.getvalue()
    )
    image = store.get(REF)
    assert image is not None and image.rootfs is not None
    assert image.config.cmd == ["python3", "-m", "http.server"]
    assert image.config.workdir == "/app"
    env = dict(e.split("=", 1) for e in image.config.env)
    assert (env["A"], env["B"], env["C"]) == ("1", "two words", "hi-x")
    assert (image.rootfs / "app" / "made.txt").read_text() == "made\n"
    assert (image.rootfs / "app" / "lib" / "m.py").read_text() == "m"
    assert sorted(os.listdir(image.rootfs / "notes")) == ["one.txt", "two.txt"]
    assert any(line.endswith(" visible") and line.startswith("#") for line in out.getvalue().splitlines())


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        (
            "FROM python:3.12\nRUN exit 3\n",
            'error: failed to solve: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3',
        ),
        (
            "FROM python:3.12\nCOPY missing.txt /x\n",
            'error: failed to solve: failed to compute cache key: failed to calculate checksum of ref: "/missing.txt": not found',
        ),
        (
            "FROM nosuch.example/img:1\n",
            "error: failed to solve: nosuch.example/img:1: failed to resolve source metadata",
        ),
        (
            "FROM python:3.12\nFLY away\n",
            "error: failed to solve: dockerfile parse error on line 2: unknown instruction: FLY",
        ),
        ("RUN x\n", "error: failed to solve: dockerfile parse error: no build stage in current context"),
    ],
)
def test_build_errors_use_buildkits_words(
    store: ImageStore, tmp_path: Path, dockerfile: str, message: str
) -> None:
    ctx = _context(tmp_path, dockerfile)
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    assert out.getvalue().splitlines()[-1].startswith(message), out.getvalue()
    assert store.get(REF) is None


def test_buildctl_daemonless_script_with_the_jobs_arguments(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM python:3.12\nWORKDIR /content\nCOPY . /content\n", {"nb.ipynb": "{}"})
    image = store.get("moby/buildkit:v0.23.2-rootless")
    assert image is not None
    env = dict(e.split("=", 1) for e in image.config.env)
    done = subprocess.run(
        [
            "buildctl-daemonless.sh",
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={ctx}",
            "--local",
            f"dockerfile={ctx}",
            "--output",
            f"type=image,name={REF},push=true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pushing manifest for {REF}@sha256:" in done.stdout
    built = store.get(REF)
    assert built is not None and built.rootfs is not None
    assert (built.rootfs / "content" / "nb.ipynb").read_text() == "{}"


def test_kaniko_fork_executor(store: ImageStore, tmp_path: Path) -> None:
    image = store.get("ghcr.io/osscontainertools/kaniko:latest")
    assert image is not None
    env = dict(e.split("=", 1) for e in image.config.env)
    ctx = _context(tmp_path, None)
    done = subprocess.run(
        [
            *image.config.entrypoint,
            f"--context=dir://{ctx}",
            f"--dockerfile={ctx}/Dockerfile",
            f"--destination={REF}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "please provide a valid path to a Dockerfile" in done.stdout
    (ctx / "Dockerfile").write_text("FROM python:3.12\nCOPY Dockerfile /d/\n")
    done = subprocess.run(
        [
            *image.config.entrypoint,
            f"--context=dir://{ctx}",
            f"--dockerfile={ctx}/Dockerfile",
            f"--destination={REF}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    assert f"Pushed {REF}" in done.stdout


def test_utility_image_names_resolve(store: ImageStore) -> None:
    assert store.get("nbd.dev/utility:1") is not None
    assert store.get("python:3.12-alpine") is not None


def test_without_root_a_run_fails_the_build_saying_why(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RUN needs mount namespaces: a non-root kubesim says so instead of running on the host."""
    ctx = _context(tmp_path, "FROM python:3.11-slim\nRUN echo hi\n")
    store.get("python:3.11-slim")  # the base layer exists already; only the RUN needs root
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    assert "RUN needs root and unshare(1) to mount the image's layers; run kubesim as root" in out.getvalue()
    assert store.get(REF) is None


CACHE = "registry.test:5000/nbd/cache:team"
CACHED_RUN = "FROM python:3.12\nWORKDIR /content\nRUN echo ran-step\nCOPY . /content\n"


@pytest.fixture
def pod_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    """A store and layers of this test's own, found by the builders as in a build pod."""
    from kubesim.images.buildkit import STORE_ENV
    from kubesim.images.layers import LAYER_DIR_ENV

    s = ImageStore(tmp_path / "images", tmp_path / "layers")
    register(s)
    monkeypatch.setenv(STORE_ENV, str(s.root))
    monkeypatch.setenv(LAYER_DIR_ENV, str(s.layers.root))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return s


def _buildctl(ctx: Path, *extra: str, target: str = REF) -> tuple[int, list[str]]:
    from kubesim.images.buildkit import buildctl_main

    out = io.StringIO()
    argv = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        f"context={ctx}",
        "--local",
        f"dockerfile={ctx}",
    ]
    rc = buildctl_main([*argv, "--output", f"type=image,name={target},push=true", *extra], out)
    return rc, out.getvalue().splitlines()


def _ran(lines: list[str]) -> bool:
    """Whether the RUN printed (BuildKit: `#N 0.012 ran-step`; kaniko: the bare line)."""
    import re

    return any(line == "ran-step" or re.fullmatch(r"#\d+ \d+\.\d{3} ran-step", line) for line in lines)


def _docker_config(tmp_path: Path, user: str, password: str) -> Path:
    import base64
    import json

    folder = tmp_path / f"docker-{user}-{password}"
    folder.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {"registry.test:5000": {"auth": auth}}}))
    return folder


CACHE_FLAGS = (
    "--export-cache",
    f"type=registry,ref={CACHE},mode=max",
    "--import-cache",
    f"type=registry,ref={CACHE}",
)


def test_a_build_pod_takes_hits_only_from_the_imported_registry_cache(
    pod_env: ImageStore, tmp_path: Path
) -> None:
    ctx = _context(tmp_path, CACHED_RUN, {"nb.ipynb": "{}"})
    rc, first = _buildctl(ctx, *CACHE_FLAGS)
    assert rc == 0, first
    assert f"#4 importing cache manifest from {CACHE}" in first and f"#4 ERROR: {CACHE}: not found" in first
    assert _ran(first) and not _cached(first)
    assert any(line.endswith(f"writing cache manifest {CACHE} done") for line in first)

    (ctx / "nb.ipynb").write_text('{"cells": []}')
    rc, second = _buildctl(ctx, *CACHE_FLAGS)
    assert rc == 0, second
    assert not _ran(second)
    assert _cached(second) == ["WORKDIR /content", "RUN echo ran-step"]

    # Without the import a build pod's fresh daemon has no cache, though the node has the layers;
    # --no-cache takes nothing either.
    for flags in (CACHE_FLAGS[:2], (*CACHE_FLAGS, "--no-cache")):
        rc, lines = _buildctl(ctx, *flags)
        assert rc == 0 and _ran(lines) and not _cached(lines), lines

    rc, lines = _buildctl(ctx, "--export-cache", "type=local,dest=/tmp/cache")
    assert rc == 1 and lines[-1].startswith("error: this builder only implements cache type=registry,ref=REF")


def test_a_registry_that_wants_credentials_refuses_the_push_and_the_cache(
    pod_env: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubesim.images.registry import RegistryPolicy

    ctx = _context(tmp_path, CACHED_RUN, {"nb.ipynb": "{}"})
    assert _buildctl(ctx, *CACHE_FLAGS)[0] == 0
    RegistryPolicy(pod_env.root).require("registry.test:5000/nbd", "pusher", "s3cret")
    uploads = "https://registry.test:5000/v2/nbd/team-context/blobs/uploads/"
    for config in (None, _docker_config(tmp_path, "pusher", "guess")):
        if config is not None:
            monkeypatch.setenv("DOCKER_CONFIG", str(config))
        rc, lines = _buildctl(ctx, *CACHE_FLAGS)
        assert rc == 1
        # The cache import is refused too, which only costs the hits.
        assert any(
            "ERROR: failed to authorize: unexpected status from GET request to" in line for line in lines
        )
        assert _ran(lines)
        assert (
            lines[-1]
            == f"error: failed to solve: failed to push {REF}: unexpected status from POST request to {uploads}: 401 Unauthorized"
        )
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path, "pusher", "s3cret")))
    rc, lines = _buildctl(ctx, *CACHE_FLAGS)
    assert rc == 0, lines
    assert _cached(lines) == ["WORKDIR /content", "RUN echo ran-step", "COPY . /content"]  # nothing changed

    # A cache elsewhere that wants credentials of its own: the image is pushed, the export fails the build.
    RegistryPolicy(pod_env.root).require("cache.test/nbd", "other", "x")
    rc, lines = _buildctl(ctx, "--export-cache", "type=registry,ref=cache.test/nbd/cache:team,mode=max")
    assert rc == 1
    assert lines[-1] == (
        "error: failed to solve: failed to push cache.test/nbd/cache:team: unexpected status from POST request "
        "to https://cache.test/v2/nbd/cache/blobs/uploads/: 401 Unauthorized"
    )


def test_kaniko_caches_run_layers_in_its_cache_repository(
    pod_env: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubesim.images.buildkit import kaniko_main
    from kubesim.images.registry import RegistryPolicy

    ctx = _context(tmp_path, CACHED_RUN, {"nb.ipynb": "{}"})
    repo = "registry.test:5000/nbd/cache/team"

    def kaniko(*extra: str) -> tuple[int, list[str]]:
        out = io.StringIO()
        argv = [f"--context=dir://{ctx}", f"--dockerfile={ctx}/Dockerfile", f"--destination={REF}", *extra]
        return kaniko_main(argv, out), out.getvalue().splitlines()

    rc, first = kaniko("--cache=true", f"--cache-repo={repo}")
    assert rc == 0 and _ran(first), first
    (ctx / "nb.ipynb").write_text('{"cells": []}')
    rc, second = kaniko("--cache=true", f"--cache-repo={repo}")
    assert rc == 0 and not _ran(second), second
    assert any(line.endswith("Using caching version of cmd: RUN echo ran-step") for line in second)
    rc, uncached = kaniko("--cache=false")
    assert rc == 0 and _ran(uncached)

    # A cache repository that wants credentials the image's registry does not: the cache push fails.
    RegistryPolicy(pod_env.root).require("cache.test/nbd", "other", "x")
    rc, refused = kaniko("--cache=true", "--cache-repo=cache.test/nbd/cache/team")
    assert rc == 1
    assert refused[-1] == (
        "error building image: failed to solve: failed to push to cache cache.test/nbd/cache/team: unexpected "
        "status from POST request to https://cache.test/v2/nbd/cache/team/blobs/uploads/: 401 Unauthorized"
    )
    RegistryPolicy(pod_env.root).require("registry.test:5000/nbd", "pusher", "s3cret")
    rc, refused = kaniko("--cache=true", f"--cache-repo={repo}")
    assert rc == 1 and "UNAUTHORIZED: authentication required" in refused[-1]
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path, "pusher", "s3cret")))
    assert kaniko("--cache=true", f"--cache-repo={repo}")[0] == 0
