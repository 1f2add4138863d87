"""Custom resources against their CRD's openAPIV3Schema: prune, default, validate.

Structural-schema semantics as the real apiextensions server applies them, in this order:
1. prune: fields not declared in the schema are dropped (unless `x-kubernetes-preserve-unknown-fields`
   or `additionalProperties`); with `fieldValidation=Strict` they are an error (400 "strict decoding
   error: unknown field ..."), with Warn (the default) a warning header;
2. default: `default` values fill missing properties of objects that are present;
3. validate: type, nullable, required, enum, pattern, minimum/maximum (+exclusive), minLength/
   maxLength, minItems/maxItems, minProperties/maxProperties, items, additionalProperties,
   `x-kubernetes-int-or-string`. Failures → 422 Invalid whose message and `details.causes` read
   like the real server's (`spec.port: Invalid value: 0: spec.port in body should be greater than
   or equal to 1`).

Pure: no I/O.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from kubesim.errors import ApiError
from kubesim.resources import ResourceInfo

__all__ = ["admit", "prune", "apply_defaults", "validate"]

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def prune(value: Any, schema: dict[str, Any] | None, path: str, pruned: list[str], root: bool = False) -> Any:
    """Drop undeclared fields in place-free fashion; record their paths in `pruned`."""
    if schema is None or not isinstance(value, (dict, list)):
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [prune(v, items, f"{path}[{i}]", pruned) for i, v in enumerate(value)]
        return value
    props = schema.get("properties")
    addl = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for k, v in value.items():
        child = _join(path, k)
        if root and k in _ROOT_KEEP:
            out[k] = v
        elif isinstance(props, dict) and k in props:
            out[k] = prune(v, props[k], child, pruned)
        elif isinstance(addl, dict):
            out[k] = prune(v, addl, child, pruned)
        elif addl is True or _preserves(schema) or schema.get("x-kubernetes-int-or-string"):
            out[k] = v
        elif (
            props is None
            and schema.get("type") in (None, "object")
            and not schema.get("properties")
            and "additionalProperties" not in schema
            and _preserves(schema)
        ):
            out[k] = v
        else:
            pruned.append(child)
    return out


def apply_defaults(value: Any, schema: dict[str, Any] | None) -> Any:
    """Fill `default`s of missing (or null, non-nullable) properties, recursively."""
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        out = dict(value)
        for k, sub in props.items():
            if not isinstance(sub, dict):
                continue
            if "default" in sub and (k not in out or (out[k] is None and not sub.get("nullable"))):
                out[k] = copy.deepcopy(sub["default"])
            if k in out:
                out[k] = apply_defaults(out[k], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for k in out:
                if k not in props:
                    out[k] = apply_defaults(out[k], addl)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def _go(v: Any) -> str:
    """A value as the real server prints it in `Invalid value: ...`."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(json.dumps(v, separators=(",", ":")))


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_ok(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer())
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return True


def validate(value: Any, schema: dict[str, Any] | None, path: str, causes: list[dict[str, str]]) -> None:
    """Append a cause for every violation under `path`."""
    if schema is None:
        return

    def bad(reason: str, message: str, field: str = path) -> None:
        causes.append({"reason": reason, "message": message, "field": field})

    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            bad(
                "FieldValueTypeInvalid",
                f'Invalid value: "null": {path} in body must be of type {schema["type"]}: "null"',
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
            bad(
                "FieldValueTypeInvalid",
                f'Invalid value: "{_type_name(value)}": {path} in body must be of type '
                f'integer,string: "{_type_name(value)}"',
            )
            return
    else:
        t = schema.get("type")
        if t and not _type_ok(value, t):
            bad(
                "FieldValueTypeInvalid",
                f'Invalid value: "{_type_name(value)}": {path} in body must be of type '
                f'{t}: "{_type_name(value)}"',
            )
            return
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        bad(
            "FieldValueNotSupported",
            f"Unsupported value: {_go(value)}: supported values: " + ", ".join(_go(e) for e in enum),
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None:
            if schema.get("exclusiveMinimum") and not value > lo:
                bad(
                    "FieldValueInvalid",
                    f"Invalid value: {_go(value)}: {path} in body should be greater than {lo}",
                )
            elif value < lo:
                bad(
                    "FieldValueInvalid",
                    f"Invalid value: {_go(value)}: {path} in body should be greater than or equal to {lo}",
                )
        if hi is not None:
            if schema.get("exclusiveMaximum") and not value < hi:
                bad(
                    "FieldValueInvalid",
                    f"Invalid value: {_go(value)}: {path} in body should be less than {hi}",
                )
            elif value > hi:
                bad(
                    "FieldValueInvalid",
                    f"Invalid value: {_go(value)}: {path} in body should be less than or equal to {hi}",
                )
        mult = schema.get("multipleOf")
        if mult and value % mult:
            bad(
                "FieldValueInvalid",
                f"Invalid value: {_go(value)}: {path} in body should be a multiple of {mult}",
            )
    if isinstance(value, str):
        if schema.get("minLength") is not None and len(value) < schema["minLength"]:
            bad(
                "FieldValueInvalid",
                f"Invalid value: {_go(value)}: {path} in body should be at least "
                f"{schema['minLength']} chars long",
            )
        if schema.get("maxLength") is not None and len(value) > schema["maxLength"]:
            bad("FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes")
        pat = schema.get("pattern")
        if pat:
            try:
                ok = re.search(pat, value) is not None
            except re.error:
                ok = True
            if not ok:
                bad("FieldValueInvalid", f"Invalid value: {_go(value)}: {path} in body should match '{pat}'")
    if isinstance(value, list):
        if schema.get("minItems") is not None and len(value) < schema["minItems"]:
            bad(
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minItems']} items",
            )
        if schema.get("maxItems") is not None and len(value) > schema["maxItems"]:
            bad("FieldValueTooMany", f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                validate(v, items, f"{path}[{i}]", causes)
    if isinstance(value, dict):
        for req in schema.get("required") or []:
            if req not in value:
                bad("FieldValueRequired", "Required value", _join(path, req))
        if schema.get("minProperties") is not None and len(value) < schema["minProperties"]:
            bad(
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minProperties']} properties",
            )
        if schema.get("maxProperties") is not None and len(value) > schema["maxProperties"]:
            bad(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
            )
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for k, v in value.items():
            if not path and k in _ROOT_KEEP:
                continue
            if k in props:
                validate(v, props[k], _join(path, k), causes)
            elif isinstance(addl, dict):
                validate(v, addl, _join(path, k), causes)


def admit(
    info: ResourceInfo,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    field_validation: str | None,
    warnings: list[str] | None,
) -> dict[str, Any]:
    """Prune, default and validate a custom resource; raise ApiError on failure."""

    schema = info.schema
    if not schema:
        return obj
    pruned: list[str] = []
    result = prune(obj, schema, "", pruned, root=True)
    if pruned:
        mode = field_validation or "Warn"
        if mode == "Strict":
            raise ApiError.bad_request(
                f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: strict decoding '
                "error: " + ", ".join(f'unknown field "{p}"' for p in pruned)
            )
        if mode == "Warn" and warnings is not None:
            warnings.extend(f'unknown field "{p}"' for p in pruned)
    result = apply_defaults(result, schema)
    causes: list[dict[str, str]] = []
    validate(result, schema, "", causes)
    if causes:
        raise ApiError.invalid(info, obj.get("metadata", {}).get("name", ""), causes)
    return result  # type: ignore[no-any-return]
