"""What a sync path may be, for both sides: the one rule the agent enforces and the daemon checks.

A sync path is relative to the synchronised root, "/"-separated, never empty, normalised (no "",
"." or ".." component) and free of NUL bytes. The agent refuses any other path it is asked to
touch; the daemon drops any other path the agent reports (the agent is not trusted). Both import
this module, so they refuse exactly the same set. It also holds the agent's one error, `Refused`,
and the prefix of the temporary files a write goes through, which no side ever synchronises.

Pure string logic, Python 3.8 syntax, stdlib only (it runs in the pod, see the package docstring).
"""

from __future__ import annotations

from typing import Any, List, Optional

TEMP_PREFIX = ".nbd-tmp-"


class Refused(Exception):
    """An operation the agent will not perform; the message says why (sent back to the daemon)."""


def path_problem(path: Any) -> Optional[str]:
    """Why `path` is not an acceptable relative sync path, or None when it is."""
    if not isinstance(path, str) or not path:
        return "empty path"
    if "\x00" in path:
        return "path contains a NUL byte"
    if path.startswith("/"):
        return "absolute path"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "path is not normalised (empty, '.' or '..' component)"
    return None


def check_path(path: Any) -> List[str]:
    """The components of a valid relative path, or Refused."""
    why = path_problem(path)
    if why is not None:
        raise Refused("%s: %r" % (why, path) if isinstance(path, str) and path else why)
    parts: List[str] = path.split("/")
    return parts


def failure_message(e: BaseException, path: str) -> str:
    """What a failed operation on `path` reports: a refusal says why itself; an I/O error is
    prefixed with the path."""
    if isinstance(e, Refused):
        return str(e)
    return "%s: %s" % (path, getattr(e, "strerror", None) or e)
