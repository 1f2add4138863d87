"""A builder image for kubesim that behaves like BuildKit (and a kaniko fork) at its edges.

Registered for `moby/buildkit:*` and the kaniko executors' names. Its container reads the real
arguments (`buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=DIR --local
dockerfile=DIR --output type=image,name=REF,push=true`, or kaniko's `--context=dir://DIR
--dockerfile=FILE --destination=REF`), prints BuildKit's plain progress lines (kaniko's log lines for
the kaniko names), builds, and "pushes" by storing the result in kubesim's image store under REF, so
a later pod with that image starts from it.

What a build does here:
* FROM resolves the base through the image store (built-ins like `python:*` have an empty rootfs:
  their commands are this machine's userland); the base's rootfs and config are the start.
* WORKDIR, ENV, ARG (with `$VAR`/`${VAR}` substitution), CMD, ENTRYPOINT, USER, EXPOSE, LABEL are
  recorded into the image config (WORKDIR/ENV/CMD/ENTRYPOINT are what the kubelet uses).
* COPY/ADD copy files of the context into the rootfs where the instruction puts them (sources may
  be globs; `.` is the whole context). `COPY --from` and remote ADD sources fail the build.
* RUN `pip install ...` is a logged no-op: the host's Python packages (Jupyter included) stand in
  for what it would install. Any other RUN runs for real with `/bin/sh -c`, its working directory
  inside the rootfs being built (relative paths land in the image; absolute paths are the host's),
  and fails the build on a non-zero exit like BuildKit does.
* The image's PATH gets this interpreter's bin folder first, so `python3` and `jupyter` resolve to
  the host's in the notebook pod.

Errors use BuildKit's wording, e.g. a missing Dockerfile prints
`error: failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory`
and exits 1.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import TextIO

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
_PIP = re.compile(r"^\s*(python3?\s+-m\s+)?pip3?\s+install\b")


class BuildError(Exception):
    """A failed build; the message is what BuildKit would print after `error: `."""


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case), raw argument text and flags."""

    keyword: str
    text: str
    line: int
    flags: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        flags = "".join(f"{f} " for f in self.flags)
        return f"{self.keyword} {flags}{self.text}".strip()


def parse_dockerfile(source: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(source.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if not line:
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        flags: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        out.append(Instruction(keyword.upper(), rest, start, tuple(flags)))
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip(), start))
    return out


def _json_or_shell(text: str) -> list[str]:
    """Exec form (a JSON array) or shell form (run by /bin/sh -c)."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text]


def _substitute(text: str, variables: dict[str, str]) -> str:
    """`$NAME`, `${NAME}` and `${NAME:-default}` (undefined: empty, as in Dockerfiles)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            return variables.get(m.group(3), "")
        value = variables.get(m.group(1), "")
        if not value and m.group(2) is not None:
            return m.group(2)
        return value

    return re.sub(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))", sub, text)


def _pairs(text: str) -> list[tuple[str, str]]:
    """ENV/ARG/LABEL arguments: `K=V K2="v 2"` or the legacy `K V`."""
    words = shlex.split(text, posix=True)
    if words and "=" not in words[0]:
        return [(words[0], text.split(None, 1)[1].strip() if len(words) > 1 else "")]
    out = []
    for word in words:
        key, _, value = word.partition("=")
        out.append((key, value))
    return out


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size}{unit}" if unit == "B" else f"{size:.2f}{unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size}B"


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class _State:
    config: ImageConfig
    rootfs: Path
    variables: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


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


def _copy_into(state: _State, context: Path, instruction: Instruction, progress: _Progress) -> None:
    for flag in instruction.flags:
        if flag.startswith("--from"):
            raise BuildError(f"{instruction.keyword} {flag}: multi-stage builds are not supported by this builder")
    args = _json_or_shell(instruction.text)
    if args[:2] == ["/bin/sh", "-c"]:
        args = shlex.split(_substitute(instruction.text, state.variables))
    if len(args) < 2:
        raise BuildError(f"dockerfile parse error on line {instruction.line}: "
                         f"{instruction.keyword} requires at least two arguments")
    *sources, dest = args
    workdir = state.config.workdir or "/"
    dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
    target = state.rootfs / dest_abs.lstrip("/")
    dest_is_dir = dest.endswith("/") or len(sources) > 1 or dest in (".", "./")
    root = context.resolve()
    copied = 0
    for source in sources:
        if re.match(r"^[a-z]+://", source):
            raise BuildError(f"{instruction.keyword} {source}: remote sources are not supported by this builder")
        pattern = str(root / source.lstrip("/"))
        matches = sorted(glob.glob(pattern)) if any(c in source for c in "*?[") else [pattern]
        for match in matches:
            path = Path(match)
            resolved = path.resolve()
            if not (resolved == root or str(resolved).startswith(str(root) + os.sep)):
                raise BuildError(f"failed to compute cache key: {source}: path escapes the build context")
            if not path.exists():
                rel = source.lstrip("/")
                raise BuildError(
                    f'failed to compute cache key: failed to calculate checksum of ref: "/{rel}": not found'
                )
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
                copied += sum(len(files) for _d, _s, files in os.walk(path))
            else:
                into = target / path.name if (dest_is_dir or target.is_dir()) else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
                copied += 1
    progress.note(f"copied {copied} file(s) to {dest_abs}")


