"""Decoding the protobuf request bodies kubectl's typed commands send.

`kubectl create secret|configmap|namespace|serviceaccount|job|deployment` and `kubectl auth can-i`
post `application/vnd.kubernetes.protobuf` bodies (they accept JSON answers). kubesim stores
JSON, so it turns those bodies into the equivalent JSON objects. Only the kinds and fields those
commands produce are described here; unknown fields are skipped, and a kind not described is a
415 for the caller to report.

Wire format: the magic `k8s\\x00`, then a `runtime.Unknown` {1: TypeMeta {1: apiVersion, 2: kind},
2: raw object bytes}. Go's generated code writes zero values too, so empty strings, zero numbers
and empty messages are dropped to get what `omitempty` JSON would hold. Pure: no I/O.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["ProtobufError", "decode", "MAGIC"]

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf envelope, or of a kind kubesim cannot read."""


# message -> field number -> (json name, type, repeated); type is a scalar name or a message name.
# Scalars: str, bytes, int, bool; maps: "map:str", "map:bytes", "map:Quantity".
_F = tuple[str, str, bool]
SCHEMAS: dict[str, dict[int, _F]] = {
    "ObjectMeta": {
        1: ("name", "str", False),
        2: ("generateName", "str", False),
        3: ("namespace", "str", False),
        5: ("uid", "str", False),
        6: ("resourceVersion", "str", False),
        7: ("generation", "int", False),
        11: ("labels", "map:str", False),
        12: ("annotations", "map:str", False),
        13: ("ownerReferences", "OwnerReference", True),
        14: ("finalizers", "str", True),
    },
    "OwnerReference": {
        1: ("kind", "str", False),
        3: ("name", "str", False),
        4: ("uid", "str", False),
        5: ("apiVersion", "str", False),
        6: ("controller", "bool", False),
        7: ("blockOwnerDeletion", "bool", False),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta", False),
        2: ("data", "map:bytes", False),
        3: ("type", "str", False),
        4: ("stringData", "map:str", False),
        5: ("immutable", "bool", False),
    },
    "ConfigMap": {
        1: ("metadata", "ObjectMeta", False),
        2: ("data", "map:str", False),
        3: ("binaryData", "map:bytes", False),
        4: ("immutable", "bool", False),
    },
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "NamespaceSpec": {1: ("finalizers", "str", True)},
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta", False),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "SSARSpec", False)},
    "SSARSpec": {1: ("resourceAttributes", "ResourceAttributes", False)},
    "ResourceAttributes": {
        1: ("namespace", "str", False),
        2: ("verb", "str", False),
        3: ("group", "str", False),
        4: ("version", "str", False),
        5: ("resource", "str", False),
        6: ("subresource", "str", False),
        7: ("name", "str", False),
    },
    "TokenRequest": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "TokenRequestSpec", False)},
    "TokenRequestSpec": {1: ("audiences", "str", True), 4: ("expirationSeconds", "int", False)},
    "Job": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "JobSpec", False)},
    "JobSpec": {
        1: ("parallelism", "int", False),
        2: ("completions", "int", False),
        3: ("activeDeadlineSeconds", "int", False),
        4: ("selector", "LabelSelector", False),
        5: ("manualSelector", "bool", False),
        6: ("template", "PodTemplateSpec", False),
        7: ("backoffLimit", "int", False),
        8: ("ttlSecondsAfterFinished", "int", False),
        9: ("completionMode", "str", False),
        10: ("suspend", "bool", False),
    },
    "Deployment": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "DeploymentSpec", False)},
    "DeploymentSpec": {
        1: ("replicas", "int", False),
        2: ("selector", "LabelSelector", False),
        3: ("template", "PodTemplateSpec", False),
        5: ("minReadySeconds", "int", False),
        6: ("revisionHistoryLimit", "int", False),
        7: ("paused", "bool", False),
        9: ("progressDeadlineSeconds", "int", False),
    },
    "LabelSelector": {1: ("matchLabels", "map:str", False)},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "PodSpec", False)},
    "PodSpec": {
        2: ("containers", "Container", True),
        3: ("restartPolicy", "str", False),
        4: ("terminationGracePeriodSeconds", "int", False),
        5: ("activeDeadlineSeconds", "int", False),
        6: ("dnsPolicy", "str", False),
        7: ("nodeSelector", "map:str", False),
        8: ("serviceAccountName", "str", False),
        10: ("nodeName", "str", False),
        20: ("initContainers", "Container", True),
    },
    "Container": {
        1: ("name", "str", False),
        2: ("image", "str", False),
        3: ("command", "str", True),
        4: ("args", "str", True),
        5: ("workingDir", "str", False),
        6: ("ports", "ContainerPort", True),
        7: ("env", "EnvVar", True),
        8: ("resources", "ResourceRequirements", False),
        14: ("imagePullPolicy", "str", False),
        16: ("stdin", "bool", False),
        18: ("tty", "bool", False),
    },
    "ContainerPort": {
        1: ("name", "str", False),
        2: ("hostPort", "int", False),
        3: ("containerPort", "int", False),
        4: ("protocol", "str", False),
    },
    "EnvVar": {1: ("name", "str", False), 2: ("value", "str", False)},
    "ResourceRequirements": {1: ("limits", "map:Quantity", False), 2: ("requests", "map:Quantity", False)},
}


def _varint(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(b):
            raise ProtobufError("truncated varint")
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return result, i


def _fields(b: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) in order."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        v: int | bytes
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ProtobufError("truncated field")
            v, i = b[i : i + n], i + n
        elif wt == 1:
            v, i = b[i : i + 8], i + 8
        elif wt == 5:
            v, i = b[i : i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


def _map_entry(raw: bytes, value_type: str) -> tuple[str, Any]:
    key, value = "", None
    for num, _, v in _fields(raw):
        if num == 1:
            key = v.decode()
        elif num == 2:
            if value_type == "bytes":
                value = base64.b64encode(v).decode()
            elif value_type == "Quantity":
                value = next((x.decode() for n, _, x in _fields(v) if n == 1), "")
            else:
                value = v.decode()
    return key, "" if value is None else value


def _message(raw: bytes, name: str) -> dict[str, Any]:
    schema = SCHEMAS[name]
    out: dict[str, Any] = {}
    for num, _wt, v in _fields(raw):
        spec = schema.get(num)
        if spec is None:
            continue
        key, typ, repeated = spec
        if typ.startswith("map:"):
            k, val = _map_entry(v, typ[4:])
            out.setdefault(key, {})[k] = val
            continue
        if typ == "str":
            value: Any = v.decode()
        elif typ == "bytes":
            value = base64.b64encode(v).decode()
        elif typ == "int":
            value = v if v < (1 << 63) else v - (1 << 64)
        elif typ == "bool":
            value = bool(v)
        else:
            value = _message(v, typ)
        if repeated:
            out.setdefault(key, []).append(value)
        elif value not in ("", 0, {}):  # omitempty (False == 0 is dropped too)
            out[key] = value
    return {k: v for k, v in out.items() if v not in ("", {}, [])}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body (missing magic prefix)")
    api_version = kind = ""
    raw = b""
    for num, _, v in _fields(body[len(MAGIC) :]):
        if num == 1:
            for n, _, x in _fields(v):
                if n == 1:
                    api_version = x.decode()
                elif n == 2:
                    kind = x.decode()
        elif num == 2:
            raw = v
    if kind not in SCHEMAS:
        raise ProtobufError(f"kubesim cannot read protobuf {kind or 'objects'}; send JSON")
    obj = _message(raw, kind)
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    obj.setdefault("metadata", {})
    return obj
