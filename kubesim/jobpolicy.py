"""A Job's `podFailurePolicy`: upstream's validation and matching, pure.

Validation follows kube-apiserver's (pkg/apis/batch/validation): the policy needs the template's
`restartPolicy: Never` and `podReplacementPolicy: Failed` (the default when a policy is set); each
rule has a supported action and exactly one of `onExitCodes` and `onPodConditions`; exit codes
are unique, in order, never 0 for `In`, and a `containerName` names a container of the template.

Matching follows the Job controller's: rules are tried in order on a pod that failed, the first
that matches decides. `onExitCodes` matches a container (then an init container) that terminated
with a non-zero code the operator accepts; `onPodConditions` matches a condition of the pod with
that type and status. No match is the default handling, counted toward `backoffLimit`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["validate", "Match", "match"]

ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
OPERATORS = ("In", "NotIn")
STATUSES = ("False", "True", "Unknown")
MAX_RULES = 20
MAX_PATTERNS = 20
MAX_VALUES = 255
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _quoted(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def validate(spec: dict[str, Any]) -> list[dict[str, str]]:
    """The causes (field, reason, message) of an invalid policy in Job `spec`; [] when valid."""
    policy = spec.get("podFailurePolicy")
    if policy is None:
        return []
    causes: list[dict[str, str]] = []

    def add(field: str, reason: str, message: str) -> None:
        causes.append({"field": field, "reason": reason, "message": message})

    template = (spec.get("template") or {}).get("spec") or {}
    restart = template.get("restartPolicy")
    if restart != "Never":
        add(
            "spec.template.spec.restartPolicy",
            "FieldValueInvalid",
            f'Invalid value: "{restart}": only "Never" is supported when podFailurePolicy is specified',
        )
    replacement = spec.get("podReplacementPolicy")
    if replacement is not None and replacement != "Failed":
        add(
            "spec.podReplacementPolicy",
            "FieldValueNotSupported",
            f'Unsupported value: "{replacement}": supported values: "Failed"',
        )
    rules = policy.get("rules") or []
    if len(rules) > MAX_RULES:
        add(
            "spec.podFailurePolicy.rules",
            "FieldValueTooMany",
            f"Too many: {len(rules)}: must have at most {MAX_RULES} items",
        )
    names = {
        c.get("name") for c in (template.get("containers") or []) + (template.get("initContainers") or [])
    }
    for i, rule in enumerate(rules):
        path = f"spec.podFailurePolicy.rules[{i}]"
        action = rule.get("action") or ""
        if not action:
            add(f"{path}.action", "FieldValueRequired", f"Required value: valid values: [{_quoted(ACTIONS)}]")
        elif action == "FailIndex":
            if spec.get("backoffLimitPerIndex") is None:
                add(
                    f"{path}.action",
                    "FieldValueInvalid",
                    'Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set',
                )
        elif action not in ACTIONS:
            add(
                f"{path}.action",
                "FieldValueNotSupported",
                f'Unsupported value: "{action}": supported values: {_quoted(ACTIONS)}',
            )
        codes = rule.get("onExitCodes")
        patterns = rule.get("onPodConditions") or []
        if codes is not None:
            cpath = f"{path}.onExitCodes"
            operator = codes.get("operator") or ""
            if not operator:
                add(
                    f"{cpath}.operator",
                    "FieldValueRequired",
                    f"Required value: valid values: [{_quoted(OPERATORS)}]",
                )
            elif operator not in OPERATORS:
                add(
                    f"{cpath}.operator",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{operator}": supported values: {_quoted(OPERATORS)}',
                )
            name = codes.get("containerName")
            if name is not None and name not in names:
                add(
                    f"{cpath}.containerName",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be one of the container or initContainer names in the pod template',
                )
            values = list(codes.get("values") or [])
            if not values:
                add(
                    f"{cpath}.values",
                    "FieldValueInvalid",
                    "Invalid value: []: at least one value is required",
                )
            elif len(values) > MAX_VALUES:
                add(
                    f"{cpath}.values",
                    "FieldValueTooMany",
                    f"Too many: {len(values)}: must have at most {MAX_VALUES} items",
                )
            seen: set[int] = set()
            for j, value in enumerate(values):
                if operator == "In" and value == 0:
                    add(
                        f"{cpath}.values[{j}]",
                        "FieldValueInvalid",
                        "Invalid value: 0: must not be 0 for the In operator",
                    )
                if value in seen:
                    add(f"{cpath}.values[{j}]", "FieldValueDuplicate", f"Duplicate value: {value}")
                seen.add(value)
            if values != sorted(values):
                add(f"{cpath}.values", "FieldValueInvalid", f"Invalid value: {values}: must be ordered")
        if len(patterns) > MAX_PATTERNS:
            add(
                f"{path}.onPodConditions",
                "FieldValueTooMany",
                f"Too many: {len(patterns)}: must have at most {MAX_PATTERNS} items",
            )
        for j, pattern in enumerate(patterns):
            ppath = f"{path}.onPodConditions[{j}]"
            type_ = str(pattern.get("type") or "")
            if not _QUALIFIED.match(type_):
                add(
                    f"{ppath}.type",
                    "FieldValueInvalid",
                    f"Invalid value: \"{type_}\": name part must consist of alphanumeric characters, '-', '_' or "
                    "'.', and must start and end with an alphanumeric character",
                )
            status = pattern.get("status") or ""
            if not status:
                add(
                    f"{ppath}.status",
                    "FieldValueRequired",
                    f"Required value: valid values: [{_quoted(STATUSES)}]",
                )
            elif status not in STATUSES:
                add(
                    f"{ppath}.status",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{status}": supported values: {_quoted(STATUSES)}',
                )
        if codes is not None and patterns:
            add(
                path,
                "FieldValueInvalid",
                "Invalid value: specifying both OnExitCodes and OnPodConditions is not supported",
            )
        if codes is None and not patterns:
            add(
                path,
                "FieldValueInvalid",
                "Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            )
    return causes


@dataclass(frozen=True)
class Match:
    """The rule that decided a failed pod: its action and the Job controller's message."""

    action: str
    index: int
    message: str


