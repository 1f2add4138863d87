"""The one place nbd's version is written; the daemon reports it and clients compare against it.

Kept equal to `[project] version` of every distribution in the repository (tests/test_packaging.py
checks this).
"""

__all__ = ["__version__", "API_VERSION"]

__version__ = "0.1.0"
# The local API's version, as named in the proto package (nbdapi.v1).
API_VERSION = "v1"
