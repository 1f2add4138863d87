"""Kubernetes resource quantities (`500m`, `1Gi`, `2`) as numbers: used by the kubelet's resource
accounting, the scheduler and quota admission."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_quantity"]

_SUFFIX = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(q: Any) -> float:
    """A Kubernetes quantity (`500m`, `1Gi`, `2`, 3) as a number; ValueError when malformed."""
    if isinstance(q, (int, float)):
        return float(q)
    m = _QTY.match(str(q).strip())
    if not m:
        raise ValueError(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {q!r}"
        )
    number = m.group(1)
    suffix = m.group(2) or ""
    return float(number) * _SUFFIX[suffix]
