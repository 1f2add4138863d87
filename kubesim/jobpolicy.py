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
