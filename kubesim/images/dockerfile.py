"""Dockerfiles as kubesim's builder reads them: instructions, flags, variables, exec or shell form.

Pure text handling, no I/O: `parse_dockerfile` joins `\\` continuations and drops comments,
`substitute` expands `$VAR`, `${VAR}` and `${VAR:-default}` as Dockerfiles do (undefined: empty),
`pairs` reads ENV/ARG/LABEL arguments, `json_or_shell` tells exec form from shell form, and
`run_mounts` reads RUN `--mount=` flags.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

__all__ = [
    "Instruction",
    "parse_dockerfile",
    "json_or_shell",
    "substitute",
    "pairs",
    "CacheMount",
    "run_mounts",
]


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


def json_or_shell(text: str) -> list[str]:
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


def substitute(text: str, variables: dict[str, str]) -> str:
    """`$NAME`, `${NAME}` and `${NAME:-default}` (undefined: empty, as in Dockerfiles)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            return variables.get(m.group(3), "")
        value = variables.get(m.group(1), "")
        if not value and m.group(2) is not None:
            return m.group(2)
        return value

    return re.sub(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))", sub, text)


def pairs(text: str) -> list[tuple[str, str]]:
    """ENV/ARG/LABEL arguments: `K=V K2="v 2"` or the legacy `K V`."""
    words = shlex.split(text, posix=True)
    if words and "=" not in words[0]:
        return [(words[0], text.split(None, 1)[1].strip() if len(words) > 1 else "")]
    out = []
    for word in words:
        key, _, value = word.partition("=")
        out.append((key, value))
    return out


@dataclass(frozen=True)
class CacheMount:
    """A RUN `--mount=type=cache,target=PATH[,id=ID]`: a directory kept between builds."""

    target: str
    id: str


def run_mounts(flags: tuple[str, ...]) -> list[CacheMount]:
    """The cache mounts of a RUN's flags; raises ValueError naming what this builder cannot do."""
    mounts: list[CacheMount] = []
    for flag in flags:
        if not flag.startswith("--mount="):
            if flag.startswith("--network=") or flag.startswith("--security="):
                continue
            raise ValueError(f"RUN {flag}: unknown flag")
        options: dict[str, str] = {}
        for part in flag[len("--mount=") :].split(","):
            key, _, value = part.partition("=")
            options[key.strip()] = value.strip()
        kind = options.get("type", "bind")
        if kind != "cache":
            raise ValueError(f"RUN --mount=type={kind}: only type=cache is supported by this builder")
        target = options.get("target") or options.get("dst") or options.get("destination") or ""
        if not target.startswith("/"):
            raise ValueError(f"RUN {flag}: a cache mount needs an absolute target")
        mounts.append(CacheMount(target, options.get("id") or target))
    return mounts
