"""Image references normalised the way a registry client does.

`busybox` is `docker.io/library/busybox:latest`; `user/app` is `docker.io/user/app:latest`; a first
path component with a dot, a colon or equal to `localhost` is a registry host. A digest
(`@sha256:...`) is kept as written. Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import re

__all__ = ["InvalidReference", "normalize", "split", "matches"]

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


class InvalidReference(ValueError):
    """A string that is not an image reference (the message says why)."""


def split(ref: str) -> tuple[str, str, str]:
    """(registry, repository path, tag-or-digest) of `ref`; the third starts with ':' or '@'."""
    ref = ref.strip()
    if not ref:
        raise InvalidReference("image reference is empty")
    digest = ""
    if "@" in ref:
        ref, d = ref.split("@", 1)
        digest = "@" + d
        if not re.match(r"^@[a-z0-9]+:[a-f0-9]{32,}$", digest):
            raise InvalidReference(f"invalid digest in image reference {ref + digest!r}")
    tag = ""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, t = ref.rsplit(":", 1)
        if not _TAG.match(t):
            raise InvalidReference(f"invalid tag {t!r} in image reference")
        tag = ":" + t
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], parts[1:]
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    for comp in path:
        if not _COMPONENT.match(comp):
            raise InvalidReference(
                f"invalid image reference {ref!r}: repository names must be lower case letters, digits and separators"
            )
    if not tag and not digest:
        tag = ":latest"
    return registry, "/".join(path), tag + digest


def normalize(ref: str) -> str:
    """The canonical form, e.g. `busybox` -> `docker.io/library/busybox:latest`."""
    registry, path, suffix = split(ref)
    return f"{registry}/{path}{suffix}"


def matches(pattern: str, ref: str) -> bool:
    """Whether `ref` matches `pattern` (shell globs; a pattern without a tag matches any tag).

    Both are normalised first, so `moby/buildkit:*` matches `docker.io/moby/buildkit:v0.16.0`.
    """
    try:
        registry, path, suffix = split(ref)
    except InvalidReference:
        return False
    p = pattern.strip()
    p_last = p.rsplit("/", 1)[-1]
    if ":" in p_last:
        p_repo, p_tag = p.rsplit(":", 1)
    else:
        p_repo, p_tag = p, "*"
    parts = p_repo.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        p_registry, p_path = parts[0], "/".join(parts[1:])
    else:
        p_registry, p_path = DEFAULT_REGISTRY, "/".join(parts)
        if len(parts) == 1:
            p_path = "library/" + p_path
    tag = suffix[1:]
    return (
        fnmatch.fnmatchcase(registry, p_registry)
        and fnmatch.fnmatchcase(path, p_path)
        and fnmatch.fnmatchcase(tag, p_tag)
    )
