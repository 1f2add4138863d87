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
    "LABEL_FOR_NAMESPACE",
    "LABEL_MANAGED_BY",
    "COMPONENT_NOTEBOOK",
    "COMPONENT_BUILD",
    "COMPONENT_WORKSPACE",
    "ANNOTATION_ACTIVITY",
    "ANNOTATION_IDLE_STOPPED",
    "REASON_IDLE_STOPPED",
    "DURATION",
    "duration_seconds",
    "human_duration",
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
    "LABEL_KEY",
    "LABEL_VALUE",
    "LABEL_VALUE_MAX",
    "PRIORITY_CLASS_NAME",
    "TOLERATION_OPERATORS",
    "TAINT_EFFECTS",
    "toleration_problem",
    "label_key_problem",
    "label_value_problem",
    "priority_class_problem",
    "REASON_WAITING_FOR_NODE",
    "REASON_UNSCHEDULABLE",
    "valid_notebook_name",
    "valid_env_name",
    "valid_workdir",
    "valid_gpu_count",
    "valid_gpu_type",
    "valid_port",
    "RUN_KIND",
    "RUN_LIST_KIND",
    "RUN_PLURAL",
    "RUN_SINGULAR",
    "RUN_SHORT_NAMES",
    "LABEL_RUN",
    "LABEL_REQUESTED_BY_KIND",
    "LABEL_COMPLETION_INDEX",
    "COMPONENT_RUN",
    "COMPONENT_OUTPUTS",
    "RUN_CONTAINER",
    "RUN_PHASES",
    "RUN_PHASES_FINISHED",
    "CONDITION_STARTED",
    "CONDITION_FINISHED",
    "RUN_CONDITION_TYPES",
    "RUN_NODES_MAX",
    "RUN_NODES_DEFAULT",
    "DEFAULT_MASTER_PORT",
    "DEFAULT_OUTPUTS",
    "DEFAULT_OUTPUTS_SIZE",
    "RUN_ENV",
    "valid_run_nodes",
    "RUN_NAME",
    "RUN_NAME_MAX",
    "valid_run_name",
    "RUN_COMMAND_MIN",
    "ANNOTATION_COMPLETION_INDEX",
    "ANNOTATION_FETCH_REQUEST",
    "RUN_REASONS_TERMINAL",
    "RUN_TORCHRUN_ENV",
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
# On the notebook's workspace PersistentVolumeClaim (with LABEL_NOTEBOOK), when spec.workspace asks for one.
COMPONENT_WORKSPACE = "workspace"
# On build Jobs and their pods: the context MD5 being built.
LABEL_CONTEXT_MD5 = "nbd.dev/context-md5"
# On a build Job in the admin's separate build namespace: the namespace it builds for.
LABEL_FOR_NAMESPACE = "nbd.dev/for-namespace"
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

# spec.nodeSelector, spec.tolerations, spec.priorityClassName: placement, with the API server's own
# rules for label keys and values (a qualified name with an optional DNS-subdomain prefix), for
# tolerations (an empty key needs `Exists`; `Exists` takes no value) and for object names.
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_PREFIX_MAX = 253
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
LABEL_VALUE_MAX = 63
PRIORITY_CLASS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
TOLERATION_OPERATORS = ("Exists", "Equal")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")

# Reasons of Ready=False (Notebook) and Started=False (Run) while the pod has no node: the first is
# a wait (the autoscaler adds a node, or the nodes that fit are busy), the second a verdict (no node
# and no node pool can ever run the pod as asked).
REASON_WAITING_FOR_NODE = "WaitingForNode"
REASON_UNSCHEDULABLE = "Unschedulable"


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


def label_key_problem(key: object) -> str | None:
    """Why `key` is not a label key the API server accepts (None: it is one)."""
    if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
        return f"{key!r} is not a label key (e.g. cloud.google.com/gke-accelerator)"
    prefix, _, _ = key.rpartition("/")
    if len(prefix) > LABEL_KEY_PREFIX_MAX:
        return f"the prefix of label key {key!r} is longer than {LABEL_KEY_PREFIX_MAX} characters"
    return None


def label_value_problem(value: object) -> str | None:
    """Why `value` is not a label value (at most 63 characters of [-A-Za-z0-9_.], alphanumeric ends)."""
    if not isinstance(value, str) or len(value) > LABEL_VALUE_MAX or not LABEL_VALUE.fullmatch(value):
        return (
            f"{value!r} is not a label value (at most {LABEL_VALUE_MAX} letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit)"
        )
    return None


