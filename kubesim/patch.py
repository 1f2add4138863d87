"""The four patch flavours of the Kubernetes API: JSON patch, merge patch, strategic merge, apply.

Pure: dicts in, dicts out; inputs are never mutated.

- JSON patch (RFC 6902): add/remove/replace/move/copy/test with JSON pointers.
- Merge patch (RFC 7386): dicts merge recursively, `null` deletes, everything else replaces.
- Strategic merge: like merge, except lists with a known merge key (containers by `name`, env by
  `name`, ports by `containerPort`, ...) merge element by element, and the directives kubectl
  sends (`$patch`, `$setElementOrder/<list>`, `$retainKeys`, `$deleteFromPrimitiveList/<list>`)
  are honoured or dropped.
- Server-side apply (`apply`): the applied configuration is merged like a strategic merge; fields
  a manager applied before and omits now are removed unless another manager set them.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "PatchError",
    "json_patch",
    "merge_patch",
    "strategic_merge_patch",
    "MERGE_KEYS",
    "field_set",
    "remove_fields",
]


class PatchError(ValueError):
    """The patch cannot be applied (bad pointer, failed test, wrong type)."""


# List field name -> merge key, as in the Kubernetes Go types' patchMergeKey tags.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "tolerations": "key",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}


def _decode_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _walk(doc: Any, parts: list[str], pointer: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict):
            if part not in cur:
                raise PatchError(f"path {pointer!r} not found")
            cur = cur[part]
        elif isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"path {pointer!r} not found") from None
        else:
            raise PatchError(f"path {pointer!r} not found")
    return cur


def _add(doc: Any, parts: list[str], value: Any, pointer: str, replace: bool) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], pointer)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {pointer}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            if replace:
                raise PatchError(f"invalid index in {pointer!r}")
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError:
                raise PatchError(f"invalid index in {pointer!r}") from None
            if replace:
                if not 0 <= idx < len(parent):
                    raise PatchError(f"index out of range in {pointer!r}")
                parent[idx] = value
            else:
                if not 0 <= idx <= len(parent):
                    raise PatchError(f"index out of range in {pointer!r}")
                parent.insert(idx, value)
    else:
        raise PatchError(f"path {pointer!r} not found")
    return doc


def _remove(doc: Any, parts: list[str], pointer: str) -> tuple[Any, Any]:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], pointer)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"remove operation does not apply: doc is missing path: {pointer!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"remove operation does not apply: doc is missing path: {pointer!r}") from None
    raise PatchError(f"path {pointer!r} not found")


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch (a list of operations) to a copy of `doc`."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid json patch operation {op!r}")
        kind, pointer = op["op"], op["path"]
        parts = _decode_pointer(pointer)
        if kind in ("add", "replace"):
            if "value" not in op:
                raise PatchError(f"{kind} operation needs a value")
            doc = _add(doc, parts, copy.deepcopy(op["value"]), pointer, replace=kind == "replace")
        elif kind == "remove":
            doc, _ = _remove(doc, parts, pointer)
        elif kind in ("move", "copy"):
            src = _decode_pointer(op.get("from", ""))
            if kind == "move":
                doc, value = _remove(doc, src, op.get("from", ""))
            else:
                value = copy.deepcopy(_walk(doc, src, op.get("from", "")))
            doc = _add(doc, parts, value, pointer, replace=False)
        elif kind == "test":
            if _walk(doc, parts, pointer) != op.get("value"):
                raise PatchError(f"testing value {pointer} failed")
        else:
            raise PatchError(f"unknown json patch operation {kind!r}")
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch, returning a new document."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list_by_key(orig: list[Any], patch: list[Any], key: str, order: list[Any] | None) -> list[Any]:
    result = [copy.deepcopy(x) for x in orig]

    def find(k: Any) -> int:
        for i, item in enumerate(result):
            if isinstance(item, dict) and item.get(key) == k:
                return i
        return -1

    for item in patch:
        if not isinstance(item, dict) or key not in item:
            # No merge key: cannot merge element-wise; append as is.
            result.append(copy.deepcopy(item))
            continue
        directive = item.get("$patch")
        idx = find(item[key])
        if directive == "delete":
            if idx >= 0:
                result.pop(idx)
            continue
        if directive == "replace":
            clean = {k: v for k, v in item.items() if k != "$patch"}
            if idx >= 0:
                result[idx] = copy.deepcopy(clean)
            else:
                result.append(copy.deepcopy(clean))
            continue
        if idx >= 0:
            result[idx] = strategic_merge_patch(result[idx], item)
        else:
            result.append(strategic_merge_patch({}, item))
    if order:
        keyed = {x.get(key): x for x in result if isinstance(x, dict)}
        ordered = [
            keyed[k[key] if isinstance(k, dict) else k]
            for k in order
            if (k[key] if isinstance(k, dict) else k) in keyed
        ]
        rest = [
            x
            for x in result
            if not (
                isinstance(x, dict) and x.get(key) in {(k[key] if isinstance(k, dict) else k) for k in order}
            )
        ]
        result = ordered + rest
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch as described in the module docstring, returning a new document."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    deletes: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value or []
        elif key.startswith("$deleteFromPrimitiveList/"):
            deletes[key.split("/", 1)[1]] = value or []
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list_by_key(result[key], value, MERGE_KEYS[key], orders.get(key))
        elif isinstance(value, list):
            cleaned = [
                strategic_merge_patch({}, v) if isinstance(v, dict) else copy.deepcopy(v)
                for v in value
                if not (isinstance(v, dict) and v.get("$patch") == "delete")
            ]
            result[key] = cleaned
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for key, values in deletes.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain and key not in patch:
                result.pop(key)
    return result


def field_set(obj: Any, list_key: str | None = None) -> dict[str, Any]:
    """The FieldsV1 set of an applied configuration: {"f:spec": {"f:x": {}}, ...}.

    Lists with a merge key become `k:{"name":"c"}` entries; other lists are atomic (one leaf).
    """
    out: dict[str, Any] = {}
    if not isinstance(obj, dict):
        return out
    for key, value in obj.items():
        if key in ("apiVersion", "kind") and list_key is None:
            continue
        if isinstance(value, dict) and value:
            out[f"f:{key}"] = field_set(value, key)
        elif isinstance(value, list) and key in MERGE_KEYS and value:
            mk = MERGE_KEYS[key]
            entries: dict[str, Any] = {}
            for item in value:
                if isinstance(item, dict) and mk in item:
                    import json

                    entries["k:" + json.dumps({mk: item[mk]}, separators=(",", ":"))] = {
                        ".": {},
                        **field_set(item, key),
                    }
            out[f"f:{key}"] = entries
        else:
            out[f"f:{key}"] = {}
    return out


def remove_fields(obj: Any, stale: dict[str, Any], keep: dict[str, Any]) -> Any:
    """Remove from `obj` the fields in `stale` that are not in `keep` (both FieldsV1 sets).

    Used by server-side apply: `stale` = fields the manager applied last time, `keep` = fields it
    applies now plus fields owned by other managers.
    """
    import json

    if not isinstance(obj, dict):
        return obj
    result = dict(obj)
    for fkey, sub in stale.items():
        if not fkey.startswith("f:"):
            continue
        name = fkey[2:]
        if name not in result:
            continue
        if fkey not in keep:
            result.pop(name)
            continue
        ksub = keep.get(fkey) or {}
        value = result[name]
        if isinstance(value, dict) and sub:
            result[name] = remove_fields(value, sub, ksub)
        elif isinstance(value, list) and name in MERGE_KEYS and sub:
            mk = MERGE_KEYS[name]
            new_list = []
            for item in value:
                if isinstance(item, dict) and mk in item:
                    ik = "k:" + json.dumps({mk: item[mk]}, separators=(",", ":"))
                    if ik in sub and ik not in ksub:
                        continue
                    if ik in sub:
                        item = remove_fields(item, sub[ik], ksub.get(ik) or {})
                new_list.append(item)
            result[name] = new_list
    return result
