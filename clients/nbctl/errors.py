"""nbctl's exit codes and the one error it reports without a traceback.

They sit below `main` (which maps outcomes to them) and the command modules (which raise), so the
commands never import the entry point.

Exit codes: 0 success, 1 error (one line "nbctl: <message>" on stderr), 2 usage, 130 interrupted.
"""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CommandError"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure the CLI reports as one line (exit 1) without a traceback."""
