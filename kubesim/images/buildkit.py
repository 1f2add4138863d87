"""A builder image for kubesim that behaves like BuildKit (and a kaniko fork) at its edges.

Registered for `moby/buildkit:*` and the kaniko executors' names. Its container reads the real
arguments (`buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=DIR --local
dockerfile=DIR --output type=image,name=REF,push=true`, or kaniko's `--context=dir://DIR
--dockerfile=FILE --destination=REF`), prints BuildKit's plain progress lines (kaniko's log lines for
the kaniko names), builds, and "pushes" by storing the result in kubesim's image store under REF, so
a later pod with that image starts from it.

What a build does here (kubesim/images/solve.py has the details):
* FROM resolves the base through the image store; `python:*` is a layer with a Python environment
  of its own at `/kubesim-python` (kubesim/images/python.py).
* Every WORKDIR, COPY/ADD and RUN makes a layer keyed like BuildKit's cache (parent, instruction,
  digest of the files brought in); an existing layer is reused and logged `CACHED`.
* RUN runs for real over the layers so far in a private mount namespace (`pip install` included,
  with the host's network), and fails the build with its output on a non-zero exit.
* `RUN --mount=type=cache,target=...` is a directory shared by every build on the node.
* ENV, ARG (with `$VAR`/`${VAR}` substitution), CMD, ENTRYPOINT, USER, EXPOSE, LABEL are recorded
  into the image config (WORKDIR/ENV/CMD/ENTRYPOINT are what the kubelet uses).
* `COPY --from` (multi-stage) and remote ADD sources fail the build: this builder does not do them.

Errors use BuildKit's wording, e.g. a missing Dockerfile prints
`error: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory`
and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import TextIO

from kubesim.images.dockerfile import Instruction, pairs, parse_dockerfile, substitute
from kubesim.images.layers import LAYER_DIR_ENV, tree_bytes
from kubesim.images.names import InvalidReference, normalize
from kubesim.images.registry import (
    CacheManifests,
    Presented,
    RegistryPolicy,
    docker_config_credentials,
    push_refusal,
)
from kubesim.images.rootfs import HOST_NETNS_ENV
from kubesim.images.solve import FS_STEPS, BuildError, Solver, State
from kubesim.images.store import Image, ImageConfig, ImageStore

__all__ = [
    "Instruction",
    "BuildError",
    "parse_dockerfile",
    "build",
    "buildctl_main",
    "kaniko_main",
    "register",
    "BUILDKIT_PATTERNS",
    "KANIKO_PATTERNS",
]

BUILDKIT_PATTERNS = ("moby/buildkit:*",)
KANIKO_PATTERNS = (
    "gcr.io/kaniko-project/executor:*",
    "ghcr.io/osscontainertools/kaniko:*",
    "martizih/kaniko:*",
    "chainguard/kaniko:*",
)
STORE_ENV = "KUBESIM_IMAGE_STORE"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size}{unit}" if unit == "B" else f"{size:.2f}{unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size}B"


class _Progress:
    """BuildKit's plain progress output (`#N name`, `#N DONE 0.1s`), or kaniko's log lines."""

    def __init__(self, out: TextIO, style: str) -> None:
        self.out = out
        self.style = style
        self.vertex = 0
        self.started = 0.0

    def step(self, name: str) -> int:
        self.vertex += 1
        self.started = time.monotonic()
        if self.style == "buildkit":
            self.write(f"#{self.vertex} {name}")
        else:
            self.write(f"INFO[{self._clock()}] {name}")
        return self.vertex

    def line(self, text: str) -> None:
        if self.style == "buildkit":
            elapsed = time.monotonic() - self.started
            self.write(f"#{self.vertex} {elapsed:.3f} {text}")
        else:
            self.write(text)

    def note(self, text: str) -> None:
        if self.style == "buildkit":
            self.write(f"#{self.vertex} {text}")
        else:
            self.write(f"INFO[{self._clock()}] {text}")

    def done(self, cached: bool = False) -> None:
        if self.style == "buildkit":
            if cached:
                self.write(f"#{self.vertex} CACHED")
            else:
                self.write(f"#{self.vertex} DONE {time.monotonic() - self.started:.1f}s")
            self.write("")

    def error(self, message: str) -> None:
        if self.style == "buildkit":
            self.write(f"#{self.vertex} ERROR: {message}")
        else:
            self.write(f"error building image: {message}")

    def _clock(self) -> str:
        return f"{int(time.monotonic() - _START):04d}"

    def write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


_START = time.monotonic()


def build(
    *,
    context: Path,
    dockerfile: Path,
    target: str,
    store: ImageStore,
    out: TextIO,
    style: str = "buildkit",
    push: bool = True,
    cache: BuildCache | None = None,
    credentials: Presented | None = None,
) -> int:
    """Builds `dockerfile` with `context` into image `target` in `store`; returns an exit code.

    `cache` None is a long-lived daemon's local cache (every layer of the node's store is a hit);
    a `BuildCache` is a build pod's fresh daemon: hits come only from the imported caches. Pushes
    of the image and of an exported cache present `credentials` to the registry policy.
    """
    progress = _Progress(out, style)
    policy = RegistryPolicy(store.root)
    presented = credentials or {}
    manifests = CacheManifests(store.layers.root)
    if style != "buildkit" and push:
        # kaniko checks that it may push before it builds anything.
        refused = policy.check(target, presented)
        if refused is not None:
            out.write(
                "error checking push permissions -- make sure you entered the correct tag name, and that "
                f'you are authenticated correctly, and try again: checking push permission for "{target}": '
                f"POST https://{refused.host}/v2/{refused.repository}/blobs/uploads/: UNAUTHORIZED: "
                "authentication required\n"
            )
            out.flush()
            return 1
    name = dockerfile.name
    if style == "buildkit":
        progress.step("[internal] load build definition from " + name)
    if not dockerfile.is_file():
        if style == "buildkit":
            progress.note("transferring dockerfile: 2B done")
            progress.done()
            out.write(
                f"error: failed to solve: failed to read dockerfile: open {name}: no such file or directory\n"
            )
        else:
            out.write(
                "Error: error resolving dockerfile path: please provide a valid path to a Dockerfile "
                "within the build context with --dockerfile\n"
            )
        out.flush()
        return 1
    source = dockerfile.read_text(errors="replace")
    if style == "buildkit":
        progress.note(f"transferring dockerfile: {len(source.encode())}B done")
        progress.done()
    try:
        instructions = parse_dockerfile(source)
        if not instructions or instructions[0].keyword not in ("FROM", "ARG"):
            raise BuildError("failed to solve: dockerfile parse error: no build stage in current context")
        froms = [i for i in instructions if i.keyword == "FROM"]
        if not froms:
            raise BuildError("failed to solve: dockerfile parse error: no build stage in current context")
        if len(froms) > 1:
            raise BuildError("failed to solve: multi-stage builds are not supported by this builder")
        global_args: dict[str, str] = {}
        for instruction in instructions:
            if instruction.keyword != "ARG":
                break
            for key, value in pairs(instruction.text):
                global_args[key] = value
        base_name = substitute(froms[0].text.split()[0], global_args)
        if style == "buildkit":
            progress.step(f"[internal] load metadata for {_normal(base_name)}")
            progress.done()
            progress.step("[internal] load .dockerignore")
            progress.note("transferring context: 2B done")
            progress.done()
        else:
            progress.step(f"Retrieving image manifest {base_name}")
        solver = Solver(store, context, progress.line, progress.note)
        if cache is not None:
            solver.allowed = set()
            if style != "buildkit":
                # kaniko caches RUN layers only (COPY needs --cache-copy-layers).
                solver.cached_keywords = ("RUN",)
            for ref in cache.imports:
                if style == "buildkit":
                    progress.step(f"importing cache manifest from {ref}")
                refused = policy.check(ref, presented)
                keys = None if refused is not None else manifests.read(ref)
                if style == "buildkit":
                    if refused is not None:
                        progress.error(f"failed to authorize: {push_refusal(refused).replace('POST', 'GET')}")
                    elif keys is None:
                        progress.error(f"{ref}: not found")
                    progress.done()
                elif refused is None and keys is not None:
                    progress.note(f"Checking for cached layers in {ref}: {len(keys)} found")
                solver.allowed |= keys or set()
        steps = instructions[instructions.index(froms[0]) :]
        total = sum(1 for i in steps if i.keyword in FS_STEPS)
        index = 0
        state: State | None = None
        context_loaded = False
        for instruction in steps:
            keyword = instruction.keyword
            counted = keyword in FS_STEPS
            if counted:
                index += 1
            if keyword == "FROM":
                if style == "buildkit":
                    progress.step(f"[{index}/{total}] FROM {_normal(base_name)}")
                else:
                    progress.note(f"Building stage '{base_name}'")
                state = solver.base(base_name)
                state.variables.update(global_args)
                progress.done(cached=False)
                continue
            assert state is not None
            shown = substitute(instruction.display, state.variables)
            if keyword in ("COPY", "ADD") and not context_loaded and style == "buildkit":
                progress.step("[internal] load build context")
                progress.note(f"transferring context: {_human(tree_bytes(context))} done")
                progress.done()
                context_loaded = True
            try:
                layer_key = solver.key(state, instruction)
                if counted and style == "buildkit":
                    progress.step(f"[{index}/{total}] {shown}")
                cached = solver.is_cached(layer_key, keyword)
                if counted and style != "buildkit":
                    progress.note(f"Using caching version of cmd: {shown}" if cached else shown)
                solver.apply(state, instruction, layer_key)
            except BuildError as e:
                progress.error(str(e))
                raise
            if counted:
                progress.done(cached=cached)
        assert state is not None
        config = state.config
        digest = sha256(
            json.dumps({**config.to_json(), "layers": state.layers}, sort_keys=True).encode()
        ).hexdigest()
        if style == "buildkit":
            progress.step("exporting to image")
            progress.note("exporting layers done")
            progress.note(f"writing image sha256:{digest} done")
            progress.note(f"naming to {target} done")
            if push:
                refused = policy.check(target, presented)
                if refused is not None:
                    progress.error(f"failed to push {target}: {push_refusal(refused)}")
                    raise BuildError(f"failed to push {target}: {push_refusal(refused)}")
                store.put_layers(target, config, state.layers)
                progress.note("pushing layers done")
                progress.note(f"pushing manifest for {target}@sha256:{digest} done")
            else:
                store.put_layers(target, config, state.layers)
            progress.done()
            if cache is not None and cache.export:
                _export_cache(progress, policy, manifests, cache, presented, solver.produced)
        else:
            if cache is not None and cache.export:
                # kaniko pushes each RUN layer to the cache repository as it is made.
                refused = policy.check(cache.export, presented)
                if refused is not None:
                    raise BuildError(f"failed to push to cache {cache.export}: {push_refusal(refused)}")
                progress.note(f"Pushing layers to cache now: {cache.export}")
                manifests.write(cache.export, solver.produced, merge=True)
            store.put_layers(target, config, state.layers)
            progress.note(f"Pushing image to {target}")
            progress.note(f"Pushed {target}")
    except BuildError as e:
        message = str(e)
        if not message.startswith("failed to solve"):
            message = "failed to solve: " + message
        out.write(f"error: {message}\n" if style == "buildkit" else f"error building image: {message}\n")
        out.flush()
        return 1
    return 0


@dataclass(frozen=True)
class BuildCache:
    """A build pod's cache: the refs it imports and the one it exports to (None: no export)."""

    imports: tuple[str, ...] = ()
    export: str | None = None
    mode: str = "min"