def _run(state: _State, instruction: Instruction, progress: _Progress) -> None:
    command = _json_or_shell(instruction.text)
    shown = " ".join(command[2:]) if command[:2] == ["/bin/sh", "-c"] else json.dumps(command)
    if _PIP.match(" ".join(command[2:]) if command[:2] == ["/bin/sh", "-c"] else " ".join(command)):
        progress.line("kubesim: pip install skipped: the host's Python packages stand in for it")
        return
    workdir = state.config.workdir or "/"
    cwd = state.rootfs / workdir.lstrip("/")
    cwd.mkdir(parents=True, exist_ok=True)
    env = {"PATH": SYSTEM_PATH, "HOME": str(state.rootfs / "root")}
    for item in state.config.env:
        key, _, value = item.partition("=")
        env[key] = value
    env.update({k: v for k, v in state.variables.items() if k not in env})
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
    except OSError as e:
        raise BuildError(f'process "{shown}" did not complete successfully: {e}') from e
    assert proc.stdout is not None
    for text in proc.stdout:
        progress.line(text.rstrip("\n"))
    code = proc.wait()
    if code != 0:
        quoted = " ".join(command)
        raise BuildError(f'process "{quoted}" did not complete successfully: exit code: {code}')


def _base(store: ImageStore, name: str, scratch: Path) -> _State:
    rootfs = scratch / "rootfs"
    if name == "scratch":
        rootfs.mkdir()
        return _State(ImageConfig(), rootfs)
    image = store.get(name)
    if image is None:
        raise BuildError(
            f"failed to solve: {name}: failed to resolve source metadata for {name}: "
            "pull access denied, repository does not exist or may require authorization"
        )
    if image.rootfs is not None and image.rootfs.is_dir():
        shutil.copytree(image.rootfs, rootfs, symlinks=True)
    else:
        rootfs.mkdir()
    return _State(replace(image.config), rootfs)


def _with_path(env: list[str]) -> list[str]:
    """The image env with this interpreter's bin folder first on PATH (the host's python/jupyter)."""
    bindir = os.path.dirname(sys.executable)
    out = [e for e in env if not e.startswith("PATH=")]
    current = next((e[5:] for e in env if e.startswith("PATH=")), SYSTEM_PATH)
    parts = [p for p in current.split(":") if p and p != bindir]
    return [f"PATH={bindir}:{':'.join(parts)}", *out]


def build(
    *,
    context: Path,
    dockerfile: Path,
    target: str,
    store: ImageStore,
    out: TextIO,
    style: str = "buildkit",
    push: bool = True,
) -> int:
    """Builds `dockerfile` with `context` into image `target` in `store`; returns an exit code."""
    progress = _Progress(out, style)
    name = dockerfile.name
    if style == "buildkit":
        progress.step("[internal] load build definition from " + name)
    if not dockerfile.is_file():
        if style == "buildkit":
            progress.note("transferring dockerfile: 2B done")
            progress.done()
            out.write(f"error: failed to solve: failed to read dockerfile: open {name}: no such file or directory\n")
        else:
            out.write("Error: error resolving dockerfile path: please provide a valid path to a Dockerfile "
                      "within the build context with --dockerfile\n")
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
        with tempfile.TemporaryDirectory(prefix="kubesim-build-") as scratch_dir:
            scratch = Path(scratch_dir)
            global_args: dict[str, str] = {}
            for instruction in instructions:
                if instruction.keyword != "ARG":
                    break
                for key, value in _pairs(instruction.text):
                    global_args[key] = value
            base_name = _substitute(froms[0].text.split()[0], global_args)
            if style == "buildkit":
                progress.step(f"[internal] load metadata for {_normal(base_name)}")
                progress.done()
                progress.step("[internal] load .dockerignore")
                progress.note("transferring context: 2B done")
                progress.done()
            else:
                progress.step(f"Retrieving image manifest {base_name}")
            steps = instructions[instructions.index(froms[0]):]
            total = sum(1 for i in steps if i.keyword in ("FROM", "RUN", "COPY", "ADD", "WORKDIR"))
            index = 0
            state: _State | None = None
            context_loaded = False
            for instruction in steps:
                keyword = instruction.keyword
                counted = keyword in ("FROM", "RUN", "COPY", "ADD", "WORKDIR")
                if counted:
                    index += 1
                label = f"[{index}/{total}] {_substitute(instruction.display, state.variables if state else global_args)}"
                if keyword == "FROM":
                    step_name = f"[{index}/{total}] FROM {_normal(base_name)}"
                    if style == "buildkit":
                        progress.step(step_name)
                    else:
                        progress.note(f"Building stage '{base_name}'")
                    state = _base(store, base_name, scratch)
                    state.variables.update(global_args)
                    progress.done(cached=False)
                    continue
                assert state is not None
                if keyword in ("COPY", "ADD") and not context_loaded and style == "buildkit":
                    progress.step("[internal] load build context")
                    progress.note(f"transferring context: {_human(_tree_size(context))} done")
                    progress.done()
                    context_loaded = True
                if counted and style == "buildkit":
                    progress.step(label)
                elif counted:
                    progress.note(_substitute(instruction.display, state.variables))
                try:
                    _apply(state, context, instruction, progress)
                except BuildError as e:
                    progress.error(str(e))
                    raise
                if counted:
                    progress.done()
            assert state is not None
            config = replace(state.config, env=_with_path(list(state.config.env)))
            if style == "buildkit":
                progress.step("exporting to image")
                progress.note("exporting layers done")
                digest = sha256(json.dumps(config.to_json(), sort_keys=True).encode() + target.encode()).hexdigest()
                progress.note(f"writing image sha256:{digest} done")
                progress.note(f"naming to {target} done")
                store.put(target, config, state.rootfs)
                if push:
                    progress.note("pushing layers done")
                    progress.note(f"pushing manifest for {target}@sha256:{digest} done")
                progress.done()
            else:
                store.put(target, config, state.rootfs)
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


