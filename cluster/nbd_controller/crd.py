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
    DEFAULT_MASTER_PORT,
    DEFAULT_OUTPUTS,
    DEFAULT_OUTPUTS_SIZE,
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    DURATION,
    ENV_NAME,
    ENV_NAME_MAX,
    GPU_COUNT_DEFAULT,
    GPU_COUNT_MAX,
    GPU_TYPE_MAX,
    GROUP,
    IMAGE_MIN,
    KIND,
    LABEL_KEY,
    LABEL_VALUE,
    LABEL_VALUE_MAX,
    LIST_KIND,
    MD5,
    PHASES,
    PLURAL,
    PORT_MAX,
    PORT_MIN,
    PRIORITY_CLASS_NAME,
    REQUEST_ID_MAX,
    RUN_COMMAND_MIN,
    RUN_KIND,
    RUN_LIST_KIND,
    RUN_NAME,
    RUN_NODES_DEFAULT,
    RUN_NODES_MAX,
    RUN_PHASES,
    RUN_PLURAL,
    RUN_SHORT_NAMES,
    RUN_SINGULAR,
    SHORT_NAMES,
    SINGULAR,
    TAINT_EFFECTS,
    TOLERATION_OPERATORS,
    VERSION,
    WORKDIR,
)

__all__ = ["notebook_crd", "run_crd", "crd_yaml", "PHASES", "CONDITION_TYPES"]

_QUANTITY: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}


def _image_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": IMAGE_MIN,
        "description": "A prebuilt image: no upload and no build happen.",
    }


def _build_schema() -> dict[str, Any]:
    return {
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
    }


def _resources_schema() -> dict[str, Any]:
    return {
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
    }


def _env_schema() -> dict[str, Any]:
    return {
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
    }


def _placement_schema() -> dict[str, Any]:
    """spec.tolerations, spec.nodeSelector and spec.priorityClassName: merged by the controller with
    the cluster's defaults (nbd-config) and put on the pod as they are."""
    return {
        "tolerations": {
            "type": "array",
            "description": "Added to the cluster's default tolerations (a GPU request also tolerates the GPU taint).",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "pattern": LABEL_KEY.pattern},
                    "operator": {"type": "string", "enum": list(TOLERATION_OPERATORS)},
                    "value": {"type": "string", "pattern": LABEL_VALUE.pattern, "maxLength": LABEL_VALUE_MAX},
                    "effect": {"type": "string", "enum": list(TAINT_EFFECTS)},
                    "tolerationSeconds": {"type": "integer"},
                },
            },
        },
        "nodeSelector": {
            "type": "object",
            "description": "Node labels the pod needs; a key here overrides the cluster default's.",
            "additionalProperties": {
                "type": "string",
                "pattern": LABEL_VALUE.pattern,
                "maxLength": LABEL_VALUE_MAX,
            },
        },
        "priorityClassName": {
            "type": "string",
            "pattern": PRIORITY_CLASS_NAME.pattern,
            "description": "The pod's PriorityClass; default: the cluster's (nbd-config).",
        },
    }


def _workdir_schema() -> dict[str, Any]:
    return {"type": "string", "pattern": WORKDIR.pattern, "default": DEFAULT_WORKDIR}


def _spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What the notebook runs. Set either image (prebuilt) or build.upload.",
        "properties": {
            "image": _image_schema(),
            "build": _build_schema(),
            "resources": _resources_schema(),
            "env": _env_schema(),
            "command": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Replaces the default Jupyter server command.",
            },
            "workdir": _workdir_schema(),
            "port": {"type": "integer", "minimum": PORT_MIN, "maximum": PORT_MAX, "default": DEFAULT_PORT},
            "suspend": {"type": "boolean", "default": False},
            "idle": _idle_schema(),
            **_placement_schema(),
        },
    }


def _idle_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Idle auto-stop: suspend the notebook once it has been idle this long.",
        "properties": {
            "stopAfter": {
                "type": "string",
                "pattern": DURATION.pattern,
                "description": (
                    'A duration such as "2h", "90m" or "1h30m"; "0" never stops it. Unset: the '
                    "cluster's default (NBD_IDLE_STOP_AFTER)."
                ),
            }
        },
    }


def _idle_status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "stopAfter": {"type": "string"},
            "lastActivity": {"type": "string", "format": "date-time"},
            "stopAt": {"type": "string", "format": "date-time"},
            "busy": {"type": "boolean"},
            "message": {"type": "string"},
        },
    }


def _upload_status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "requestID": {"type": "string"},
            "signedURL": {"type": "string"},
            "expiresAt": {"type": "string", "format": "date-time"},
            "storedMD5": {"type": "string"},
        },
    }


def _build_status_schema() -> dict[str, Any]:
    return {
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
    }


def _conditions_schema() -> dict[str, Any]:
    return {
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
    }


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES)},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "upload": _upload_status_schema(),
            "build": _build_status_schema(),
            "image": {"type": "string", "description": "The image the notebook Pod runs."},
            "pod": {"type": "string"},
            "tokenSecret": {"type": "string"},
            "idle": _idle_status_schema(),
            "conditions": _conditions_schema(),
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


