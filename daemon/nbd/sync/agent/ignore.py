"""What the sync leaves alone: gitignore-style rules, the same on both sides.

Both sides scan with these rules (the daemon's `Tree` is the agent's), and the daemon also
excludes what either side's rule files ignore before it reconciles, so a path ignored on one
side is never created, changed or deleted on the other.

Why this is not `nbd.context.ignore` (the build context's `.dockerignore` engine), although both
match globs against relative paths: the two follow different specifications on purpose, and
sharing one matcher would change what one of them selects.
- Here, as in git: rule files (`.nbdignore`, `.gitignore`) live in any directory and apply below
  it; a pattern without a `/` (other than a trailing one) matches at any depth (`*.log` ignores
  `a/b/c.log`); a trailing `/` matches directories only; nothing below an ignored directory can be
  re-included (the walk never enters it).
- A `.dockerignore` is one file at the context root; every pattern is anchored at the root
  (`*.log` is top-level only), cleaned with Go's `filepath.Clean` (a trailing `/` means nothing),
  and an exception (`!`) can re-include a path below an excluded directory, as Docker sends it.
The runtime differs too: this module runs in the pod, so it keeps to Python 3.8 and the stdlib,
while the build context's engine is daemon-only code.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from .paths import TEMP_PREFIX

RULE_FILES = (".nbdignore", ".gitignore")
DEFAULT_IGNORES = (
    ".git/",
    ".ipynb_checkpoints/",
    "__pycache__/",
    ".venv/",
    "node_modules/",
    ".DS_Store",
    TEMP_PREFIX + "*",
)


def _glob_to_regex(glob: str) -> str:
    """Translate one gitignore glob (without leading/trailing slash handling) to a regex."""
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob[i : i + 3] == "**/":
                out.append("(?:.*/)?")
                i += 3
                continue
            if glob[i : i + 2] == "**":
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                inner = glob[i + 1 : j]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class IgnoreRules(object):
    """gitignore-style rules: defaults plus `.nbdignore` / `.gitignore` files found in the tree.

    Each rule applies below the directory of the file that holds it; the last matching rule wins;
    `!` negates; a trailing `/` matches directories only; a pattern with a `/` before its end is
    anchored to its file's directory. As in git, nothing below an ignored directory is considered.
    """

    def __init__(self) -> None:
        # (base dir, compiled regex, negated, dir_only)
        self.rules: List[Tuple[str, Any, bool, bool]] = []
        self.sources: Dict[str, str] = {}
        self.add_lines("", DEFAULT_IGNORES)

    def add_file(self, rel_path: str, text: str) -> None:
        self.sources[rel_path] = text
        base = rel_path.rsplit("/", 1)[0] if "/" in rel_path else ""
        self.add_lines(base, text.splitlines())

    def add_lines(self, base: str, lines: Any) -> None:
        for raw in lines:
            line = raw.rstrip("\n\r")
            if not line.strip() or line.startswith("#"):
                continue
            line = line.rstrip(" ") if not line.endswith("\\ ") else line
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            if line.startswith("\\"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            body = _glob_to_regex(line)
            regex = ("^" if anchored else "^(?:.*/)?") + body + "$"
            self.rules.append((base, re.compile(regex, re.S), negated, dir_only))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether `path` itself matches (its parents are the walker's business)."""
        result = False
        for base, regex, negated, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if base:
                if not path.startswith(base + "/"):
                    continue
                rel = path[len(base) + 1 :]
            else:
                rel = path
            if regex.match(rel):
                result = not negated
        return result

    def ignored_path(self, path: str, is_dir: bool) -> bool:
        """Whether `path` or any of its parent directories is ignored."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.ignored("/".join(parts[:i]), True):
                return True
        return self.ignored(path, is_dir)


def rules_from_files(files: Dict[str, str]) -> IgnoreRules:
    """The rules of a side whose rule files (path -> text) a scan reported."""
    rules = IgnoreRules()
    for rel_path, text in files.items():
        rules.add_file(rel_path, text)
    return rules


def is_rule_file(path: str) -> bool:
    """Whether a change to `path` can change what is ignored (a rescan of everything is due)."""
    return path.rsplit("/", 1)[-1] in RULE_FILES
