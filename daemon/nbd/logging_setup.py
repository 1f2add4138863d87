"""The daemon's logging: a rotating file in the state dir, and stderr on request.

The daemon runs detached from any terminal, so its log file is where a user (and `nbctl daemon
logs`) finds what happened. The file is created 0600: it may name sessions and directories.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

__all__ = ["configure"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3


def configure(log_file: Path, *, to_stderr: bool = False, level: int = logging.INFO) -> None:
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    formatter = logging.Formatter(FORMAT)
    file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS)
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    if to_stderr:
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(formatter)
        root.addHandler(err)
