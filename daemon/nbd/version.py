"""The version the daemon reports: the one nbd version (`nbdlocal.version`), so a client and the
daemon built from the same tree always agree.

`NBD_TEST_DAEMON_VERSION` makes the daemon report another version; it exists only so tests can
exercise the clients' version-mismatch handling.
"""

from __future__ import annotations

import os

from nbdlocal.version import API_VERSION, __version__

__all__ = ["API_VERSION", "__version__", "reported_version"]


def reported_version() -> str:
    return os.environ.get("NBD_TEST_DAEMON_VERSION") or __version__
