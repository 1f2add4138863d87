"""What a change of the Notebook in the cluster means for its session, table-driven: the session,
what the follower saw and this daemon's identity in, a verdict out."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from nbd.launch.changes import (
    Gone,
    Note,
    Seen,
    Suspended,
    Verdict,
    gone_changes,
    judge,
    spec_writer,
    suspended_changes,
)
from nbd.session import (
    ForwardState,
    ForwardStatus,
    NotebookRecord,
    NotebookState,
    NotebookStatus,
    Phase,
    RuntimeRecord,
    Session,
    SyncState,
    SyncStatus,
)

ME = "ada@laptop#0001"
OTHER = "bob@desk#0002"
UID = "uid-1"
RECORD = NotebookRecord(UID, 3)
WAYS = "the local files are kept; `nbctl launch /home/ada/proj` starts it anew, `nbctl stop proj --delete` forgets it"


def session(phase: Phase = Phase.READY, record: NotebookRecord | None = RECORD, **changes: Any) -> Session:
    return Session(
        name="proj",
        namespace="team",
        context="ctx",
        directory="/home/ada/proj",
        phase=phase,
        url="http://127.0.0.1:8888/lab?token=t",
        pod="proj-0",
        forward=ForwardStatus(state=ForwardState.ACTIVE, local_port=8888, open_connections=2, pod="proj-0"),
        sync=SyncStatus(state=SyncState.WATCHING),
        runtime=RuntimeRecord(notebook=record),
        **changes,
    )


def seen(**fields: Any) -> Seen:
    base: dict[str, Any] = {"uid": UID, "generation": 3, "writer": "nbd", "written_by": ME}
    return Seen(**{**base, **fields})


@dataclass(frozen=True)
class Case:
    id: str
    session: Session
    seen: Seen | None
    want: Verdict | None


CHANGED = (
    "the Notebook's spec was changed in the cluster by {}; nbd leaves it so "
    "(`nbctl launch /home/ada/proj` applies this directory's spec again)"
)
SUSPENDED = "suspended in the cluster by {}; `nbctl launch /home/ada/proj` starts it again"

CASES = [
    Case("unchanged: following", session(), seen(), Note(NotebookState.FOLLOWING, generation=3)),
    Case(
        "a status-only change (same generation): following",
        session(),
        seen(writer="nbd-controller"),
        Note(NotebookState.FOLLOWING, generation=3),
    ),
    Case(
        "deleted (kubectl delete): gone, no author known",
        session(),
        seen(deleted=True),
        Gone(f"the Notebook was deleted in the cluster; {WAYS}"),
    ),
    Case(
        "deleted by another nbd: gone, naming it",
        session(),
        seen(deleted=True, deleted_by=OTHER),
        Gone(
            f"the Notebook was deleted in the cluster by another nbd ({OTHER}); {WAYS}",
            f"another nbd ({OTHER})",
        ),
    ),
    Case(
        "not found at a list (deleted while no watch ran): gone",
        session(),
        None,
        Gone(f"the Notebook was deleted in the cluster; {WAYS}"),
    ),
    Case(
        "being deleted (deletionTimestamp): gone",
        session(),
        seen(deleting=True),
        Gone(f"the Notebook was deleted in the cluster; {WAYS}"),
    ),
    Case(
        "another object of the name: gone, recreated by its writer",
        session(),
        seen(uid="uid-2", generation=1, writer="kubectl-create"),
        Gone(
            f"the Notebook was deleted in the cluster and created again by kubectl-create; {WAYS}",
            "kubectl-create",
        ),
    ),
    Case(
        "a stopped session's Notebook deleted: gone too",
        session(Phase.STOPPED),
        seen(deleted=True),
        Gone(f"the Notebook was deleted in the cluster; {WAYS}"),
    ),
    Case(
        "suspended by kubectl patch: suspended, adopting the generation",
        session(),
        seen(generation=4, suspend=True, writer="kubectl-patch"),
        Suspended(SUSPENDED.format("kubectl-patch"), "kubectl-patch", NotebookRecord(UID, 4)),
    ),
    Case(
        "suspended by the controller's idle stop: says how long it was idle",
        session(),
        seen(generation=4, suspend=True, writer="nbd-controller", idle_stopped="2h3m"),
        Suspended(
            "stopped after 2h3m idle (no kernel, terminal, browser or sync activity); "
            "`nbctl launch /home/ada/proj` starts it again",
            "the idle stop",
            NotebookRecord(UID, 4),
        ),
    ),
    Case(
        "suspended by another nbd's stop",
        session(),
        seen(generation=4, suspend=True, written_by=OTHER),
        Suspended(
            SUSPENDED.format(f"another nbd ({OTHER})"), f"another nbd ({OTHER})", NotebookRecord(UID, 4)
        ),
    ),
    Case(
        "a failed session suspended elsewhere: suspended",
        session(Phase.FAILED),
        seen(generation=4, suspend=True, writer="kubectl-patch"),
        Suspended(SUSPENDED.format("kubectl-patch"), "kubectl-patch", NotebookRecord(UID, 4)),
    ),
    Case(
        "spec edited (kubectl edit): changed, phase kept",
        session(),
        seen(generation=4, writer="kubectl-edit"),
        Note(NotebookState.CHANGED, CHANGED.format("kubectl-edit"), "kubectl-edit", 4),
    ),
    Case(
        "spec applied by another nbd: changed, naming it",
        session(),
        seen(generation=5, written_by=OTHER),
        Note(NotebookState.CHANGED, CHANGED.format(f"another nbd ({OTHER})"), f"another nbd ({OTHER})", 5),
    ),
    Case(
        "spec changed, no managedFields: changed, author unknown",
        session(),
        seen(generation=4, writer="", written_by=""),
        Note(
            NotebookState.CHANGED,
            "the Notebook's spec was changed in the cluster; nbd leaves it so "
            "(`nbctl launch /home/ada/proj` applies this directory's spec again)",
            "",
            4,
        ),
    ),
    Case(
        "this daemon's own write (a relaunch's apply): adopted",
        session(),
        seen(generation=4),
        Note(NotebookState.FOLLOWING, generation=4, record=NotebookRecord(UID, 4)),
    ),
    Case(
        "a stopped session started again elsewhere: changed",
        session(Phase.STOPPED),
        seen(generation=4, writer="kubectl-patch"),
        Note(
            NotebookState.CHANGED,
            "the Notebook was started again in the cluster by kubectl-patch; "
            "`nbctl launch /home/ada/proj` reconnects to it",
            "kubectl-patch",
            4,
        ),
    ),
    Case(
        "a stopped session, still suspended: following",
        session(Phase.STOPPED),
        seen(suspend=True),
        Note(NotebookState.FOLLOWING, generation=3),
    ),
    Case(
        "a suspended session, unchanged since: keeps saying suspended",
        session(
            Phase.SUSPENDED,
            notebook=NotebookStatus(NotebookState.SUSPENDED, "suspended in the cluster", "kubectl-patch", 3),
        ),
        seen(suspend=True, writer="kubectl-patch"),
        Note(NotebookState.SUSPENDED, "suspended in the cluster", "kubectl-patch", 3),
    ),
    Case(
        "a suspended session's spec edited while suspended: changed",
        session(Phase.SUSPENDED),
        seen(generation=4, suspend=True, writer="kubectl-edit"),
        Note(NotebookState.CHANGED, CHANGED.format("kubectl-edit"), "kubectl-edit", 4),
    ),
    Case("being launched: left to the launch", session(Phase.BUILDING), None, None),
    Case("being stopped: left to the stop", session(Phase.STOPPING), seen(deleted=True), None),
    Case("gone already: nothing more", session(Phase.GONE), seen(uid="uid-2"), None),
    Case(
        "never written by this daemon (a failed first launch): nothing",
        session(Phase.FAILED, None),
        None,
        None,
    ),
    Case(
        "a ready session recorded before Notebooks were followed: adopts what runs",
        session(record=None),
        seen(generation=7, writer="kubectl-edit"),
        Note(NotebookState.FOLLOWING, generation=7, record=NotebookRecord(UID, 7)),
    ),
    Case(
        "such a session whose Notebook is missing: gone",
        session(record=None),
        None,
        Gone(f"the Notebook was deleted in the cluster; {WAYS}"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_judge(case: Case) -> None:
    assert judge(case.session, case.seen, identity=ME) == case.want


def test_the_deleter_is_this_daemon() -> None:
    verdict = judge(session(), seen(deleted=True, deleted_by=ME), identity=ME)
    assert verdict == Gone(f"the Notebook was deleted in the cluster by this nbd; {WAYS}", "this nbd")


# --- reading the Notebook -----------------------------------------------------------------------


def entry(manager: str, time: str, fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"manager": manager, "operation": "Update", "time": time, "fieldsV1": fields, **extra}


SPEC = {"f:spec": {"f:suspend": {}}}


@pytest.mark.parametrize(
    ("managed", "want"),
    [
        (None, ""),
        ([], ""),
        ("not a list", ""),
        ([entry("nbd", "2026-01-01T00:00:01Z", SPEC)], "nbd"),
        (
            [entry("nbd", "2026-01-01T00:00:01Z", SPEC), entry("kubectl-edit", "2026-01-01T00:00:05Z", SPEC)],
            "kubectl-edit",
        ),
        (
            [entry("kubectl-edit", "2026-01-01T00:00:05Z", SPEC), entry("nbd", "2026-01-01T00:00:01Z", SPEC)],
            "kubectl-edit",
        ),
        # The same second: the later entry of the list wins.
        (
            [
                entry("nbd", "2026-01-01T00:00:05Z", SPEC),
                entry("kubectl-patch", "2026-01-01T00:00:05Z", SPEC),
            ],
            "kubectl-patch",
        ),
        # The status subresource and metadata-only writers never count.
        (
            [
                entry("nbd", "2026-01-01T00:00:01Z", SPEC),
                entry("nbd-controller", "2026-01-01T00:00:09Z", {"f:status": {}}, subresource="status"),
                entry("kubectl-annotate", "2026-01-01T00:00:09Z", {"f:metadata": {}}),
            ],
            "nbd",
        ),
    ],
)
def test_spec_writer(managed: Any, want: str) -> None:
    assert spec_writer(managed) == want


def test_seen_of_a_notebook() -> None:
    obj = {
        "metadata": {
            "uid": UID,
            "generation": 6,
            "deletionTimestamp": "2026-01-01T00:00:09Z",
            "annotations": {"nbd.dev/written-by": OTHER, "nbd.dev/deleted-by": ME},
            "managedFields": [entry("kubectl-patch", "2026-01-01T00:00:05Z", SPEC)],
        },
        "spec": {"suspend": True},
    }
    assert Seen.of(obj, deleted=True) == Seen(
        uid=UID,
        generation=6,
        suspend=True,
        deleting=True,
        deleted=True,
        writer="kubectl-patch",
        written_by=OTHER,
        deleted_by=ME,
    )
    assert Seen.of({"metadata": {"generation": True}, "spec": {"suspend": "yes"}}) == Seen(uid="")


def test_seen_of_an_idle_stopping_notebook() -> None:
    idle = {"stopAfter": "2h", "stopAt": "2026-01-01T02:00:00Z", "message": "Idle since 00:00 UTC; ..."}
    seen = Seen.of({"metadata": {"uid": UID}, "spec": {}, "status": {"idle": idle}})
    assert (seen.idle_stop_after, seen.idle_stop_at, seen.idle_message) == (
        "2h",
        "2026-01-01T02:00:00Z",
        "Idle since 00:00 UTC; ...",
    )
    # Busy: no time to stop at, whatever the status still says.
    busy = Seen.of({"metadata": {"uid": UID}, "status": {"idle": {**idle, "busy": True}}})
    assert busy.idle_stop_at == ""
    stopped = Seen.of({"metadata": {"uid": UID, "annotations": {"nbd.dev/idle-stopped": "2h3m"}}, "spec": {}})
    assert stopped.idle_stopped == "2h3m"
    assert Seen.of({"metadata": {"uid": UID}, "status": {"idle": "garbage"}}).idle_stop_after == ""


# --- what the session becomes -------------------------------------------------------------------


def test_gone_changes_stop_the_forward_and_the_sync_and_keep_the_record() -> None:
    current = session()
    verdict = Gone("the Notebook was deleted in the cluster; ...", "")
    changes = gone_changes(current, verdict)
    after = dataclasses.replace(current, **changes)
    assert after.phase == Phase.GONE
    assert after.message == verdict.message
    assert (after.url, after.pod) == ("", "")
    assert after.forward.state == ForwardState.STOPPED and after.forward.open_connections == 0
    assert after.forward.local_port == 8888  # a relaunch comes back on the same port
    assert after.sync.state == SyncState.DISABLED
    assert "local files are kept" in after.sync.message
    assert after.notebook.state == NotebookState.DELETED
    assert after.runtime == current.runtime


def test_suspended_changes_adopt_the_generation() -> None:
    current = session()
    verdict = Suspended(SUSPENDED.format("kubectl-patch"), "kubectl-patch", NotebookRecord(UID, 4))
    after = dataclasses.replace(current, **suspended_changes(current, verdict))
    assert after.phase == Phase.SUSPENDED
    assert after.message == verdict.message
    assert after.forward.state == ForwardState.STOPPED and after.sync.state == SyncState.DISABLED
    assert after.notebook == NotebookStatus(NotebookState.SUSPENDED, verdict.message, "kubectl-patch", 4)
    assert after.runtime.notebook == NotebookRecord(UID, 4)
    # Seen again unchanged, it stays suspended (the suspend is not read as a spec change).
    again = judge(after, seen(generation=4, suspend=True, writer="kubectl-patch"), identity=ME)
    assert again == Note(NotebookState.SUSPENDED, verdict.message, "kubectl-patch", 4)


def test_a_notebook_record_checks_its_generation() -> None:
    with pytest.raises(ValueError):
        NotebookRecord(UID, -1)
    with pytest.raises(ValueError):
        NotebookRecord(UID, True)
