"""The `nbd-builds` record stays small: which records to drop when it is full. No I/O.

The record maps a context MD5 to the image built from it, one ConfigMap per namespace. A ConfigMap
holds at most 1 MiB (keys and values together), and a team that launches all day adds a record per
content change, so the record is bounded: at `MAX_RECORDS` entries, records are dropped down to
`KEEP_RECORDS`, never one that a Notebook of the namespace names now. An image reference is at most
a few hundred bytes, so `MAX_RECORDS` keeps the ConfigMap far below the limit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

__all__ = ["MAX_RECORDS", "KEEP_RECORDS", "records_to_drop"]

MAX_RECORDS = 1000
# Dropping to below the maximum, not to one under it, so that pruning is rare.
KEEP_RECORDS = 900


def records_to_drop(
    records: Mapping[str, str], in_use: Collection[str], *, limit: int = MAX_RECORDS, keep: int = KEEP_RECORDS
) -> list[str]:
    """The MD5s to remove before one more record is added (in MD5 order, for a stable choice)."""
    if len(records) < limit:
        return []
    excess = len(records) - keep + 1
    candidates = sorted(md5 for md5 in records if md5 not in in_use)
    return candidates[:excess]