def _export_cache(
    progress: _Progress,
    policy: RegistryPolicy,
    manifests: CacheManifests,
    cache: BuildCache,
    presented: Presented,
    produced: list[str],
) -> None:
    assert cache.export is not None
    progress.step("exporting cache to registry")
    refused = policy.check(cache.export, presented)
    if refused is not None:
        progress.error(f"failed to push {cache.export}: {push_refusal(refused)}")
        raise BuildError(f"failed to push {cache.export}: {push_refusal(refused)}")
    # A single stage's image holds every layer it made, so mode=min and mode=max export the same.
    progress.note("preparing build cache for export done")
    manifests.write(cache.export, produced)
    progress.note(f"writing cache manifest {cache.export} done")
    progress.done()


def _cache_option(spec: str) -> dict[str, str]:
    """`type=registry,ref=R,mode=max` as a dict; a bare `R` is `type=registry,ref=R`."""
    if "=" not in spec:
        return {"type": "registry", "ref": spec}
    return _parse_output(spec)


def _normal(name: str) -> str:
    try:
        return normalize(name)
    except InvalidReference:
        return name


def _store_from_env() -> ImageStore:
    root = os.environ.get(STORE_ENV)
    if not root:
        raise BuildError(f"{STORE_ENV} is not set: this builder only runs inside kubesim")
    layers = os.environ.get(LAYER_DIR_ENV)
    return ImageStore(Path(root), Path(layers) if layers else None)


