"""The Notebook contract: what a `Notebook` is, written once for every side that reads or writes one.

The daemon writes Notebooks and finds what the controller made for them; the controller reads them
and makes their token Secret, build Job and Pod; the CRD makes the API server refuse what neither
would accept. All three import this module, so the group, the labels that find a pod, the key of the
token and the rules a spec must follow cannot disagree: a spec the daemon accepts before packaging
is a spec the API server accepts after it. (They once disagreed on environment variable names, and
a launch with `A.B` was refused with a 422 only after its directory was packaged.)

Patterns are given as the strings the CRD publishes (anchored, since an OpenAPI `pattern` is
searched, not matched) and compiled from those very strings for the Python side; the `valid_*`
functions are the checks to call, so a bound written next to a pattern is never forgotten.

Standard library only: the CLI's daemon and the controller's image both carry it.
"""

from __future__ import annotations

import re

__all__ = [
    "GROUP",
    "VERSION",
    "API_VERSION",
    "KIND",
    "LIST_KIND",
    "PLURAL",
    "SINGULAR",
    "SHORT_NAMES",
    "CATEGORIES",
    "LABEL_NOTEBOOK",
    "LABEL_REQUESTED_BY",
    "LABEL_COMPONENT",
    "LABEL_CONTEXT_MD5",
    "LABEL_MANAGED_BY",
    "COMPONENT_NOTEBOOK",
    "COMPONENT_BUILD",
    "MANAGED_BY_DAEMON",
    "MANAGED_BY_CONTROLLER",
    "NOTEBOOK_CONTAINER",
    "ANNOTATION_LOCAL_DIRECTORY",
    "ANNOTATION_WRITTEN_BY",
    "ANNOTATION_DELETED_BY",
    "ANNOTATION_SPEC_HASH",
    "ANNOTATION_IMAGE",
    "ANNOTATION_ABOUT",
    "TOKEN_KEY",
    "PHASES",
    "CONDITION_UPLOADED",
    "CONDITION_BUILT",
    "CONDITION_READY",
    "CONDITION_TYPES",
    "DNS_LABEL_MAX",
    "NOTEBOOK_NAME",
    "MD5",
    "ENV_NAME",
    "ENV_NAME_MAX",
    "WORKDIR",
    "GPU_COUNT_MAX",
    "GPU_COUNT_DEFAULT",
    "GPU_TYPE_MAX",
    "PORT_MIN",
    "PORT_MAX",
    "DEFAULT_PORT",
    "DEFAULT_WORKDIR",
    "IMAGE_MIN",
    "REQUEST_ID_MAX",
    "valid_notebook_name",
    "valid_env_name",
    "valid_workdir",
    "valid_gpu_count",
    "valid_gpu_type",
    "valid_port",
]

# --- the resource ------------------------------------------------------------------------------

GROUP = "nbd.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Notebook"
LIST_KIND = f"{KIND}List"
PLURAL = "notebooks"
SINGULAR = "notebook"
SHORT_NAMES = ("nb",)
CATEGORIES = ("nbd",)

# --- labels ------------------------------------------------------------------------------------

# The daemon finds the notebook pod (port-forward, exec) by this label: its value is the Notebook name.
LABEL_NOTEBOOK = "nbd.dev/notebook"
# On build Jobs and their pods: the Notebook whose reconcile created the Job. Deliberately not
# LABEL_NOTEBOOK, so that selecting `nbd.dev/notebook=NAME` finds the notebook Pod and never a build pod.
LABEL_REQUESTED_BY = "nbd.dev/requested-by"
# COMPONENT_NOTEBOOK on the notebook Pod and token Secret, COMPONENT_BUILD on build Jobs and their pods.
LABEL_COMPONENT = "nbd.dev/component"
COMPONENT_NOTEBOOK = "notebook"
COMPONENT_BUILD = "build"
# On build Jobs and their pods: the context MD5 being built.
LABEL_CONTEXT_MD5 = "nbd.dev/context-md5"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
# The Notebook itself is the daemon's; what the controller creates for it is the controller's.
MANAGED_BY_DAEMON = "nbd"
MANAGED_BY_CONTROLLER = "nbd-controller"