def _run_spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What the run runs. Set either image (prebuilt) or build.upload.",
        "required": ["command"],
        "properties": {
            "image": _image_schema(),
            "build": _build_schema(),
            "resources": _resources_schema(),
            "env": _env_schema(),
            "command": {
                "type": "array",
                "minItems": RUN_COMMAND_MIN,
                "items": {"type": "string"},
                "description": "The command every node runs in workdir (no shell unless it names one).",
            },
            "workdir": _workdir_schema(),
            **_placement_schema(),
            "nodes": {
                "type": "integer",
                "minimum": 1,
                "maximum": RUN_NODES_MAX,
                "default": RUN_NODES_DEFAULT,
                "description": "Pods of the run (ranks); more than one makes an Indexed Job.",
            },
            "masterPort": {
                "type": "integer",
                "minimum": PORT_MIN,
                "maximum": PORT_MAX,
                "default": DEFAULT_MASTER_PORT,
                "description": "Where rank 0 listens (MASTER_PORT).",
            },
            "outputs": {
                "type": "object",
                "default": {},
                "description": "The PersistentVolumeClaim the run writes its results to.",
                "properties": {
                    "path": {"type": "string", "pattern": WORKDIR.pattern, "default": DEFAULT_OUTPUTS},
                    "size": {**_QUANTITY, "default": DEFAULT_OUTPUTS_SIZE},
                    "storageClass": {"type": "string", "minLength": 1, "maxLength": 253},
                },
            },
            "ttlSecondsAfterFinished": {
                "type": "integer",
                "minimum": 0,
                "description": "Delete the Job (not the Run, not its outputs) this long after it finished.",
            },
            "activeDeadlineSeconds": {
                "type": "integer",
                "minimum": 1,
                "description": "Stop the run after this long (reason DeadlineExceeded).",
            },
            "stop": {"type": "boolean", "default": False, "description": "Stop the run (phase Stopped)."},
            "fetch": {
                "type": "object",
                "required": ["requestID"],
                "description": "Ask for a pod that mounts the outputs read-only (status.fetch).",
                "properties": {"requestID": {"type": "string", "minLength": 1, "maxLength": REQUEST_ID_MAX}},
            },
        },
    }


def _run_status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(RUN_PHASES)},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "upload": _upload_status_schema(),
            "build": _build_status_schema(),
            "image": {"type": "string", "description": "The image the run's pods run."},
            "job": {"type": "string"},
            "service": {"type": "string", "description": "The headless Service (nodes > 1)."},
            "masterAddr": {"type": "string", "description": "MASTER_ADDR as the pods get it."},
            "outputsClaim": {"type": "string"},
            "startTime": {"type": "string", "format": "date-time"},
            "completionTime": {"type": "string", "format": "date-time"},
            "exitCode": {"type": "integer"},
            "failedRank": {"type": "integer"},
            "ranks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "pod": {"type": "string"},
                        "phase": {"type": "string"},
                        "exitCode": {"type": "integer"},
                    },
                },
            },
            "message": {"type": "string"},
            "fetch": {
                "type": "object",
                "properties": {
                    "requestID": {"type": "string"},
                    "pod": {"type": "string"},
                    "ready": {"type": "boolean"},
                    "message": {"type": "string"},
                },
            },
            "conditions": _conditions_schema(),
        },
    }


def run_crd() -> dict[str, Any]:
    """The Run CRD object for `kubectl apply`."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{RUN_PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": RUN_KIND,
                "listKind": RUN_LIST_KIND,
                "plural": RUN_PLURAL,
                "singular": RUN_SINGULAR,
                "shortNames": list(RUN_SHORT_NAMES),
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
                        {"name": "Nodes", "type": "integer", "jsonPath": ".spec.nodes"},
                        {"name": "GPU", "type": "integer", "jsonPath": ".spec.resources.gpu.count"},
                        {"name": "Exit", "type": "integer", "jsonPath": ".status.exitCode"},
                        {"name": "Job", "type": "string", "jsonPath": ".status.job", "priority": 1},
                        {"name": "Image", "type": "string", "jsonPath": ".status.image", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A command run as a Job (one node or many) from an uploaded directory.",
                            "required": ["spec"],
                            # Its name is also a Service's (a DNS-1035 label) and the stem of the
                            # pods' hostnames; the controller checks it too (InvalidName).
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"self.metadata.name.matches('{RUN_NAME.pattern}')",
                                    "message": (
                                        "a Run name starts with a letter, has at most 60 lowercase "
                                        "letters, digits and '-', and ends with a letter or digit"
                                    ),
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _run_spec_schema(),
                                "status": _run_status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


# The generated files of cluster/manifests/, by the argument of `python -m nbd_controller.crd`.
CRDS = {"notebook": ("crd.yaml", notebook_crd), "run": ("run-crd.yaml", run_crd)}


def main() -> None:
    """Prints a CRD as YAML: `python -m nbd_controller.crd [notebook|run]` (how
    cluster/manifests/crd.yaml and run-crd.yaml are generated)."""
    which = sys.argv[1] if len(sys.argv) > 1 else "notebook"
    if which not in CRDS:
        sys.exit(f"usage: python -m nbd_controller.crd [{'|'.join(CRDS)}]")
    sys.stdout.write(crd_yaml(which))


def crd_yaml(which: str = "notebook") -> str:
    """The committed `crd.yaml` (or `run-crd.yaml`), byte for byte.

    The schema reuses one dict in several places; PyYAML would write those as anchors and aliases
    (`&id001` / `*id001`), which kustomize before 4.4 rejects. So every node is written out in full.
    """
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    builder = CRDS[which][1]
    header = f"# Generated by `python -m nbd_controller.crd {which}`: edit cluster/nbd_controller/crd.py.\n"
    if which == "notebook":
        header = "# Generated by `python -m nbd_controller.crd`: edit cluster/nbd_controller/crd.py.\n"
    return header + yaml.dump(builder(), Dumper=_NoAliases, sort_keys=False, width=110)


if __name__ == "__main__":
    main()
