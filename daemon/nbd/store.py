"""Sessions on disk: one JSON file per session, written atomically, reloaded at start.

A session file is `<state dir>/sessions/CONTEXT+NAMESPACE+NAME.json` (each part percent-encoded)
holding `{"format": 1, "session": {...}}`. Writes go to a temporary file in the same folder, are
fsync'd and renamed over the old file, so a crash leaves
either the old or the new session, never half of one. A file that cannot be read back is reported
(a logged warning naming it), moved aside to `*.corrupt` and skipped: one bad file never stops the
daemon nor hides the other sessions. A session whose runtime record (`nbd.session.RuntimeRecord`)
cannot be read loads without it, with a warning: the session stays listed, and a relaunch brings
its forward and sync back. Files of the older shape, whose runtime record was the untyped field
`extra`, load into the typed record.

The store is synchronous (blocking file I/O); the registry calls it from worker threads.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import tempfile
import types
import typing
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from nbd.session import RuntimeRecord, Session, SessionKey

__all__ = ["FORMAT", "SessionStore", "session_from_json", "session_to_json"]

log = logging.getLogger(__name__)

FORMAT = 1


# --- the JSON codec of the domain dataclasses ------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, raw: Any, where: str) -> Any:
    """Builds a value of type `tp` from its JSON form; raises ValueError naming `where` on a mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return raw
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if raw is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, raw, where)
            except (ValueError, TypeError, KeyError) as e:
                errors.append(str(e))
        raise ValueError(f"{where}: {'; '.join(errors)}")
    if raw is None:
        raise ValueError(f"{where}: null is not allowed")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            # Unknown fields are ignored and missing fields keep their defaults, so a file written
            # by an older or newer daemon still loads.
            if f.name in raw:
                kwargs[f.name] = _decode(hints[f.name], raw[f.name], f"{where}.{f.name}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not isinstance(raw, str) or raw not in tp.__members__:
            raise ValueError(f"{where}: {raw!r} is not a {tp.__name__}")
        return tp[raw]
    if tp is datetime:
        if not isinstance(raw, str):
            raise ValueError(f"{where}: expected a timestamp")
        return datetime.fromisoformat(raw)
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp)
        if not isinstance(raw, list):
            raise ValueError(f"{where}: expected a list")
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(raw, list):
            raise ValueError(f"{where}: expected a list")
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(raw)]
    if origin in (dict, Mapping):
        _key, val = typing.get_args(tp)
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object")
        return {str(k): _decode(val, v, f"{where}.{k}") for k, v in raw.items()}
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"{where}: expected a number")
        return float(raw)
    if tp in (str, int, bool):
        if not isinstance(raw, tp) or (tp is int and isinstance(raw, bool)):
            raise ValueError(f"{where}: expected {tp.__name__}, got {type(raw).__name__}")
        return raw
    raise TypeError(f"{where}: cannot decode type {tp!r}")


def session_to_json(session: Session) -> dict[str, Any]:
    """The persisted form of a session (the format `SessionStore` writes)."""
    return {"format": FORMAT, "session": _encode(session)}


def session_from_json(data: Any) -> Session:
    """Reads the persisted form back; raises ValueError on anything that is not a session."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or "session" not in data:
        raise ValueError(
            f'not a session file of format {FORMAT} (expected {{"format": {FORMAT}, "session": {{...}}}})'
        )
    raw = data["session"]
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), str) and raw.get(k) for k in ("name", "namespace")
    ):
        raise ValueError("session: name and namespace are required")
    if not isinstance(raw.get("context"), str):
        raise ValueError("session: context is required")
    raw = dict(raw)
    # Before the runtime record had a type it was the free-form field `extra`, of the same shape.
    runtime_raw = raw.pop("runtime", raw.pop("extra", None))
    session = _decode(Session, raw, "session")
    assert isinstance(session, Session)
    if runtime_raw is None:
        return session
    try:
        runtime = _decode(RuntimeRecord, runtime_raw, "session.runtime")
    except (ValueError, TypeError, KeyError) as e:
        # The session itself is sound: keep it, without what its forward and sync recorded
        # (a relaunch records them again).
        log.warning("session %s: ignoring its unreadable runtime record (%s)", session.key, e)
        return session
    return dataclasses.replace(session, runtime=runtime)


# --- the store -------------------------------------------------------------------------------------


def key_filename(key: SessionKey) -> str:
    """One file name per key: "CONTEXT+NAMESPACE+NAME.json", each part percent-encoded.

    Encoding escapes '/' and '+' inside a part, so distinct keys never share a file name.
    """
    return "+".join(urllib.parse.quote(part, safe="") for part in key) + ".json"


class SessionStore:
    """Persists sessions under `directory` (created 0700 on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, key: SessionKey) -> Path:
        return self.directory / key_filename(key)

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def save(self, session: Session) -> Path:
        """Writes the session atomically: temp file, fsync, rename, fsync of the folder."""
        self._ensure_dir()
        target = self.path_of(session.key)
        data = json.dumps(session_to_json(session), indent=2, sort_keys=True).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        self._fsync_dir()
        return target

    def delete(self, key: SessionKey) -> None:
        try:
            self.path_of(key).unlink()
        except FileNotFoundError:
            return
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load_all(self) -> list[Session]:
        """Every readable session; unreadable files are logged, moved aside to *.corrupt and skipped."""
        if not self.directory.is_dir():
            return []
        sessions: list[Session] = []
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith(".tmp-"):
                # A write interrupted before its rename: the previous file (if any) is intact.
                path.unlink(missing_ok=True)
                continue
            try:
                sessions.append(session_from_json(json.loads(path.read_bytes())))
            except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:
                aside = path.with_name(path.name + ".corrupt")
                try:
                    os.replace(path, aside)
                    where = f"moved aside to {aside}"
                except OSError as move_error:
                    where = f"could not move it aside: {move_error}"
                log.warning("skipping corrupted session file %s (%s); %s", path, e, where)
        return sessions
