"""How nbctl words a session's idle auto-stop, in `list` (short) and `status` (long)."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from nbctl.output import auto_stop
from nbdapi.v1 import notebooks_pb2 as pb

NOW = 1_800_000_000.0


def session(after: str = "", stop_in: float | None = None, message: str = "") -> pb.Session:
    s = pb.Session(name="nb", idle_stop_after=after, idle_message=message)
    if stop_in is not None:
        s.idle_stop_at.CopyFrom(Timestamp(seconds=int(NOW + stop_in)))
    return s


@pytest.mark.parametrize(
    ("s", "short"),
    [
        (session(), ""),
        (session("0"), ""),
        (session("2h", 72 * 60), "in 1h12m"),
        (session("2h", 5 * 60 + 7), "in 5m07s"),
        (session("2h", 42), "in 42s"),
        (session("2h", -3), "now"),
        (session("2h", None, "A kernel is running; a busy notebook is never stopped."), "when idle 2h"),
    ],
)
def test_short_form(s: pb.Session, short: str) -> None:
    assert auto_stop(s, now=NOW) == short


def test_long_form_names_the_setting_and_the_controllers_reason() -> None:
    busy = session(
        "2h", None, "A kernel is running; a busy notebook is never stopped. It stops after 2h idle."
    )
    assert auto_stop(busy, now=NOW, long=True) == (
        "after 2h idle (A kernel is running; a busy notebook is never stopped. It stops after 2h idle.)"
    )
    soon = auto_stop(session("2h", 600, "Idle since 13:02 UTC"), now=NOW, long=True)
    assert soon.startswith("in 10m, at ") and soon.endswith(", after 2h idle (Idle since 13:02 UTC)")
