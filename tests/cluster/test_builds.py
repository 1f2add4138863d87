"""The bound on the `nbd-builds` record, by table: which records are dropped when it is full."""

from __future__ import annotations

import pytest

from nbd_controller.builds import KEEP_RECORDS, MAX_RECORDS, records_to_drop


def md5(i: int) -> str:
    return f"{i:032x}"


def records(n: int) -> dict[str, str]:
    return {md5(i): f"reg/nbd/team-context:{md5(i)}" for i in range(n)}


@pytest.mark.parametrize(
    ("size", "in_use", "limit", "keep", "dropped"),
    [
        (0, set(), 4, 3, []),
        (3, set(), 4, 3, []),  # below the limit: nothing goes
        (4, set(), 4, 3, [md5(0), md5(1)]),  # at the limit: down to keep - 1, room for the new one
        (4, {md5(0)}, 4, 3, [md5(1), md5(2)]),  # a record a Notebook names stays
        (4, {md5(0), md5(1), md5(2), md5(3)}, 4, 3, []),  # all in use: nothing can go
        (
            6,
            set(),
            4,
            3,
            [md5(0), md5(1), md5(2), md5(3)],
        ),  # over the limit (an older controller): back to keep
    ],
)
def test_records_to_drop(size: int, in_use: set[str], limit: int, keep: int, dropped: list[str]) -> None:
    assert records_to_drop(records(size), in_use, limit=limit, keep=keep) == dropped


def test_the_default_bound_keeps_the_configmap_far_below_its_limit() -> None:
    # The longest image reference a registry allows is 255 characters for the name plus the tag.
    worst = MAX_RECORDS * (32 + 255 + len(":") + 32)
    assert worst < 1024 * 1024 // 2
    kept = records(MAX_RECORDS)
    assert len(kept) - len(records_to_drop(kept, set())) == KEEP_RECORDS - 1