def _parse_output(spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def buildctl_main(argv: list[str], out: TextIO | None = None) -> int:
    """`buildctl-daemonless.sh build ...` / `buildctl build ...` with the options nbd uses."""
    out = out or sys.stdout
    args = list(argv)
    if not args or args[0] != "build":
        out.write('error: this buildctl only implements "build"\n')
        return 1
    locals_: dict[str, str] = {}
    outputs: list[str] = []
    frontend = ""
    opts: dict[str, str] = {}
    exports: list[dict[str, str]] = []
    imports: list[dict[str, str]] = []
    no_cache = False
    i = 1
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if i + 1 < len(args) else ""
        if "=" in arg and arg.startswith("--"):
            arg, value = arg.split("=", 1)
            i -= 1
        if arg == "--frontend":
            frontend = value
        elif arg == "--local":
            key, _, path = value.partition("=")
            locals_[key] = path
        elif arg in ("--output", "-o"):
            outputs.append(value)
        elif arg == "--opt":
            key, _, val = value.partition("=")
            opts[key] = val
        elif arg == "--export-cache":
            exports.append(_cache_option(value))
        elif arg == "--import-cache":
            imports.append(_cache_option(value))
        elif arg == "--no-cache":
            no_cache = True
            i -= 1
        elif arg in (
            "--progress",
            "--secret",
            "--ssh",
            "--metadata-file",
        ):
            pass
        else:
            out.write(f"error: unknown flag: {arg}\n")
            return 1
        i += 2
    if frontend != "dockerfile.v0":
        out.write(f"error: failed to solve: frontend {frontend or '(none)'} not supported by this builder\n")
        return 1
    if "context" not in locals_ or "dockerfile" not in locals_:
        out.write("error: failed to solve: --local context=DIR and --local dockerfile=DIR are required\n")
        return 1
    target = ""
    push = False
    for spec in outputs:
        output = _parse_output(spec)
        if output.get("type") in ("image", "registry"):
            target = output.get("name", "")
            push = output.get("push", "false") == "true" or output.get("type") == "registry"
    if not target:
        out.write("error: failed to solve: an --output type=image,name=REF is required\n")
        return 1
    try:
        store = _store_from_env()
    except BuildError as e:
        out.write(f"error: {e}\n")
        return 1
    for option in exports + imports:
        if option.get("type") != "registry" or not option.get("ref"):
            out.write(f"error: this builder only implements cache type=registry,ref=REF, not {option}\n")
            return 1
    dockerfile = Path(locals_["dockerfile"]) / opts.get("filename", "Dockerfile")
    # buildctl-daemonless.sh starts a daemon of its own in the pod, whose state is gone after the
    # build: only an imported cache gives hits (--no-cache: none at all).
    cache = BuildCache(
        imports=() if no_cache else tuple(o["ref"] for o in imports),
        export=exports[-1]["ref"] if exports else None,
        mode=exports[-1].get("mode", "min") if exports else "min",
    )
    return build(
        context=Path(locals_["context"]),
        dockerfile=dockerfile,
        target=target,
        store=store,
        out=out,
        push=push,
        cache=cache,
        credentials=docker_config_credentials(os.environ),
    )


def kaniko_main(argv: list[str], out: TextIO | None = None) -> int:
    """The kaniko executor's `--context=dir://DIR --dockerfile=FILE --destination=REF`."""
    out = out or sys.stdout
    context = dockerfile = destination = cache_repo = ""
    use_cache = False
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("--context", "-c"):
            context = value.removeprefix("dir://")
        elif key in ("--dockerfile", "-f"):
            dockerfile = value
        elif key in ("--destination", "-d"):
            destination = value
        elif key == "--cache":
            use_cache = value in ("", "true")
        elif key == "--cache-repo":
            cache_repo = value
    if use_cache and not cache_repo:
        # kaniko infers <destination repository>/cache; nbd always names the repository.
        cache_repo = destination.rsplit(":", 1)[0] + "/cache"
    if not context or not destination:
        out.write("Error: --context=dir://DIR and --destination=REF are required\n")
        return 1
    path = Path(dockerfile or "Dockerfile")
    if not path.is_absolute():
        path = Path(context) / path
    try:
        store = _store_from_env()
    except BuildError as e:
        out.write(f"Error: {e}\n")
        return 1
    # The executor runs in a fresh pod: only the cache repository gives hits (or nothing, without --cache).
    cache = BuildCache(imports=(cache_repo,), export=cache_repo) if use_cache else BuildCache()
    return build(
        context=Path(context),
        dockerfile=path,
        target=destination,
        store=store,
        out=out,
        style="kaniko",
        cache=cache,
        credentials=docker_config_credentials(os.environ, home="/kaniko"),
    )


_SCRIPT = """#!{python}
# kubesim's stand-in for {name}: see kubesim/images/buildkit.py.
import sys
from kubesim.images.buildkit import {function}
sys.exit({function}({argv}))
"""


def _tools(store: ImageStore) -> Path:
    """Writes the builder's executables into a folder of the node, idempotently."""
    folder = store.root / ".kubesim-builders" / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {
        "buildctl-daemonless.sh": ("buildctl_main", "sys.argv[1:]"),
        "buildctl": ("buildctl_main", "sys.argv[1:]"),
        "kaniko-executor": ("kaniko_main", "sys.argv[1:]"),
    }
    for name, (function, argv) in scripts.items():
        path = folder / name
        text = _SCRIPT.format(python=sys.executable, name=name, function=function, argv=argv)
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
    os.chmod(store.root / ".kubesim-builders", 0o755)
    return folder


def register(store: ImageStore) -> None:
    """Registers the BuildKit and kaniko builder images into `store`."""
    tools = _tools(store)
    # RUN steps join kubesim's own network namespace: a build pod has only loopback, while
    # BuildKit's RUN reaches the network (pip install) by default.
    env = [
        f"PATH={tools}:{SYSTEM_PATH}",
        f"{STORE_ENV}={store.root}",
        f"{LAYER_DIR_ENV}={store.layers.root}",
        f"{HOST_NETNS_ENV}=/proc/{os.getpid()}/ns/net",
    ]

    def buildkit(ref: str) -> Image:
        # The rootless image's entrypoint is rootlesskit; nbd's Job sets command explicitly. It
        # runs as `user` (1000:1000) and is root in the user namespace rootlesskit makes.
        config = ImageConfig(
            entrypoint=["buildctl-daemonless.sh"],
            env=env,
            workdir="/home/user",
            user="1000:1000",
            userns_root=True,
        )
        return Image(ref, config, None)

    def kaniko(ref: str) -> Image:
        return Image(
            ref, ImageConfig(entrypoint=[str(tools / "kaniko-executor")], env=env, workdir="/workspace"), None
        )

    for pattern in BUILDKIT_PATTERNS:
        store.register_provider(pattern, buildkit)
    for pattern in KANIKO_PATTERNS:
        store.register_provider(pattern, kaniko)
