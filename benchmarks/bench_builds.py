"""Rebuild after a notebook edit, beside the first build, with kubesim's BuildKit stand-in.

What a build pod does: a fresh builder that imports the namespace's layer cache from the registry
and exports it again (`--import-cache`/`--export-cache type=registry,...,mode=max`). The first
build of `examples/hello` (in quick mode: a Dockerfile whose only install is `humanize`) runs every
step in an empty layer store; then `hello.ipynb` changes and the same Dockerfile builds again.
Reported beside each other with the rebuild's CACHED steps; a third build without the import
shows what a build pod without the registry cache would pay.

Target: the rebuild takes at most 0.2x the first build (only `COPY . /content` and the export run).
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure

NAME = "builds"

ROOT = Path(__file__).resolve().parents[1]
TARGET = "registry.bench:5000/nbd/bench-context:0123456789abcdef0123456789abcdef"
CACHE = "registry.bench:5000/nbd/cache:bench"
QUICK_DOCKERFILE = (
    "FROM python:3.11-slim\n"
    "WORKDIR /content\n"
    "COPY requirements.txt /tmp/requirements.txt\n"
    "RUN --mount=type=cache,target=/root/.cache/pip pip install -r /tmp/requirements.txt\n"
    "COPY . /content\n"
)


def _build(context: Path, layers: Path, images: Path, *, import_cache: bool) -> tuple[float, list[str]]:
    from kubesim.images import ImageStore
    from kubesim.images.buildkit import BuildCache, build, register

    store = ImageStore(images, layers)
    register(store)
    out = io.StringIO()
    cache = BuildCache(imports=(CACHE,) if import_cache else (), export=CACHE, mode="max")
    started = time.perf_counter()
    rc = build(
        context=context, dockerfile=context / "Dockerfile", target=TARGET, store=store, out=out, cache=cache
    )
    elapsed = time.perf_counter() - started
    lines = out.getvalue().splitlines()
    if rc != 0:
        raise RuntimeError("the benchmark build failed:\n" + "\n".join(lines[-20:]))
    return elapsed, lines


def run(quick: bool = False) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="nbd-bench-builds-") as tmp:
        root = Path(tmp)
        context = root / "hello"
        shutil.copytree(ROOT / "examples" / "hello", context)
        if quick:
            (context / "Dockerfile").write_text(QUICK_DOCKERFILE)
        layers, images = root / "layers", root / "images"
        first, _ = _build(context, layers, images, import_cache=True)
        notebook = context / "hello.ipynb"
        notebook.write_text(notebook.read_text().replace("Hello", "Hello again", 1) + "\n")
        rebuild, lines = _build(context, layers, images, import_cache=True)
        cached = sum(1 for line in lines if line.endswith(" CACHED"))
        steps = sum(1 for line in lines if line.split(" ", 1)[-1].startswith("[") and "/" in line.split()[1])
        uncached, _ = _build(context, layers, images, import_cache=False)
    what = "examples/hello" if not quick else "a humanize-only Dockerfile"
    return [
        Figure(
            name=f"rebuild after a notebook edit ({cached} of {steps} steps CACHED)",
            value=rebuild,
            unit="s",
            baseline=f"first build of {what}",
            baseline_value=first,
            target="<= 0.2x the first build",
            met=rebuild <= 0.2 * first,
        ),
        Figure(
            name="the same rebuild without --import-cache (a build pod with no registry cache)",
            value=uncached,
            unit="s",
            baseline=f"first build of {what}",
            baseline_value=first,
        ),
    ]