def _normal(name: str) -> str:
    from kubesim.images.names import InvalidReference, normalize

    try:
        return normalize(name)
    except InvalidReference:
        return name


def _apply(state: _State, context: Path, instruction: Instruction, progress: _Progress) -> None:
    keyword = instruction.keyword
    text = instruction.text
    if keyword == "WORKDIR":
        path = _substitute(text, state.variables).strip()
        if not path.startswith("/"):
            path = os.path.join(state.config.workdir or "/", path)
        state.config = replace(state.config, workdir=os.path.normpath(path))
        (state.rootfs / state.config.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    elif keyword == "ENV":
        env = {e.partition("=")[0]: e.partition("=")[2] for e in state.config.env}
        for key, value in _pairs(_substitute(text, {**state.variables, **env})):
            env[key] = value
            state.variables[key] = value
        state.config = replace(state.config, env=[f"{k}={v}" for k, v in env.items()])
    elif keyword == "ARG":
        for key, value in _pairs(text):
            state.variables.setdefault(key, value)
    elif keyword == "CMD":
        state.config = replace(state.config, cmd=_json_or_shell(_substitute(text, state.variables)))
    elif keyword == "ENTRYPOINT":
        # As in Docker, a new ENTRYPOINT resets an inherited CMD.
        state.config = replace(state.config, entrypoint=_json_or_shell(_substitute(text, state.variables)), cmd=[])
    elif keyword in ("COPY", "ADD"):
        _copy_into(state, context, instruction, progress)
    elif keyword == "RUN":
        _run(state, instruction, progress)
    elif keyword == "LABEL":
        state.labels.update(_pairs(text))
    elif keyword in ("EXPOSE", "USER", "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "MAINTAINER", "ONBUILD"):
        pass  # Recorded by real builders; kubesim's kubelet does not use them.
    else:
        raise BuildError(f"dockerfile parse error on line {instruction.line}: unknown instruction: {keyword}")


def _store_from_env() -> ImageStore:
    root = os.environ.get(STORE_ENV)
    if not root:
        raise BuildError(f"{STORE_ENV} is not set: this builder only runs inside kubesim")
    return ImageStore(Path(root))


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
        elif arg in ("--progress", "--export-cache", "--import-cache", "--secret", "--ssh", "--metadata-file"):
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
    dockerfile = Path(locals_["dockerfile"]) / opts.get("filename", "Dockerfile")
    return build(context=Path(locals_["context"]), dockerfile=dockerfile, target=target, store=store, out=out,
                 push=push)


def kaniko_main(argv: list[str], out: TextIO | None = None) -> int:
    """The kaniko executor's `--context=dir://DIR --dockerfile=FILE --destination=REF`."""
    out = out or sys.stdout
    context = dockerfile = destination = ""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("--context", "-c"):
            context = value.removeprefix("dir://")
        elif key in ("--dockerfile", "-f"):
            dockerfile = value
        elif key in ("--destination", "-d"):
            destination = value
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
    return build(context=Path(context), dockerfile=path, target=destination, store=store, out=out, style="kaniko")


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
    env = [f"PATH={tools}:{SYSTEM_PATH}", f"{STORE_ENV}={store.root}"]

    def buildkit(ref: str) -> Image:
        # The rootless image's entrypoint is rootlesskit; nbd's Job sets command explicitly.
        return Image(ref, ImageConfig(entrypoint=["buildctl-daemonless.sh"], env=env, workdir="/home/user"), None)

    def kaniko(ref: str) -> Image:
        return Image(ref, ImageConfig(entrypoint=[str(tools / "kaniko-executor")], env=env, workdir="/workspace"),
                     None)

    for pattern in BUILDKIT_PATTERNS:
        store.register_provider(pattern, buildkit)
    for pattern in KANIKO_PATTERNS:
        store.register_provider(pattern, kaniko)
