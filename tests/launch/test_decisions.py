"""The launch's decisions, table-driven: the session, the Notebook and the request in, a plan out."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nbd.launch.decisions import (
    CANCELLED,
    CANCELLED_RELAUNCH,
    DAEMON_STOPPED,
    SUSPENDED,
    Attach,
    CancelOutcome,
    Existing,
    Intent,
    Launch,
    LaunchPlan,
    MarkFailed,
    ObservedNotebook,
    Refuse,
    Resume,
    at_daemon_start,
    cancelled,
    decide,
    forward_ports,
    new_session,
    observes_notebook,
    stopped,
)
from nbd.launch.spec import LOCAL_DIRECTORY_ANNOTATION, notebook_manifest
from nbd.session import (
    ForwardRecord,
    ForwardState,
    ForwardStatus,
    LaunchRecord,
    NotebookSpec,
    Phase,
    RuntimeRecord,
    Session,
    SessionKey,
    SyncRecord,
    SyncState,
    SyncStatus,
)

KEY = SessionKey("ctx", "team", "proj")
HERE = "/home/ada/proj"
ELSEWHERE = "/home/bob/proj"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FORWARD = ForwardRecord("/kube/config", "ctx", "team", {"nbd.dev/notebook": "proj"}, 8888, 8890)
SYNC = SyncRecord(HERE, "/content", pod_uid="u1")


def intent(**changes: Any) -> Intent:
    return dataclasses.replace(Intent(key=KEY, directory=HERE, kubeconfig="/kube/config"), **changes)


def session(phase: Phase = Phase.READY, directory: str = HERE, **changes: Any) -> Session:
    base = Session(
        name=KEY.name,
        namespace=KEY.namespace,
        context=KEY.context,
        directory=directory,
        phase=phase,
        url="http://127.0.0.1:8890/lab?token=t",
        forward=ForwardStatus(ForwardState.ACTIVE, 8890),
    )
    return dataclasses.replace(base, **changes)


def live(s: Session) -> Existing:
    """A session whose forward and sync run in this daemon."""
    return Existing(s, running=True, forwarding=True)


def owned_by(directory: str | None) -> ObservedNotebook | None:
    """The observation of the Notebook a launch from `directory` applied (None: no annotation)."""
    manifest = notebook_manifest(KEY.name, KEY.namespace, {"image": "img"}, directory=directory or "")
    return ObservedNotebook.of(manifest)


FRESH = Launch(fresh=True, package=True, sync=True)
RELAUNCH = Launch(fresh=False, package=True, sync=True)
SESSION_TAKEN = Refuse(
    "NameTaken",
    f"notebook proj in team is already launched from {ELSEWHERE}; pass another --name, or stop it first with "
    "`nbctl stop --delete`",
)
NOTEBOOK_TAKEN = Refuse(
    "NameTaken",
    f"notebook proj in team already exists, launched from {ELSEWHERE} by another nbd; pass another --name, or "
    "delete it first (kubectl delete notebook proj -n team)",
)
NOTHING_TO_ATTACH = Refuse(
    "NothingToAttach", "there is no live session of proj to attach to; launch it without --attach"
)


@dataclass
class Case:
    id: str
    existing: Existing | None
    notebook: ObservedNotebook | None
    intent: Intent
    plan: LaunchPlan
    observes: bool | None = None  # whether the launcher looks at the Notebook first (None: not checked)


READY = session()
CASES = [
    # Fresh launches: no session of the key.
    Case("no session and no Notebook: a fresh launch", None, None, intent(), FRESH, observes=True),
    Case(
        "a prebuilt image is neither packaged nor built",
        None,
        None,
        intent(image="jupyter/base"),
        Launch(fresh=True, package=False, sync=True),
    ),
    Case(
        "--no-sync launches without the sync",
        None,
        None,
        intent(no_sync=True),
        Launch(fresh=True, package=True, sync=False),
    ),
    Case(
        "a Notebook this directory launched (its session lost) is launched again",
        None,
        owned_by(HERE),
        intent(),
        FRESH,
        observes=True,
    ),
    Case("a Notebook without the directory annotation is taken over", None, owned_by(None), intent(), FRESH),
    Case(
        "a Notebook launched from another directory is refused",
        None,
        owned_by(ELSEWHERE),
        intent(),
        NOTEBOOK_TAKEN,
        observes=True,
    ),
    # Relaunches: the session of the key exists.
    Case(
        "a ready, live session is relaunched (re-attached when nothing changed)",
        live(READY),
        None,
        intent(),
        RELAUNCH,
        observes=False,
    ),
    Case(
        "a stopped session (suspended Notebook) is relaunched",
        Existing(session(Phase.STOPPED)),
        None,
        intent(),
        RELAUNCH,
    ),
    Case("a failed session is relaunched", Existing(session(Phase.FAILED)), None, intent(), RELAUNCH),
    Case(
        "a relaunch with --no-sync stops the sync once ready",
        live(READY),
        None,
        intent(no_sync=True),
        Launch(fresh=False, package=True, sync=False),
    ),
    Case(
        "a session without a recorded directory is relaunched",
        Existing(session(Phase.FAILED, directory="")),
        None,
        intent(),
        RELAUNCH,
    ),
    Case(
        "a relaunch does not read the Notebook's owner", live(READY), owned_by(ELSEWHERE), intent(), RELAUNCH
    ),
    Case(
        "a session of the name launched from another directory is refused",
        live(session(directory=ELSEWHERE)),
        None,
        intent(),
        SESSION_TAKEN,
        observes=False,
    ),
    # --attach.
    Case(
        "attach to a ready session whose forward runs",
        live(READY),
        None,
        intent(attach=True),
        Attach(READY),
        observes=False,
    ),
    Case("attach without a session", None, None, intent(attach=True), NOTHING_TO_ATTACH, observes=False),
    Case(
        "attach to a stopped session",
        Existing(session(Phase.STOPPED), running=False),
        None,
        intent(attach=True),
        NOTHING_TO_ATTACH,
    ),
    Case(
        "attach to a session still launching",
        live(session(Phase.BUILDING)),
        None,
        intent(attach=True),
        NOTHING_TO_ATTACH,
    ),
    Case(
        "attach to a ready session this daemon could not resume",
        Existing(READY),
        None,
        intent(attach=True),
        NOTHING_TO_ATTACH,
    ),
    Case(
        "attach to a ready session whose forward is not up",
        Existing(READY, running=True),
        None,
        intent(attach=True),
        NOTHING_TO_ATTACH,
    ),
    Case(
        "attach to a session of another directory names the clash first",
        live(session(directory=ELSEWHERE)),
        None,
        intent(attach=True),
        SESSION_TAKEN,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    assert decide(case.existing, case.notebook, case.intent) == case.plan
    if case.observes is not None:
        assert observes_notebook(case.existing, case.intent) is case.observes


def test_the_observed_notebook_is_its_owner() -> None:
    assert ObservedNotebook.of(None) is None
    assert ObservedNotebook.of({"metadata": {}}) == ObservedNotebook(owner="")
    assert owned_by(HERE) == ObservedNotebook(owner=HERE)
    assert ObservedNotebook.of(
        {"metadata": {"annotations": {LOCAL_DIRECTORY_ANNOTATION: ELSEWHERE}}}
    ) == ObservedNotebook(owner=ELSEWHERE)


@pytest.mark.parametrize("no_sync, sync_state", [(False, SyncState.UNSPECIFIED), (True, SyncState.DISABLED)])
def test_a_fresh_launch_records_its_session_packaging(no_sync: bool, sync_state: SyncState) -> None:
    spec = NotebookSpec(image="", workdir="/content", port=8888)
    assert new_session(intent(spec=spec, no_sync=no_sync), NOW) == Session(
        name="proj",
        namespace="team",
        context="ctx",
        kubeconfig="/kube/config",
        directory=HERE,
        spec=spec,
        phase=Phase.PACKAGING,
        created=NOW,
        updated=NOW,
        sync=SyncStatus(state=sync_state),
    )


@pytest.mark.parametrize(
    "recorded, local_port, ports",
    [
        pytest.param(None, 0, (8888, None), id="a fresh launch prefers Jupyter's port"),
        pytest.param(
            RuntimeRecord(), 0, (8888, None), id="a session that never forwarded prefers Jupyter's port"
        ),
        pytest.param(RuntimeRecord(forward=FORWARD), 0, (8890, None), id="a relaunch prefers its port"),
        pytest.param(
            RuntimeRecord(forward=dataclasses.replace(FORWARD, local_port=0)),
            0,
            (8888, None),
            id="a forward on any port prefers Jupyter's",
        ),
        pytest.param(RuntimeRecord(forward=FORWARD), 9000, (8890, 9000), id="--port is explicit"),
    ],
)
def test_forward_ports(
    recorded: RuntimeRecord | None, local_port: int, ports: tuple[int, int | None]
) -> None:
    s = None if recorded is None else session(Phase.STOPPED, runtime=recorded)
    assert forward_ports(s, local_port) == ports


FAILED = CancelOutcome(Phase.FAILED, CANCELLED)


@pytest.mark.parametrize(
    "at, running, applied, outcome",
    [
        pytest.param(
            None,
            False,
            False,
            FAILED,
            id="a fresh launch before its session is recorded (failed if it is by then)",
        ),
        pytest.param(session(Phase.PACKAGING), False, False, FAILED, id="a fresh launch while packaging"),
        pytest.param(session(Phase.UPLOADING), False, True, FAILED, id="a fresh launch while uploading"),
        pytest.param(session(Phase.STARTING), True, True, FAILED, id="a fresh launch while its pod starts"),
        pytest.param(
            READY,
            True,
            False,
            CancelOutcome(Phase.READY, CANCELLED_RELAUNCH),
            id="a relaunch of a ready session while repackaging: it runs unchanged",
        ),
        pytest.param(
            READY, True, True, FAILED, id="a relaunch of a ready session after it applied the Notebook"
        ),
        pytest.param(session(Phase.BUILDING), True, True, FAILED, id="a relaunch while building"),
        pytest.param(
            READY, False, False, FAILED, id="a relaunch of a ready session this daemon could not resume"
        ),
        pytest.param(session(Phase.STOPPED), False, False, FAILED, id="a relaunch of a stopped session"),
    ],
)
def test_cancelled(at: Session | None, running: bool, applied: bool, outcome: CancelOutcome) -> None:
    assert cancelled(at, running=running, applied=applied) == outcome


def test_a_cancel_never_suspends_or_deletes_the_notebook() -> None:
    # The outcome only says how the session is left: the Notebook stays as the launch left it (the
    # cluster finishes an applied spec; a relaunch or `nbctl stop` changes it).
    assert [f.name for f in dataclasses.fields(CancelOutcome)] == ["phase", "message"]


SYNCING = SyncStatus(state=SyncState.WATCHING, local_root=HERE, message="watching")


def test_a_stop_suspends_the_notebook() -> None:
    current = session(
        pod="proj-notebook",
        sync=SYNCING,
        forward=ForwardStatus(ForwardState.ACTIVE, 8890, open_connections=2, pod="proj-notebook"),
    )
    assert stopped(current, deleted=False) == {
        "phase": Phase.STOPPED,
        "url": "",
        "pod": "",
        "forward": ForwardStatus(ForwardState.STOPPED, 8890, open_connections=0, pod=""),
        "sync": dataclasses.replace(SYNCING, state=SyncState.DISABLED, message="stopped with the notebook"),
        "message": SUSPENDED,
    }


def test_a_stop_with_delete_forgets_the_session() -> None:
    assert stopped(session(), deleted=True) == {"phase": Phase.STOPPED, "message": "deleted"}


@pytest.mark.parametrize(
    "phase, runtime, action",
    [
        pytest.param(
            Phase.READY,
            RuntimeRecord(forward=FORWARD, sync=SYNC),
            Resume(FORWARD, SYNC),
            id="a ready session gets its forward and sync back",
        ),
        pytest.param(
            Phase.READY,
            RuntimeRecord(forward=FORWARD, sync=SYNC, launch=LaunchRecord(no_sync=True)),
            Resume(FORWARD, None),
            id="a session launched with --no-sync gets no sync",
        ),
        pytest.param(
            Phase.READY,
            RuntimeRecord(forward=FORWARD),
            Resume(FORWARD, None),
            id="a session that never synced gets its forward",
        ),
        *[
            pytest.param(
                p, RuntimeRecord(), MarkFailed(DAEMON_STOPPED), id=f"a session {p.name.lower()} fails"
            )
            for p in (Phase.PACKAGING, Phase.UPLOADING, Phase.BUILDING, Phase.STARTING, Phase.STOPPING)
        ],
        pytest.param(
            Phase.STOPPED,
            RuntimeRecord(forward=FORWARD),
            None,
            id="a stopped session (suspended Notebook) stays stopped",
        ),
        pytest.param(Phase.FAILED, RuntimeRecord(forward=FORWARD), None, id="a failed session stays failed"),
        pytest.param(Phase.UNSPECIFIED, RuntimeRecord(), None, id="a session of no phase is left"),
    ],
)
def test_at_daemon_start(phase: Phase, runtime: RuntimeRecord, action: Resume | MarkFailed | None) -> None:
    assert at_daemon_start(session(phase, runtime=runtime)) == action


# --- the decisions stay pure ----------------------------------------------------------------------

DECISIONS = Path(__file__).resolve().parents[2] / "daemon" / "nbd" / "launch" / "decisions.py"
# What the decisions may import: the standard library's data types and the daemon's pure vocabulary.
ALLOWED = {"__future__", "dataclasses", "datetime", "typing", "nbd.launch.spec", "nbd.session", "nbd.status"}
IO = {"asyncio", "grpc", "kubernetes", "aiohttp", "socket", "subprocess", "threading", "nbdapi"}


def test_decisions_import_only_pure_modules() -> None:
    tree = ast.parse(DECISIONS.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= ALLOWED, sorted(imported - ALLOWED)


def test_importing_the_decisions_loads_no_io() -> None:
    code = (
        "import sys, nbd.launch.decisions; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(IO)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
