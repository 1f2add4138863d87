"""Merge patches that turn one status into another (RFC 7386): a key that disappears becomes null.

A plain merge patch of the new status would leave stale keys behind (a signed URL after the upload
was verified, a pod name after a suspend); this computes the patch that removes them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["merge_patch"]


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch taking `old` to `new` (lists are replaced whole)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, dict) and isinstance(previous, dict):
            sub = merge_patch(previous, value)
            if sub:
                patch[key] = sub
        elif value != previous or key not in old:
            patch[key] = value
    return patch