# The notebook Pod's container that runs Jupyter. The daemon reads its containerID to tell one
# container instance from the next (a restart starts from the image again).
NOTEBOOK_CONTAINER = "notebook"

# --- annotations -------------------------------------------------------------------------------

# On the Notebook: the directory it was launched from, as the launching machine names it.
ANNOTATION_LOCAL_DIRECTORY = "nbd.dev/local-directory"
# On the Notebook: the nbd daemon that last wrote its spec (user@host#id; every nbd write sets it),
# so a daemon following the same Notebook tells its own writes from another daemon's.
ANNOTATION_WRITTEN_BY = "nbd.dev/written-by"
# On the Notebook, written right before an nbd deletes it: which daemon deleted it (a DELETED
# watch event carries the object's last state, so followers can name the deleter).
ANNOTATION_DELETED_BY = "nbd.dev/deleted-by"
# On the notebook Pod: a digest of what the controller wants of it; a Pod whose digest differs is replaced.
ANNOTATION_SPEC_HASH = "nbd.dev/spec-hash"
# On a build Job: the image it builds.
ANNOTATION_IMAGE = "nbd.dev/image"
# On the controller's own objects (the record of built contexts): what the object is for.
ANNOTATION_ABOUT = "nbd.dev/about"

# The key of the Jupyter token in the token Secret.
TOKEN_KEY = "token"

# --- status ------------------------------------------------------------------------------------

PHASES = ("Pending", "Uploading", "Building", "Starting", "Ready", "Suspended", "Failed")
CONDITION_UPLOADED = "Uploaded"
CONDITION_BUILT = "Built"
CONDITION_READY = "Ready"
CONDITION_TYPES = (CONDITION_UPLOADED, CONDITION_BUILT, CONDITION_READY)

# --- spec rules --------------------------------------------------------------------------------

# Object names derived from a Notebook (its Pod, its Secret) are DNS-1123 labels, so the Notebook's
# name is one too: lowercase alphanumerics and '-', starting and ending with an alphanumeric.
DNS_LABEL_MAX = 63
NOTEBOOK_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The MD5 of a build context: 32 lowercase hex digits.
MD5 = re.compile(r"^[0-9a-f]{32}$")
# spec.env[].name: a C identifier, as a shell can export it (no '.', no '-').
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_MAX = 256
# spec.workdir: an absolute path in the container.
WORKDIR = re.compile(r"^/")
# spec.resources.gpu: how many GPUs (a count of 0 asks for none) and which product (a node selector).
GPU_COUNT_MAX = 64
GPU_COUNT_DEFAULT = 1
GPU_TYPE_MAX = 63
# spec.port: where Jupyter listens in the pod.
PORT_MIN = 1
PORT_MAX = 65535
DEFAULT_PORT = 8888
DEFAULT_WORKDIR = "/content"
# spec.image: a prebuilt image, non-empty when given.
IMAGE_MIN = 1
# spec.build.upload.requestID and spec.build.uploaded.
REQUEST_ID_MAX = 128


def valid_notebook_name(name: str) -> bool:
    """A Notebook name every derived object name can be built from."""
    return len(name) <= DNS_LABEL_MAX and NOTEBOOK_NAME.fullmatch(name) is not None


def valid_env_name(name: str) -> bool:
    """The API server's rule for spec.env[].name (pattern and length)."""
    # fullmatch, not match: Python's `$` also matches before a final newline, the API server's does not.
    return len(name) <= ENV_NAME_MAX and ENV_NAME.fullmatch(name) is not None


def valid_workdir(path: str) -> bool:
    return WORKDIR.match(path) is not None


def valid_gpu_count(count: int) -> bool:
    return 0 <= count <= GPU_COUNT_MAX


def valid_gpu_type(product: str) -> bool:
    return len(product) <= GPU_TYPE_MAX


def valid_port(port: int) -> bool:
    return PORT_MIN <= port <= PORT_MAX
