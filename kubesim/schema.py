"""Custom resource validation, defaulting and pruning against a CRD's openAPIV3Schema."""

from __future__ import annotations

from typing import Any

from kubesim.resources import ResourceInfo


def admit(info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None,
          field_validation: str | None, warnings: list[str] | None) -> dict[str, Any]:
    """Default, prune and validate `obj`; raise ApiError (422 Invalid / 400 strict decoding)."""
    return obj
