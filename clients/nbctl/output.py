"""How nbctl prints: JSON lines for programs, short aligned text for people.

`--output json` prints one JSON object per line; protobuf messages go through `json_format` with
their proto (snake_case) field names and every field present, enums by name. Text output is plain
aligned columns (no `rich` needed: `list` stays fast); `rich` is loaded only for progress bars.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import Any

__all__ = ["emit_json", "message_dict", "phase_name", "print_table", "when"]


def message_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result


def emit_json(obj: Any) -> None:
    """Prints one JSON object (a dict, or a protobuf message) on its own line."""
    if not isinstance(obj, dict):
        obj = message_dict(obj)
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def phase_name(value: int) -> str:
    from nbdapi.v1 import notebooks_pb2

    return notebooks_pb2.Phase.Name(value).removeprefix("PHASE_").lower()


def enum_name(enum_type: Any, value: int, prefix: str) -> str:
    try:
        return str(enum_type.Name(value)).removeprefix(prefix).lower().replace("_", " ")
    except ValueError:
        return str(value)


def when(ts: Any) -> str:
    """A protobuf Timestamp as local 'YYYY-MM-DD HH:MM:SS', or '' when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    from datetime import datetime

    dt = datetime.fromtimestamp(ts.seconds, tz=UTC).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _left(seconds: float) -> str:
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if minutes < 10 else f"{minutes}m"
    return f"{secs}s"


def auto_stop(session: Any, *, now: float | None = None, long: bool = False) -> str:
    """The idle auto-stop of a session in a few words: "in 1h12m", "busy", "" when there is none."""
    import time

    after = str(session.idle_stop_after)
    if not after or after == "0":
        return ""
    stop_at = session.idle_stop_at
    if stop_at.seconds or stop_at.nanos:
        left = stop_at.seconds - (time.time() if now is None else now)
        short = f"in {_left(left)}" if left > 0 else "now"
        if not long:
            return short
        return f"{short}, at {when(stop_at)}, after {after} idle" + (
            f" ({session.idle_message})" if session.idle_message else ""
        )
    if not long:
        return "when idle " + after
    return f"after {after} idle" + (f" ({session.idle_message})" if session.idle_message else "")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
