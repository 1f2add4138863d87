"""kubesim's API failure, rendered as a `Status` object, and the timestamp format of the server.

Its own module, below the store, the resource table and the schema, so each of them raises the
same error without importing the others.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

__all__ = ["ApiError", "KindInfo", "now_rfc3339"]


class KindInfo(Protocol):
    """What an error message needs of a resource (`kubesim.resources.ResourceInfo` has it)."""

    @property
    def group(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def resource(self) -> str: ...
    def qualified(self) -> str: ...


def now_rfc3339(t: float | None = None) -> str:
    """Seconds-precision UTC timestamp as the API server writes it (`2026-01-02T03:04:05Z`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


class ApiError(Exception):
    """An API failure, rendered by the router as a `Status` object with the same code."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        # metav1.Status' field order: kind, apiVersion, metadata, status, message, reason, details, code.
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out

    # Constructors with the real server's wording.
    @classmethod
    def not_found(cls, info: KindInfo | None, name: str, resource: str | None = None) -> ApiError:
        res = resource or (info.qualified() if info else "")
        details: dict[str, Any] = {"name": name, "kind": info.resource if info else res}
        if info and info.group:
            details["group"] = info.group
        return cls(404, "NotFound", f'{res} "{name}" not found', details)

    @classmethod
    def no_resource(cls) -> ApiError:
        return cls(
            404,
            "NotFound",
            "the server could not find the requested resource",
            {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
        )

    @classmethod
    def already_exists(cls, info: KindInfo, name: str) -> ApiError:
        details: dict[str, Any] = {"name": name, "kind": info.resource}
        if info.group:
            details["group"] = info.group
        return cls(409, "AlreadyExists", f'{info.qualified()} "{name}" already exists', details)

    @classmethod
    def conflict(cls, info: KindInfo, name: str, why: str | None = None) -> ApiError:
        details: dict[str, Any] = {"name": name, "kind": info.resource}
        if info.group:
            details["group"] = info.group
        why = (
            why
            or "the object has been modified; please apply your changes to the latest version and try again"
        )
        return cls(
            409, "Conflict", f'Operation cannot be fulfilled on {info.qualified()} "{name}": {why}', details
        )

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def invalid(cls, info: KindInfo, name: str, causes: list[dict[str, str]]) -> ApiError:
        """422 Invalid; causes are {"field", "reason", "message"} like `details.causes`."""
        group_kind = f"{info.kind}.{info.group}" if info.group else info.kind
        parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
        text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        details: dict[str, Any] = {"name": name, "kind": info.kind, "causes": causes}
        if info.group:
            details["group"] = info.group
        return cls(422, "Invalid", f'{group_kind} "{name}" is invalid: {text}', details)

    @classmethod
    def expired(cls, message: str) -> ApiError:
        return cls(410, "Expired", message)
