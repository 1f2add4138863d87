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
    assert "#5 [2/6] RUN pip install --no-cache-dir jupyter_server jupyterlab" in lines
    assert any(line.startswith("#") and " DONE " in line for line in lines)
    assert f"#11 naming to {REF} done" in lines
    image = store.get(REF)
    assert image is not None and image.rootfs is not None
    assert image.config.workdir == "/content"
    assert (image.rootfs / "content" / "hello.py").read_text() == (ROOT / "examples/hello/hello.py").read_text()
    assert (image.rootfs / "tmp" / "requirements.txt").is_file()
    path = next(e for e in image.config.env if e.startswith("PATH="))
    assert path.startswith(f"PATH={os.path.dirname(sys.executable)}:")


def test_missing_dockerfile_fails_with_buildkits_message(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(tmp_path, None, {"a.py": "x"})
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 1
    assert out.getvalue().splitlines()[-1] == (
        "error: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory"
    )
    assert store.get(REF) is None


def test_env_cmd_entrypoint_run_and_args(store: ImageStore, tmp_path: Path) -> None:
    ctx = _context(tmp_path, (
        "ARG BASE=python:3.12\nFROM ${BASE}\nARG GREETING=hi\nENV A=1 B=\"two words\"\nENV C ${GREETING}-x\n"
        "WORKDIR /app\nRUN echo made > made.txt && echo visible\n"
        "COPY src/ lib/\nCOPY *.txt /notes/\nCMD [\"python3\", \"-m\", \"http.server\"]\n"
    ), {"src/m.py": "m", "one.txt": "1", "two.txt": "2"})
    out = io.StringIO()
    assert build(context=ctx, dockerfile=ctx / "Dockerfile", target=REF, store=store, out=out) == 0, out.getvalue()
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
        ("FROM python:3.12\nRUN exit 3\n",
         'error: failed to solve: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3'),
        ("FROM python:3.12\nCOPY missing.txt /x\n",
         'error: failed to solve: failed to compute cache key: failed to calculate checksum of ref: "/missing.txt": not found'),
        ("FROM nosuch.example/img:1\n", "error: failed to solve: nosuch.example/img:1: failed to resolve source metadata"),
        ("FROM python:3.12\nFLY away\n", "error: failed to solve: dockerfile parse error on line 2: unknown instruction: FLY"),
        ("RUN x\n", "error: failed to solve: dockerfile parse error: no build stage in current context"),
    ],
)
def test_build_errors_use_buildkits_words(store: ImageStore, tmp_path: Path, dockerfile: str, message: str) -> None:
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
        ["buildctl-daemonless.sh", "build", "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
         "--local", f"dockerfile={ctx}", "--output", f"type=image,name={REF},push=true"],
        env=env, capture_output=True, text=True, timeout=60,
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
        [*image.config.entrypoint, f"--context=dir://{ctx}", f"--dockerfile={ctx}/Dockerfile", f"--destination={REF}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "please provide a valid path to a Dockerfile" in done.stdout
    (ctx / "Dockerfile").write_text("FROM python:3.12\nCOPY Dockerfile /d/\n")
    done = subprocess.run(
        [*image.config.entrypoint, f"--context=dir://{ctx}", f"--dockerfile={ctx}/Dockerfile", f"--destination={REF}"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout
    assert f"Pushed {REF}" in done.stdout


def test_utility_image_names_resolve(store: ImageStore) -> None:
    assert store.get("nbd.dev/utility:1") is not None
    assert store.get("python:3.12-alpine") is not None