def _exit_code_match(pod: dict[str, Any], codes: dict[str, Any]) -> tuple[str, int] | None:
    status = pod.get("status") or {}
    values = set(codes.get("values") or [])
    wanted = codes.get("containerName")
    for key in ("containerStatuses", "initContainerStatuses"):
        for container in status.get(key) or []:
            if wanted is not None and container.get("name") != wanted:
                continue
            terminated = (container.get("state") or {}).get("terminated")
            if not terminated or int(terminated.get("exitCode") or 0) == 0:
                continue
            code = int(terminated["exitCode"])
            if (code in values) == (codes.get("operator") == "In"):
                return str(container.get("name")), code
    return None


def match(policy: dict[str, Any] | None, pod: dict[str, Any]) -> Match | None:
    """The first rule of `policy` matching failed `pod` (rules with unknown actions are skipped)."""
    if not policy:
        return None
    md = pod.get("metadata") or {}
    who = f"{md.get('namespace', 'default')}/{md.get('name', '')}"
    conditions = (pod.get("status") or {}).get("conditions") or []
    for index, rule in enumerate(policy.get("rules") or []):
        action = str(rule.get("action") or "")
        if action not in ACTIONS:
            continue
        codes = rule.get("onExitCodes")
        if codes is not None:
            found = _exit_code_match(pod, codes)
            if found is not None:
                name, code = found
                return Match(
                    action,
                    index,
                    f"Container {name} for pod {who} failed with exit code {code} matching {action} rule at index {index}",
                )
            continue
        for pattern in rule.get("onPodConditions") or []:
            for condition in conditions:
                if condition.get("type") == pattern.get("type") and condition.get("status") == pattern.get(
                    "status", "True"
                ):
                    return Match(
                        action,
                        index,
                        f"Pod {who} has condition {condition['type']} matching {action} rule at index {index}",
                    )
    return None


# --------------------------------------------------------------------------- Indexed Jobs

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
IGNORED_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"
MAX_PARALLELISM_INDEXED = 100_000
MAX_FAILED_INDEXES = 100_000
COMPLETIONS_SOFT_LIMIT = 100_000
MODES = ("Indexed", "NonIndexed")


