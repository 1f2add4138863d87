"""Label and field selectors, parsed and matched the way the Kubernetes API server does.

Pure: no I/O. The API server and the store share these so that `?labelSelector=` on a list,
on a watch and in the in-process `Store.list` mean exactly the same thing.

Label selector grammar (comma = AND): `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
`k` (exists), `!k` (does not exist). Field selectors: `path=v`, `path==v`, `path!=v` where path is
a dotted path into the object (`metadata.name`, `status.phase`, `spec.nodeName`,
`involvedObject.uid`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SelectorError",
    "Requirement",
    "LabelSelector",
    "FieldSelector",
    "parse_label_selector",
    "parse_field_selector",
    "label_selector_from_dict",
    "lookup_path",
]


class SelectorError(ValueError):
    """A selector string that does not parse; the message is shown to the client as is."""


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector; `op` is one of =, !=, in, notin, exists, !."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        raise AssertionError(self.op)


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        return self.matches((obj.get("metadata") or {}).get("labels") or {})


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a label selector string; raise SelectorError with a message like the server's."""
    if text is None or not text.strip():
        return LabelSelector()
    reqs: list[Requirement] = []
    for clause in _split_top_level(text):
        if not clause.strip():
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        m = _SET_RE.match(clause)
        if m:
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(3), values))
            continue
        m = _EQ_RE.match(clause)
        if m:
            op = "=" if m.group(3) in ("=", "==") else "!="
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
            continue
        m = _EXISTS_RE.match(clause)
        if m:
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
            continue
        raise SelectorError(f"unable to parse requirement: {clause.strip()!r}")
    return LabelSelector(tuple(reqs))


def label_selector_from_dict(selector: Mapping[str, Any] | None) -> LabelSelector:
    """Turn a `metav1.LabelSelector` object (matchLabels + matchExpressions) into a LabelSelector."""
    if not selector:
        return LabelSelector()
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"invalid label selector operator {expr.get('operator')!r}")
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


def lookup_path(obj: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path (`status.phase`) into nested dicts; None when any step is missing."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of (path, op, value) terms, op in {=, !=}."""

    terms: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, op, want in self.terms:
            got = lookup_path(obj, path)
            text = "" if got is None else (str(got).lower() if isinstance(got, bool) else str(got))
            if (text == want) != (op == "="):
                return False
        return True

    def value_of(self, path: str) -> str | None:
        """The value an equality term pins `path` to, if any (used to narrow a namespace)."""
        for p, op, want in self.terms:
            if p == path and op == "=":
                return want
        return None


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse `a.b=v,c!=w`; raise SelectorError on anything else."""
    if text is None or not text.strip():
        return FieldSelector()
    terms: list[tuple[str, str, str]] = []
    for clause in text.split(","):
        clause = clause.strip()
        m = re.match(r"^([A-Za-z0-9_.\-/]+)\s*(==|=|!=)\s*(.*)$", clause)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{clause}'")
        op = "!=" if m.group(2) == "!=" else "="
        terms.append((m.group(1), op, m.group(3).strip()))
    return FieldSelector(tuple(terms))
