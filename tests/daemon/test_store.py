"""The session store: JSON round trips, atomic writes, and corrupted files skipped with a warning."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from nbd.session import (
    Conflict,
    ForwardRecord,
    ForwardState,
    ForwardStatus,
    LaunchRecord,
    NotebookSpec,
    Phase,
    Problem,
    RuntimeRecord,
    Session,
    SessionKey,
    SyncRecord,
    SyncState,
    SyncStatus,
)
from nbd.status import NotSynced
from nbd.store import SessionStore, key_filename, session_from_json, session_to_json

T = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def full_session() -> Session:
    return Session(
        name="nb",
        namespace="team",
        context="arn:aws:eks:eu-west-1:1:cluster/prod",
        kubeconfig="/home/u/.kube/config",
        directory="/home/u/project",
        phase=Phase.READY,
        message="ready",
        url="http://127.0.0.1:8888/?token=x",
        spec=NotebookSpec(
            image="img",
            gpu_count=0,
            gpu_type="t4",
            cpu="2",
            memory="8Gi",
            env={"K": "V"},
            command=("jupyter", "lab"),
            workdir="/content",
            port=8888,
        ),
        context_md5="0123abcd",
        image="registry/nb:0123abcd",
        pod="nb-0",
        forward=ForwardStatus(
            state=ForwardState.ACTIVE,
            local_port=8888,
            remote_port=8888,
            pod="nb-0",
            open_connections=2,
            last_probe=T,
        ),
        sync=SyncStatus(
            state=SyncState.WATCHING,
            files=3,
            cycles=4,
            last_cycle=T,
            conflicts=(Conflict("a.txt", "a.conflict-remote.txt", "both changed", T),),
            problems=(Problem("b.bin", "permission denied", T),),
            not_synced=(NotSynced("ckpt.pt", 1 << 31, "too large (2 GiB > 100 MiB)", "remote"),),
            local_root="/home/u/project",
            remote_root="/content",
        ),
        created=T,
        updated=T,
        runtime=RuntimeRecord(
            forward=ForwardRecord(
                "/home/u/.kube/config", "prod", "team", {"nbd.dev/notebook": "nb"}, 8888, 8890, None
            ),
            sync=SyncRecord(
                "/home/u/project", "/content", pod_uid="uid-1", paused=True, max_file_size=5 << 20
            ),
            launch=LaunchRecord(no_sync=True),
        ),
    )


def test_round_trip_keeps_every_field():
    s = full_session()
    assert session_from_json(json.loads(json.dumps(session_to_json(s)))) == s


def test_gpu_count_zero_and_unset_stay_distinct():
    zero = Session(name="a", namespace="n", context="c", spec=NotebookSpec(gpu_count=0))
    unset = Session(name="a", namespace="n", context="c")
    assert session_from_json(session_to_json(zero)).spec.gpu_count == 0
    assert session_from_json(session_to_json(unset)).spec.gpu_count is None


def test_unknown_fields_are_ignored_and_missing_ones_default():
    data = {
        "format": 1,
        "session": {
            "name": "a",
            "namespace": "n",
            "context": "c",
            "from_the_future": 1,
            "forward": {"state": "ACTIVE", "new_field": True},
        },
    }
    s = session_from_json(data)
    assert s.forward.state == ForwardState.ACTIVE and s.phase == Phase.UNSPECIFIED


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "not a session file"),
        ({"format": 2, "session": {}}, "not a session file"),
        ({"format": 1}, "not a session file"),
        ({"format": 1, "session": {"namespace": "n", "context": "c"}}, "name and namespace are required"),
        ({"format": 1, "session": {"name": "a", "namespace": "n"}}, "context is required"),
        (
            {"format": 1, "session": {"name": "a", "namespace": "n", "context": "c", "phase": "DANCING"}},
            "session.phase: 'DANCING' is not a Phase",
        ),
        (
            {
                "format": 1,
                "session": {"name": "a", "namespace": "n", "context": "c", "spec": {"gpu_count": "2"}},
            },
            "session.spec.gpu_count",
        ),
        (
            {"format": 1, "session": {"name": "a", "namespace": "n", "context": "c", "created": 5}},
            "session.created: expected a timestamp",
        ),
        (
            {
                "format": 1,
                "session": {"name": "a", "namespace": "n", "context": "c", "sync": {"conflicts": {}}},
            },
            "session.sync.conflicts: expected a list",
        ),
    ],
)
def test_malformed_sessions_are_rejected_naming_the_field(data, message):
    with pytest.raises(ValueError) as e:
        session_from_json(data)
    assert message in str(e.value)


def test_save_writes_atomically_and_leaves_no_temporary_file(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    path = store.save(full_session())
    assert path.name == key_filename(full_session().key)
    assert "/" not in path.name
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    store.save(full_session())  # Overwrites in place.
    assert store.load_all() == [full_session()]
    assert (tmp_path / "sessions").stat().st_mode & 0o777 == 0o700


def test_delete(tmp_path):
    store = SessionStore(tmp_path)
    store.save(full_session())
    store.delete(full_session().key)
    store.delete(full_session().key)  # Deleting twice is fine.
    assert store.load_all() == []


def test_keys_with_slashes_map_to_distinct_files():
    a = key_filename(SessionKey("a/b", "c", "d"))
    b = key_filename(SessionKey("a", "b/c", "d"))
    assert a != b


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b'{"format": 1, "session": {"name": 3}}', b"[]", b""],
)
def test_corrupted_files_are_moved_aside_with_a_warning(tmp_path, caplog, content):
    store = SessionStore(tmp_path)
    store.save(full_session())
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="nbd.store"):
        assert store.load_all() == [full_session()]
    assert f"skipping corrupted session file {bad}" in caplog.text
    assert not bad.exists() and (tmp_path / "bad.json.corrupt").read_bytes() == content


def test_a_leftover_temporary_file_is_removed(tmp_path):
    store = SessionStore(tmp_path)
    store.save(full_session())
    (tmp_path / ".tmp-abc.json").write_text("{half")
    assert store.load_all() == [full_session()]
    assert not (tmp_path / ".tmp-abc.json").exists()


def test_missing_directory_loads_nothing(tmp_path):
    assert SessionStore(tmp_path / "absent").load_all() == []


def test_the_untyped_extra_of_older_files_loads_into_the_runtime_record():
    # The shape the daemon wrote while the record was the free-form field `extra`.
    data = {
        "format": 1,
        "session": {
            "name": "nb",
            "namespace": "team",
            "context": "c",
            "extra": {
                "forward": {
                    "kubeconfig": "/k",
                    "context": "c",
                    "namespace": "team",
                    "selector": {"nbd.dev/notebook": "nb"},
                    "remote_port": 8888,
                    "local_port": 8891,
                    "probe_path": "/api",
                },
                "sync": {
                    "directory": "/home/u/project",
                    "remote_root": "/content",
                    "pod_uid": "u-1",
                    "paused": False,
                },
                "launch": {"no_sync": True},
            },
        },
    }
    s = session_from_json(data)
    assert s.runtime == RuntimeRecord(
        forward=ForwardRecord("/k", "c", "team", {"nbd.dev/notebook": "nb"}, 8888, 8891, "/api"),
        sync=SyncRecord("/home/u/project", "/content", pod_uid="u-1"),
        launch=LaunchRecord(no_sync=True),
    )
    assert session_from_json(session_to_json(s)) == s


@pytest.mark.parametrize(
    "runtime",
    [
        {
            "forward": {
                "kubeconfig": "/k",
                "context": "c",
                "namespace": "n",
                "selector": {},
                "remote_port": 0,
                "local_port": 1,
            }
        },
        {"forward": {"selector": "a=1"}},
        {"sync": {"directory": "relative", "remote_root": "/content"}},
        {"launch": {"no_sync": "yes"}},
        [],
    ],
)
def test_an_unreadable_runtime_record_leaves_the_session_loaded_without_it(runtime, caplog):
    data = {
        "format": 1,
        "session": {"name": "nb", "namespace": "team", "context": "c", "phase": "READY", "runtime": runtime},
    }
    with caplog.at_level(logging.WARNING, logger="nbd.store"):
        s = session_from_json(data)
    assert s.phase == Phase.READY and s.runtime == RuntimeRecord()
    assert "ignoring its unreadable runtime record" in caplog.text
