"""Upload test fixtures: the GCS emulator (shared module) and a stub server that answers like GCS."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fixtures_gcs import gcs_emulator, gcs_signing_credentials  # noqa: E402,F401