def validate_spec(spec: dict[str, Any]) -> list[dict[str, str]]:
    """Upstream's checks of a Job's completion mode, per-index limits and successPolicy (before defaults)."""
    causes: list[dict[str, str]] = []

    def add(field: str, reason: str, message: str) -> None:
        causes.append({"field": f"spec.{field}", "reason": reason, "message": message})

    for name in (
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "backoffLimitPerIndex",
    ):
        value = spec.get(name)
        if value is not None and int(value) < 0:
            add(name, "FieldValueInvalid", f"Invalid value: {value}: must be greater than or equal to 0")
    per_index = spec.get("backoffLimitPerIndex")
    max_failed = spec.get("maxFailedIndexes")
    if max_failed is not None:
        if int(max_failed) < 0:
            add(
                "maxFailedIndexes",
                "FieldValueInvalid",
                f"Invalid value: {max_failed}: must be greater than or equal to 0",
            )
        if per_index is None:
            add(
                "backoffLimitPerIndex",
                "FieldValueRequired",
                "Required value: when maxFailedIndexes is specified",
            )
    mode = spec.get("completionMode")
    completions = spec.get("completions")
    parallelism = spec.get("parallelism")
    if mode is not None and mode not in MODES:
        add(
            "completionMode",
            "FieldValueNotSupported",
            f'Unsupported value: "{mode}": supported values: "NonIndexed", "Indexed"',
        )
    if mode == "Indexed":
        if completions is None:
            add("completions", "FieldValueRequired", "Required value: when completion mode is Indexed")
        if parallelism is not None and int(parallelism) > MAX_PARALLELISM_INDEXED:
            add(
                "parallelism",
                "FieldValueInvalid",
                f"Invalid value: {parallelism}: must be less than or equal to {MAX_PARALLELISM_INDEXED} "
                "when completion mode is Indexed",
            )
        if completions is not None and max_failed is not None and int(max_failed) > int(completions):
            add(
                "maxFailedIndexes",
                "FieldValueInvalid",
                f"Invalid value: {max_failed}: must be less than or equal to completions",
            )
        if max_failed is not None and int(max_failed) > MAX_FAILED_INDEXES:
            add(
                "maxFailedIndexes",
                "FieldValueInvalid",
                f"Invalid value: {max_failed}: must be less than or equal to {MAX_FAILED_INDEXES}",
            )
        if (
            completions is not None
            and int(completions) > COMPLETIONS_SOFT_LIMIT
            and per_index is not None
            and max_failed is None
        ):
            add(
                "maxFailedIndexes",
                "FieldValueRequired",
                f"Required value: must be specified when completions is above {COMPLETIONS_SOFT_LIMIT}",
            )
    else:
        if per_index is not None:
            add(
                "backoffLimitPerIndex",
                "FieldValueInvalid",
                f"Invalid value: {per_index}: requires indexed completion mode",
            )
        if max_failed is not None:
            add(
                "maxFailedIndexes",
                "FieldValueInvalid",
                f"Invalid value: {max_failed}: requires indexed completion mode",
            )
    success = spec.get("successPolicy")
    if success is not None:
        if mode != "Indexed":
            add("successPolicy", "FieldValueInvalid", "Invalid value: requires indexed completion mode")
        else:
            causes.extend(_validate_success_policy(success, int(completions or 0)))
    return causes