def priority_class_problem(name: object) -> str | None:
    if not isinstance(name, str) or not PRIORITY_CLASS_NAME.fullmatch(name):
        return f"{name!r} is not a PriorityClass name (lowercase letters, digits, '-' and '.')"
    return None


def toleration_problem(toleration: object) -> str | None:
    """Why `toleration` is not one the API server accepts in a pod (None: it is one)."""
    if not isinstance(toleration, dict):
        return f"a toleration must be a mapping with key, operator, value, effect, not {toleration!r}"
    unknown = sorted(set(toleration) - set(_TOLERATION_KEYS))
    if unknown:
        return f"unknown toleration field(s) {', '.join(map(str, unknown))}; allowed: {', '.join(_TOLERATION_KEYS)}"
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    value = toleration.get("value") or ""
    effect = toleration.get("effect") or ""
    if operator not in TOLERATION_OPERATORS:
        return f"toleration operator {operator!r} must be one of {', '.join(TOLERATION_OPERATORS)}"
    if key:
        problem = label_key_problem(key)
        if problem is not None:
            return f"toleration key {problem}"
    elif operator != "Exists":
        return "a toleration without a key must have operator Exists (it then tolerates every taint)"
    if operator == "Exists" and value:
        return f"a toleration with operator Exists takes no value (got {value!r})"
    if value:
        problem = label_value_problem(value)
        if problem is not None:
            return f"toleration value {problem}"
    if effect and effect not in TAINT_EFFECTS:
        return f"toleration effect {effect!r} must be one of {', '.join(TAINT_EFFECTS)} (or empty for all)"
    seconds = toleration.get("tolerationSeconds")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            return f"tolerationSeconds must be a whole number, got {seconds!r}"
        if effect != "NoExecute":
            return "tolerationSeconds only applies to effect NoExecute"
    return None


# --- idle auto-stop ------------------------------------------------------------------------------
#
# spec.idle.stopAfter (a duration such as "2h", "90m", "1h30m"; "0" turns it off) suspends a notebook
# that stays idle that long: the controller sets spec.suspend and ANNOTATION_IDLE_STOPPED, and the
# Ready condition's reason is REASON_IDLE_STOPPED. The controller's NBD_IDLE_STOP_AFTER is the
# default of a spec that sets none. The daemon refreshes ANNOTATION_ACTIVITY (an RFC 3339 time) while
# a connection through its forward is open or the sync moves files: activity Jupyter cannot see.

ANNOTATION_ACTIVITY = "nbd.dev/activity"
# Set with spec.suspend by an idle stop: how long the notebook was idle, as DURATION text ("2h3m").
ANNOTATION_IDLE_STOPPED = "nbd.dev/idle-stopped"
REASON_IDLE_STOPPED = "IdleStopped"
DURATION = re.compile(r"^(?:0|(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?)$")
DURATION_MAX_SECONDS = 366 * 24 * 3600


