"""Solving a Dockerfile into image layers, with BuildKit's cache semantics.

Each filesystem step (WORKDIR, COPY/ADD, RUN) makes one layer whose id is its cache key: a digest
of the parent's key, the instruction as written (variables substituted), the config it runs with
(env, workdir) and, for COPY/ADD, the digest of the files it brings in (names, modes and bytes, not
times). A step whose layer exists is not run again and is logged `CACHED`, so after a change to a
notebook only `COPY . /content` and what follows it run, while `RUN pip install -r requirements.txt`
before it is a cache hit. A cache miss invalidates every step after it, as the parent key changes.

RUN executes for real over the layers so far (kubesim/images/rootfs.py): `pip install` installs
into the image's own Python environment, and a non-zero exit fails the build with its output in
the log. `RUN --mount=type=cache,target=...` gets a node-wide cache directory (pip's download cache
survives between builds that way). Config-only instructions (ENV, ARG, CMD, ENTRYPOINT, LABEL, ...)
make no layer; ENV and ARG still reach the keys of later RUN steps through the environment.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kubesim.identity import Identity, UnknownUser, host_group, host_passwd, resolve_identity
from kubesim.images.dockerfile import Instruction, json_or_shell, pairs, run_mounts, substitute
from kubesim.images.layers import cache_key, content_digest
from kubesim.images.python import SYSTEM_PATH
from kubesim.images.rootfs import Step, StepUnavailable, run_step
from kubesim.images.store import ImageConfig, ImageStore

__all__ = ["BuildError", "Solver", "State", "FS_STEPS"]

# Instructions that make a layer (and a numbered step in BuildKit's progress).
FS_STEPS = ("FROM", "RUN", "COPY", "ADD", "WORKDIR")
# Variables Docker passes to RUN from the builder's environment without a Dockerfile ARG.
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")


class BuildError(Exception):
    """A failed build; the message is what BuildKit would print after `error: `."""


@dataclass
class State:
    """The image so far: config, layers (bottom first), the cache key of the last step."""

    config: ImageConfig
    layers: list[str]
    key: str
    variables: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


# Progress callbacks: a line of a step's output, or a note about the step.
Output = Callable[[str], None]


@dataclass
class Solver:
    """Runs the instructions of one build stage against `store`'s layers."""

    store: ImageStore
    context: Path
    line: Output
    note: Output
    # The cache keys a build may take from the cache (None: every layer of the node's store, a
    # long-lived daemon's local cache), and the instructions that consult it at all.
    allowed: set[str] | None = None
    cached_keywords: tuple[str, ...] = FS_STEPS
    # Every layer key this build produced or reused, for a cache export.
    produced: list[str] = field(default_factory=list)

    def is_cached(self, key: str | None, keyword: str) -> bool:
        """Whether the step with cache key `key` is taken from the cache instead of run."""
        if key is None or keyword not in self.cached_keywords:
            return False
        if self.allowed is not None and key not in self.allowed:
            return False
        return self.store.layers.exists(key)

    def base(self, name: str) -> State:
        if name == "scratch":
            return State(ImageConfig(), [], cache_key("from", "scratch"))
        try:
            image = self.store.get(name)
        except StepUnavailable as e:
            raise BuildError(f"failed to solve: {name}: {e}") from e
        if image is None:
            raise BuildError(
                f"failed to solve: {name}: failed to resolve source metadata for {name}: "
                "pull access denied, repository does not exist or may require authorization"
            )
        layers = list(image.layers)
        return State(replace(image.config), layers, cache_key("from", image.name, *layers))

    def key(self, state: State, instruction: Instruction) -> str | None:
        """The cache key of a filesystem step (None for a config-only instruction)."""
        keyword = instruction.keyword
        if keyword == "WORKDIR":
            return cache_key(state.key, "WORKDIR", self._workdir_path(state, instruction))
        if keyword in ("COPY", "ADD"):
            dest, sources = self._copy_plan(state, instruction)
            digest = content_digest((f"{dest}<-{rel}", path) for rel, path in sources)
            return cache_key(state.key, keyword, " ".join(instruction.flags), dest, digest)
        if keyword == "RUN":
            command = json_or_shell(instruction.text)
            return cache_key(
                state.key,
                "RUN",
                json.dumps(command),
                " ".join(instruction.flags),
                json.dumps(self._run_env(state), sort_keys=True),
                state.config.workdir or "/",
                # Root's key stays what it was; another USER is part of what the step is.
                *([f"user={state.config.user}"] if state.config.user else []),
            )
        return None

    def apply(self, state: State, instruction: Instruction, key: str | None) -> bool:
        """Applies one instruction; returns True when its layer came from the cache."""
        keyword = instruction.keyword
        text = instruction.text
        if keyword == "WORKDIR":
            path = self._workdir_path(state, instruction)
            state.config = replace(state.config, workdir=path)
        if key is not None:
            cached = self.is_cached(key, keyword)
            if not cached:
                self._make_layer(state, instruction, key)
            self.produced.append(key)
            state.layers.append(key)
            state.key = key
            return cached
        if keyword == "ENV":
            env = {e.partition("=")[0]: e.partition("=")[2] for e in state.config.env}
            for name, value in pairs(substitute(text, {**state.variables, **env})):
                env[name] = value
                state.variables[name] = value
            state.config = replace(state.config, env=[f"{k}={v}" for k, v in env.items()])
        elif keyword == "ARG":
            for name, value in pairs(text):
                state.variables.setdefault(name, value)
        elif keyword == "CMD":
            state.config = replace(state.config, cmd=json_or_shell(substitute(text, state.variables)))
        elif keyword == "ENTRYPOINT":
            # As in Docker, a new ENTRYPOINT resets an inherited CMD.
            state.config = replace(
                state.config, entrypoint=json_or_shell(substitute(text, state.variables)), cmd=[]
            )
        elif keyword == "LABEL":
            state.labels.update(pairs(text))
        elif keyword == "USER":
            user = substitute(text, state.variables).strip()
            if not user:
                raise BuildError(
                    f"dockerfile parse error on line {instruction.line}: USER requires exactly one argument"
                )
            state.config = replace(state.config, user=user)
        elif keyword in (
            "EXPOSE",
            "VOLUME",
            "SHELL",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "MAINTAINER",
            "ONBUILD",
        ):
            pass  # Recorded by real builders; kubesim's kubelet does not use them.
        else:
            raise BuildError(
                f"dockerfile parse error on line {instruction.line}: unknown instruction: {keyword}"
            )
        return False

    # --- layers ------------------------------------------------------------------------------

    def _make_layer(self, state: State, instruction: Instruction, key: str) -> None:
        layers = self.store.layers
        upper = layers.scratch(".upper-")
        try:
            keyword = instruction.keyword
            if keyword == "WORKDIR":
                path = state.config.workdir
                if layers.find(state.layers, path) is None:
                    (upper / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif keyword in ("COPY", "ADD"):
                self._copy(state, instruction, upper)
            else:
                self._run(state, instruction, upper)
            layers.commit(upper, key, instruction.display)
        except BaseException:
            shutil.rmtree(upper, ignore_errors=True)
            raise

    def _workdir_path(self, state: State, instruction: Instruction) -> str:
        path = substitute(instruction.text, state.variables).strip()
        if not path.startswith("/"):
            path = os.path.join(state.config.workdir or "/", path)
        return os.path.normpath(path)

    def _copy_plan(self, state: State, instruction: Instruction) -> tuple[str, list[tuple[str, Path]]]:
        """(destination in the image, [(source as written, path in the context)]) of a COPY/ADD."""
        for flag in instruction.flags:
            if flag.startswith("--from"):
                raise BuildError(
                    f"{instruction.keyword} {flag}: multi-stage builds are not supported by this builder"
                )
        args = json_or_shell(instruction.text)
        if args[:2] == ["/bin/sh", "-c"]:
            args = shlex.split(substitute(instruction.text, state.variables))
        if len(args) < 2:
            raise BuildError(
                f"dockerfile parse error on line {instruction.line}: "
                f"{instruction.keyword} requires at least two arguments"
            )
        *sources, dest = args
        workdir = state.config.workdir or "/"
        dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
        if dest.endswith("/") or dest in (".", "./"):
            dest_abs = dest_abs.rstrip("/.") + "/" if dest_abs.rstrip("/.") else "/"
        root = self.context.resolve()
        found: list[tuple[str, Path]] = []
        for source in sources:
            if re.match(r"^[a-z]+://", source):
                raise BuildError(
                    f"{instruction.keyword} {source}: remote sources are not supported by this builder"
                )
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
                found.append((source, path))
        if len(sources) > 1 and not dest_abs.endswith("/"):
            dest_abs += "/"
        return dest_abs, found

    def _copy(self, state: State, instruction: Instruction, upper: Path) -> None:
        dest_abs, found = self._copy_plan(state, instruction)
        existing = self.store.layers.find(state.layers, dest_abs)
        dest_is_dir = dest_abs.endswith("/") or (
            existing is not None and existing.is_dir() and not existing.is_symlink()
        )
        target = upper / dest_abs.strip("/")
        copied = 0
        for _source, path in found:
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
                copied += sum(len(files) for _d, _s, files in os.walk(path))
            else:
                into = target / path.name if dest_is_dir else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)
                copied += 1
        self.note(f"copied {copied} file(s) to {dest_abs}")

    def _run_env(self, state: State) -> dict[str, str]:
        env = {"PATH": state.config.env_value("PATH", SYSTEM_PATH), "HOME": "/root"}
        for item in state.config.env:
            key, _, value = item.partition("=")
            env[key] = value
        for key, value in state.variables.items():
            env.setdefault(key, value)
        return env

    def _run(self, state: State, instruction: Instruction, upper: Path) -> None:
        command = json_or_shell(instruction.text)
        try:
            mounts = run_mounts(instruction.flags)
        except ValueError as e:
            raise BuildError(str(e)) from e
        env = self._run_env(state)
        for key in _PROXY_VARS:
            for name in (key, key.lower()):
                if os.environ.get(name) and name not in env:
                    env[name] = os.environ[name]
        caches = [(self.store.layers.cache_dir(m.id), m.target) for m in mounts]
        tail: list[str] = []

        def output(text: str) -> None:
            tail.append(text)
            del tail[:-20]
            self.line(text)

        try:
            user = run_user(state.config.user)
        except UnknownUser as e:
            raise BuildError(str(e)) from e
        if user is not None and not state.config.env_value("HOME"):
            env["HOME"] = user.home
        step = Step(
            argv=command,
            lower=list(state.layers),
            upper=upper,
            workdir=state.config.workdir or "/",
            env=env,
            caches=caches,
            user=None if user is None else (user.uid, user.gid),
        )
        try:
            code = run_step(self.store.layers, step, output)
        except StepUnavailable as e:
            raise BuildError(f"RUN {instruction.text}: {e}") from e
        except OSError as e:
            raise BuildError(f'process "{" ".join(command)}" did not complete successfully: {e}') from e
        if code != 0:
            if any("Read-only file system" in t for t in tail):
                self.line(
                    "kubesim: a RUN step may write only under the image's own top-level paths "
                    "(such as /content, /kubesim-python and /tmp); this machine's system directories "
                    "are read-only to builds"
                )
            raise BuildError(
                f'process "{" ".join(command)}" did not complete successfully: exit code: {code}'
            )


def run_user(user: str) -> Identity | None:
    """Who a RUN step runs as after `USER user` (None: root, the builder's own identity), resolved
    in the passwd and group files the step sees, as BuildKit does. Raises UnknownUser."""
    if not user:
        return None
    who = resolve_identity({}, {}, user, host_passwd, host_group)
    return None if who.is_root_unchanged else who
