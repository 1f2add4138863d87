"""The persisted ancestor: snapshot + journal, torn lines, compaction, unreadable state."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nbd.errors import FailedPrecondition
from nbd.status import Conflict
from nbd.sync.snapshot import Entry
from nbd.sync.state import AncestorStore

F1 = Entry("file", "a" * 64, 1)
F2 = Entry("file", "b" * 64, 2, True)
T1 = datetime.fromtimestamp(1.0, UTC)


def test_snapshot_and_journal_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "sync.json")
    store = AncestorStore(path)
    assert store.load() == ({}, [])
    store.save({"a": F1, "d": Entry("dir")}, [])
    store.append({"b": F2, "a": None}, [Conflict("x", "x.c", "m", T1)])
    again = AncestorStore(path)
    ancestor, conflicts = again.load()
    assert ancestor == {"b": F2, "d": Entry("dir")}
    assert conflicts == [Conflict("x", "x.c", "m", T1)]
    assert again.journal_entries == 2


def test_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    path = str(tmp_path / "sync.json")
    store = AncestorStore(path)
    store.append({"a": F1}, [])
    with open(path + ".journal", "a") as f:
        f.write('{"set":{"b":["file"')  # the daemon died mid-write
    ancestor, _ = AncestorStore(path).load()
    assert ancestor == {"a": F1}


def test_save_compacts_the_journal(tmp_path: Path) -> None:
    path = str(tmp_path / "sync.json")
    store = AncestorStore(path)
    for i in range(3):
        store.append({f"f{i}": F1}, [])
    assert not store.needs_compaction(10)
    store.journal_entries = 5000
    assert store.needs_compaction(10)
    store.save({"f0": F1}, [])
    assert not os.path.exists(path + ".journal") and store.journal_entries == 0
    assert AncestorStore(path).load()[0] == {"f0": F1}
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


def test_unreadable_state_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "sync.json"
    path.write_text("{not json")
    with pytest.raises(FailedPrecondition, match="move it away"):
        AncestorStore(str(path)).load()
