"""Which contexts the in-cluster store removes to stay under its size: a pure decision.

The store holds contexts on a volume of fixed size. Once the total passes the configured bound,
the least recently used contexts go first (last use = the last upload or download), except those a
Notebook or Run that still exists names in `spec.build.upload.md5`: removing one would make its
next build fail. When only needed contexts are left the store stays over its bound; it never
removes a needed one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["StoredContext", "choose_evictions"]


@dataclass(frozen=True)
class StoredContext:
    md5: str
    size: int
    last_used: float  # Unix time


def choose_evictions(
    stored: Iterable[StoredContext], needed: set[str], max_bytes: int
) -> list[StoredContext]:
    """The contexts to remove, oldest use first, so that the rest fits in `max_bytes`."""
    contexts = sorted(stored, key=lambda c: (c.last_used, c.md5))
    total = sum(c.size for c in contexts)
    evict: list[StoredContext] = []
    for context in contexts:
        if total <= max_bytes:
            break
        if context.md5 in needed:
            continue
        evict.append(context)
        total -= context.size
    return evict
