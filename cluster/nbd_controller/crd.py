"""The Notebook CustomResourceDefinition, built as data.

`cluster/manifests/crd.yaml` is generated from `notebook_crd()` (`python -m nbd_controller.crd`) and a
test fails when the committed file drifts, so the schema has one source. Every name, pattern, bound
and default in it comes from `nbdcontract`, whose checks the daemon runs before it packages anything:
what the daemon accepts, the API server accepts.
"""

from __future__ import annotations

import sys
from typing import Any

from nbdcontract import (
    CATEGORIES,
    CONDITION_TYPES,
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    ENV_NAME,
    ENV_NAME_MAX,
    GPU_COUNT_DEFAULT,
    GPU_COUNT_MAX,
    GPU_TYPE_MAX,
    GROUP,
    IMAGE_MIN,
    KIND,
    LIST_KIND,
    MD5,
    PHASES,
    PLURAL,
    PORT_MAX,
    PORT_MIN,
    REQUEST_ID_MAX,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    WORKDIR,
)

__all__ = ["notebook_crd", "PHASES", "CONDITION_TYPES"]

_QUANTITY: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}


def _spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What the notebook runs. Set either image (prebuilt) or build.upload.",
        "properties": {
            "image": {
                "type": "string",
                "minLength": IMAGE_MIN,
                "description": "A prebuilt image: no upload and no build happen.",
            },
            "build": {
                "type": "object",
                "description": "Build the image from an uploaded context (a tar.gz with a Dockerfile).",
                "properties": {
                    "upload": {
                        "type": "object",
                        "required": ["md5", "requestID"],
                        "properties": {
                            "md5": {
                                "type": "string",
                                "pattern": MD5.pattern,
                                "description": "MD5 of the context tar.gz, 32 lowercase hex digits.",
                            },
                            "requestID": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": REQUEST_ID_MAX,
                                "description": "Changes whenever a new signed upload URL is wanted.",
                            },
                        },
                    },
                    "uploaded": {
                        "type": "string",
                        "maxLength": REQUEST_ID_MAX,
                        "description": (
                            "Set by the uploader to upload.requestID once its PUT succeeded: the "
                            "controller then verifies the stored object and builds it."
                        ),
                    },
                    "rebuild": {
                        "type": "string",
                        "maxLength": REQUEST_ID_MAX,
                        "description": (
                            "Set to upload.requestID to build the context again although it was built "
                            "(once per requestID, taking nothing from the layer cache)."
                        ),
                    },
                },
            },
            "resources": {
                "type": "object",
                "properties": {
                    "gpu": {
                        "type": "object",
                        "properties": {
                            "count": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": GPU_COUNT_MAX,
                                "default": GPU_COUNT_DEFAULT,
                            },
                            "type": {
                                "type": "string",
                                "maxLength": GPU_TYPE_MAX,
                                "description": "GPU product; becomes a node selector.",
                            },
                        },
                    },
                    "cpu": dict(_QUANTITY),
                    "memory": dict(_QUANTITY),
                },
            },
            "env": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": ENV_NAME.pattern, "maxLength": ENV_NAME_MAX},
                        "value": {"type": "string", "default": ""},
                    },
                },
            },
            "command": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Replaces the default Jupyter server command.",
            },
            "workdir": {"type": "string", "pattern": WORKDIR.pattern, "default": DEFAULT_WORKDIR},
            "port": {"type": "integer", "minimum": PORT_MIN, "maximum": PORT_MAX, "default": DEFAULT_PORT},
            "suspend": {"type": "boolean", "default": False},
        },
    }


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES)},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "upload": {
                "type": "object",
                "properties": {
                    "requestID": {"type": "string"},
                    "signedURL": {"type": "string"},
                    "expiresAt": {"type": "string", "format": "date-time"},
                    "storedMD5": {"type": "string"},
                },
            },
            "build": {
                "type": "object",
                "properties": {
                    "md5": {"type": "string"},
                    "image": {"type": "string"},
                    "job": {"type": "string"},
                    "failedJobUID": {"type": "string", "description": "The failed build Job reported."},
                    "failedRequestID": {"type": "string", "description": "The request that saw it fail."},
                    "rebuiltRequestID": {
                        "type": "string",
                        "description": "The request whose rebuild started.",
                    },
                },
            },
            "image": {"type": "string", "description": "The image the notebook Pod runs."},
            "pod": {"type": "string"},
            "tokenSecret": {"type": "string"},
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
                    "properties": {
                        "type": {"type": "string", "maxLength": 316},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string", "maxLength": 1024},
                        "message": {"type": "string", "maxLength": 32768},
                    },
                },
            },
        },
    }


def notebook_crd() -> dict[str, Any]:
    """The CRD object for `kubectl apply`."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "GPU", "type": "integer", "jsonPath": ".spec.resources.gpu.count"},
                        {
                            "name": "GPU-Type",
                            "type": "string",
                            "jsonPath": ".spec.resources.gpu.type",
                            "priority": 1,
                        },
                        {"name": "Pod", "type": "string", "jsonPath": ".status.pod"},
                        {"name": "Image", "type": "string", "jsonPath": ".status.image", "priority": 1},
                        {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Jupyter notebook run from an uploaded directory or an image.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def main() -> None:
    """Prints the CRD as YAML (how cluster/manifests/crd.yaml is generated)."""
    sys.stdout.write(crd_yaml())


def crd_yaml() -> str:
    """The committed `crd.yaml`, byte for byte.

    The schema reuses one dict in several places; PyYAML would write those as anchors and aliases
    (`&id001` / `*id001`), which kustomize before 4.4 rejects. So every node is written out in full.
    """
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    header = "# Generated by `python -m nbd_controller.crd`: edit cluster/nbd_controller/crd.py.\n"
    return header + yaml.dump(notebook_crd(), Dumper=_NoAliases, sort_keys=False, width=110)


if __name__ == "__main__":
    main()
