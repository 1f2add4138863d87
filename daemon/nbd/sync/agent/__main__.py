"""`python -m nbd.sync.agent ROOT` (and the zipapp's entry point): serve ROOT on stdin/stdout."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
