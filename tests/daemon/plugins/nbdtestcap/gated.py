"""The test capability behind a gate: importing this module blocks until the file named by
$NBD_TEST_CAPABILITY_GATE exists, so a test controls when the daemon's capabilities are in."""

from __future__ import annotations

import os
import time
from pathlib import Path

from nbdtestcap.capability import install

__all__ = ["install"]

_gate = Path(os.environ["NBD_TEST_CAPABILITY_GATE"])
_deadline = time.monotonic() + 60
while not _gate.exists() and time.monotonic() < _deadline:
    time.sleep(0.02)