def _validate_success_policy(policy: dict[str, Any], completions: int) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    rules = policy.get("rules") or []
    if not rules:
        causes.append(
            {
                "field": "spec.successPolicy.rules",
                "reason": "FieldValueRequired",
                "message": "Required value: at least one rules must be specified when the successPolicy is specified",
            }
        )
    for i, rule in enumerate(rules):
        path = f"spec.successPolicy.rules[{i}]"
        indexes = rule.get("succeededIndexes")
        count = rule.get("succeededCount")
        if indexes is None and count is None:
            causes.append(
                {
                    "field": path,
                    "reason": "FieldValueRequired",
                    "message": "Required value: at least one of succeededCount or succeededIndexes must be specified",
                }
            )
        total = None
        if indexes is not None:
            try:
                total = len(parse_intervals(str(indexes), completions, strict=True))
            except ValueError as e:
                causes.append(
                    {
                        "field": f"{path}.succeededIndexes",
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{indexes}": error parsing succeededIndexes: {e}',
                    }
                )
        if count is not None:
            if int(count) < 0:
                causes.append(
                    {
                        "field": f"{path}.succeededCount",
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {count}: must be greater than or equal to 0",
                    }
                )
            elif int(count) > completions:
                causes.append(
                    {
                        "field": f"{path}.succeededCount",
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {count}: must be less than or equal to {completions} "
                        "(the number of specified completions)",
                    }
                )
            elif total is not None and int(count) > total:
                causes.append(
                    {
                        "field": f"{path}.succeededCount",
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {count}: must be less than or equal to {total} "
                        "(the number of indexes in the specified succeededIndexes field)",
                    }
                )
    return causes


def parse_intervals(text: str, completions: int, strict: bool = False) -> set[int]:
    """The indexes of an interval list like "0-2,5" (the format of status.completedIndexes).

    Upstream's controller ignores malformed parts and indexes past `completions`; with `strict`
    (validation) they are errors (ValueError).
    """
    out: set[int] = set()
    last = -1
    for part in text.split(",") if text else []:
        bounds = part.split("-")
        try:
            if len(bounds) not in (1, 2):
                raise ValueError(
                    f"the fragment {part!r} violates the requirement that an index interval can have at most two parts separated by '-'"
                )
            lo = int(bounds[0])
            hi = int(bounds[-1])
            if lo < 0 or hi >= completions:
                raise ValueError(
                    f"too large index: {max(lo, hi)}" if hi >= completions else f"negative index: {lo}"
                )
            if lo > hi:
                raise ValueError(f"non-increasing order, previous: {lo}, current: {hi}")
            if lo <= last:
                raise ValueError(f"non-increasing order, previous: {last}, current: {lo}")
        except ValueError:
            if strict:
                raise
            continue
        last = hi
        out.update(range(lo, hi + 1))
    return out


def format_intervals(indexes: set[int] | list[int]) -> str:
    """Indexes as upstream writes them in status.completedIndexes: sorted, runs joined by '-'."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(set(indexes)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def pod_index(pod: dict[str, Any], completions: int) -> int | None:
    """A pod's completion index (its annotation, else its label), None when missing or out of range."""
    md = pod.get("metadata") or {}
    raw = (md.get("annotations") or {}).get(INDEX_ANNOTATION)
    if raw is None:
        raw = (md.get("labels") or {}).get(INDEX_ANNOTATION)
    try:
        index = int(str(raw))
    except ValueError:
        return None
    return index if 0 <= index < completions and str(index) == str(raw) else None


def success_rule(policy: dict[str, Any] | None, succeeded: set[int], completions: int) -> int | None:
    """The index of the first successPolicy rule the succeeded indexes meet, None when none does."""
    if not policy:
        return None
    for i, rule in enumerate(policy.get("rules") or []):
        indexes = rule.get("succeededIndexes")
        count = rule.get("succeededCount")
        if indexes is not None:
            wanted = parse_intervals(str(indexes), completions)
            done = len(wanted & succeeded)
            if (count is not None and done >= int(count)) or (
                count is None and wanted and done == len(wanted)
            ):
                return i
        elif count is not None and len(succeeded) >= int(count):
            return i
    return None


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def validate_indexed_name(name: str, spec: dict[str, Any]) -> list[dict[str, str]]:
    """Upstream's check that an Indexed Job's last pod hostname (NAME-(completions-1)) is a DNS label."""
    if spec.get("completionMode") != "Indexed" or spec.get("completions") is None:
        return []
    hostname = f"{name}-{max(0, int(spec['completions']) - 1)}"
    if len(hostname) <= 63 and _DNS_LABEL.match(hostname):
        return []
    return [
        {
            "field": "metadata.name",
            "reason": "FieldValueInvalid",
            "message": f'Invalid value: "{name}": will not able to create pod with invalid DNS label: {hostname}',
        }
    ]