def duration_seconds(text: object) -> int:
    """Seconds of a duration ("2h", "90m", "1h30m", "45s", "0"); raises ValueError naming the form."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"{text!r} is not a duration (e.g. 2h, 90m, 1h30m; 0 turns it off)")
    if isinstance(text, int):
        if text != 0:
            raise ValueError(f"{text!r} needs a unit (e.g. 2h, 90m, 45s); 0 alone turns it off")
        seconds = 0
    else:
        match = DURATION.fullmatch(text.strip())
        if match is None or text.strip() == "":
            raise ValueError(f"{text!r} is not a duration (e.g. 2h, 90m, 1h30m; 0 turns it off)")
        h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if not 0 <= seconds <= DURATION_MAX_SECONDS:
        raise ValueError(f"{text!r} is out of range (0 to 366 days)")
    return seconds


def human_duration(seconds: float) -> str:
    """A duration as a person reads it, to the minute past an hour: 7380 -> "2h3m", 95 -> "1m35s"."""
    total = max(0, int(seconds))
    if total == 0:
        return "0"
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "")
    if s and h == 0:
        out += f"{s}s"
    return out or "0"


# --- the Run: the same content and image as a training job ---------------------------------------
#
# A Run shares the group, the spec rules (resources, env, workdir, build.upload) and the build path
# with Notebook: one build per context MD5 per namespace, whichever kind asked for it. Its spec adds
# `command` (required), `nodes`, `masterPort`, `outputs: {path, size, storageClass}`,
# `ttlSecondsAfterFinished` and `stop`. The controller makes one Job per Run (an Indexed Job of
# `nodes` completions and as many in parallel, with a headless Service named after the Run when
# nodes > 1) and a PersistentVolumeClaim for its outputs, which outlives the Job's pods.

RUN_KIND = "Run"
RUN_LIST_KIND = f"{RUN_KIND}List"
RUN_PLURAL = "runs"
RUN_SINGULAR = "run"
RUN_SHORT_NAMES = ("nbrun",)

# On a Run's Job, its pods, its Service and its outputs claim: the Run's name.
LABEL_RUN = "nbd.dev/run"
# On build Jobs and their pods, beside LABEL_REQUESTED_BY: the kind ("Notebook" or "Run") whose
# reconcile created the Job. A build Job without it was requested by a Notebook.
LABEL_REQUESTED_BY_KIND = "nbd.dev/requested-by-kind"
# The Job controller's label (and annotation) on an Indexed Job's pods: the completion index, which
# is the rank of the node.
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPONENT_RUN = "run"
COMPONENT_OUTPUTS = "outputs"
# The container of a run's pod that runs the command; its exit code is the run's.
RUN_CONTAINER = "run"

RUN_PHASES = ("Pending", "Uploading", "Building", "Starting", "Running", "Succeeded", "Failed", "Stopped")
RUN_PHASES_FINISHED = ("Succeeded", "Failed", "Stopped")
CONDITION_STARTED = "Started"
CONDITION_FINISHED = "Finished"
RUN_CONDITION_TYPES = (CONDITION_UPLOADED, CONDITION_BUILT, CONDITION_STARTED, CONDITION_FINISHED)

RUN_NODES_MAX = 64
RUN_NODES_DEFAULT = 1
# Where rank 0 listens for the others (torchrun's default rendezvous port).
DEFAULT_MASTER_PORT = 29500
DEFAULT_OUTPUTS = "/content/outputs"
DEFAULT_OUTPUTS_SIZE = "10Gi"

# The environment every pod of a run gets, as torchrun reads it: rank 0's stable DNS name and
# port, the number of nodes, this node's rank (the completion index) and the GPUs per node.
RUN_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "NPROC_PER_NODE")


def valid_run_nodes(nodes: int) -> bool:
    return 1 <= nodes <= RUN_NODES_MAX


# torchrun reads its options from PET_<OPTION> when they are not on its command line: each pod also
# gets these, equal to the variable named, so a bare `torchrun train.py` joins the others.
RUN_TORCHRUN_ENV = {
    "PET_NNODES": "WORLD_SIZE",
    "PET_NODE_RANK": "NODE_RANK",
    "PET_MASTER_ADDR": "MASTER_ADDR",
    "PET_MASTER_PORT": "MASTER_PORT",
    "PET_NPROC_PER_NODE": "NPROC_PER_NODE",
}

# A Run's name is also its Job's, its headless Service's (a DNS-1035 label: it starts with a letter)
# and the stem of its pods' hostnames `NAME-INDEX` (at most 63 characters with the index).
RUN_NAME_MAX = 60
RUN_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,58}[a-z0-9])?$")
# spec.command: at least one word.
RUN_COMMAND_MIN = 1
# The Job controller's annotation on an Indexed Job's pods (the same key as the label): NODE_RANK.
ANNOTATION_COMPLETION_INDEX = LABEL_COMPLETION_INDEX
# On a run's outputs reader pod: the spec.fetch.requestID it serves.
ANNOTATION_FETCH_REQUEST = "nbd.dev/fetch-request"
# Reasons of Finished=True after which a Run never starts again (its Job ran, or it was stopped).
RUN_REASONS_TERMINAL = (
    "Succeeded",
    "ScriptFailed",
    "RankFailed",
    "Stopped",
    "DeadlineExceeded",
    "JobFailed",
    "JobDeleted",
)


def valid_run_name(name: str) -> bool:
    """A Run name that its Job, Service and pod hostnames can carry."""
    return len(name) <= RUN_NAME_MAX and RUN_NAME.fullmatch(name) is not None
