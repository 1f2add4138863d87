"""Idle auto-stop, decided without I/O: what counts as activity, busy kernels, and the stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nbd_controller.decisions import ClearIdleStop, DeletePod, IdleStop, Observed, decide
from nbd_controller.idle import (
    IdleObserved,
    JupyterActivity,
    decide_idle,
    parse_activity,
    ready_since,
    stop_after,
)
from nbdcontract import duration_seconds, human_duration
from tests.cluster.test_decisions import CONFIG, nb, pod_for

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def jupyter(
    last: float | None = None, kernels: tuple[tuple[str, float], ...] = (), terminals: tuple[float, ...] = ()
) -> JupyterActivity:
    return JupyterActivity(
        last_activity=ago(last) if last is not None else None,
        kernels=tuple((state, ago(m)) for state, m in kernels),
        terminals=tuple(ago(m) for m in terminals),
    )


@pytest.mark.parametrize(
    ("observed", "stop", "busy", "last_minutes_ago"),
    [
        # Everything older than the deadline: stop.
        (IdleObserved(3600, jupyter(90, (("idle", 80),)), None, ago(120)), True, False, 80),
        # A kernel that is busy is never idle, however old its activity and the rest.
        (IdleObserved(3600, jupyter(500, (("idle", 400), ("busy", 300))), None, ago(600)), False, True, None),
        (IdleObserved(3600, jupyter(500, (("starting", 300),)), None, ago(600)), False, True, None),
        # A terminal used 10 minutes ago keeps it.
        (IdleObserved(3600, jupyter(90, (("idle", 80),), (10,)), None, ago(120)), False, False, 10),
        # nbd's activity (a connection through the forward, sync traffic) keeps it.
        (IdleObserved(3600, jupyter(90, (("idle", 80),)), ago(5), ago(120)), False, False, 5),
        # Jupyter's own last_activity (an API request, a save) keeps it.
        (IdleObserved(3600, jupyter(30), None, ago(120)), False, False, 30),
        # A pod that became Ready 20 minutes ago has its full time, whatever Jupyter remembers.
        (IdleObserved(3600, jupyter(500, (("idle", 400),)), None, ago(20)), False, False, 20),
        # Exactly at the deadline: stop.
        (IdleObserved(3600, jupyter(60), None, ago(61)), True, False, 60),
        # Nothing known at all (no times): counts from now.
        (IdleObserved(60, JupyterActivity(), None, None), False, False, 0),
    ],
)
def test_what_counts_as_activity(
    observed: IdleObserved, stop: bool, busy: bool, last_minutes_ago: float | None
) -> None:
    verdict = decide_idle(NOW, observed)
    assert verdict.stop is stop
    assert bool(verdict.status.get("busy")) is busy
    assert verdict.status["stopAfter"] == human_duration(observed.stop_after)
    if last_minutes_ago is None:
        assert "stopAt" not in verdict.status and "never stopped" in verdict.status["message"]
    else:
        last = ago(last_minutes_ago).replace(microsecond=0)
        assert verdict.status["lastActivity"] == last.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert verdict.status["stopAt"] == (last + timedelta(seconds=observed.stop_after)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    if stop:
        assert verdict.idle_seconds >= observed.stop_after
        assert verdict.status["message"].startswith("Stopped after ")


def test_off_unasked_and_unanswered_never_stop() -> None:
    assert decide_idle(NOW, IdleObserved(0, jupyter(500), None, ago(600))).status == {}
    assert decide_idle(NOW, IdleObserved(60, None)).status == {"stopAfter": "1m"}
    verdict = decide_idle(NOW, IdleObserved(60, JupyterActivity(error="Jupyter did not answer: Timeout")))
    assert not verdict.stop
    assert verdict.status["message"] == (
        "Cannot tell whether the notebook is idle (Jupyter did not answer: Timeout); it is not stopped."
    )


def test_jupyter_answers_are_parsed_and_bad_ones_are_an_error() -> None:
    activity = parse_activity(
        {"last_activity": "2026-12-03T14:00:00.123456Z", "started": "2026-12-03T13:00:00Z"},
        [{"id": "k", "execution_state": "busy", "last_activity": "2026-12-03T14:30:00Z"}],
        [{"name": "1", "last_activity": "2026-12-03T14:10:00+00:00"}],
    )
    assert activity.last_activity == datetime(2026, 12, 3, 14, 0, 0, 123456, tzinfo=UTC)
    assert activity.kernels == (("busy", datetime(2026, 12, 3, 14, 30, tzinfo=UTC)),)
    assert activity.terminals == (datetime(2026, 12, 3, 14, 10, tzinfo=UTC),)
    assert parse_activity([], [], []).error
    assert parse_activity({}, {"not": "a list"}, []).error


@pytest.mark.parametrize(
    ("spec", "default", "seconds"),
    [
        ({}, 0, 0),
        ({}, 7200, 7200),
        ({"idle": {"stopAfter": "90m"}}, 7200, 5400),
        ({"idle": {"stopAfter": "0"}}, 7200, 0),
        ({"idle": {"stopAfter": ""}}, 60, 60),
        (
            {"idle": {"stopAfter": "soon"}},
            60,
            0,
        ),  # unreadable (the CRD refuses it): off, never a surprise stop
    ],
)
def test_stop_after_of_spec_and_default(spec: dict[str, Any], default: int, seconds: int) -> None:
    assert stop_after(spec, default) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("0", 0), (0, 0), ("1h0m5s", 3605)],
)
def test_durations(text: Any, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "1d", "h", "-1h", "2 h", True, 7200, None, "9000h"])
def test_bad_durations_name_the_form(text: Any) -> None:
    with pytest.raises(ValueError, match="duration|unit|range"):
        duration_seconds(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0"), (45, "45s"), (95, "1m35s"), (7380, "2h3m"), (7200, "2h")]
)
def test_human_durations(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_ready_since_is_the_ready_transition() -> None:
    pod = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-03T14:00:00Z"}]
        }
    }
    assert ready_since(pod) == datetime(2026, 12, 3, 14, tzinfo=UTC)
    assert ready_since({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}) is None
    assert ready_since(None) is None


# --- through decide ---------------------------------------------------------------------------


def notebook(**spec: Any) -> dict[str, Any]:
    return nb({"image": "jupyter/base", **spec})


def built_observed(notebook: dict[str, Any], **kw: Any) -> Observed:
    return Observed(notebook=notebook, now=NOW, secret_exists=True, **kw)


def ready_pod(notebook: dict[str, Any]) -> dict[str, Any]:
    return pod_for(
        notebook,
        image="jupyter/base",
        phase="Running",
        conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-03T13:00:00Z"}],
    )


def _ready(idle: IdleObserved | None, **spec: Any) -> Observed:
    notebook_ = notebook(**spec)
    return built_observed(notebook_, pod=ready_pod(notebook_), idle=idle)


def test_a_ready_idle_notebook_is_suspended_and_its_pod_deleted() -> None:
    plan = decide(CONFIG, _ready(IdleObserved(3600, jupyter(90), None, ago(120))))
    assert any(isinstance(a, IdleStop) and a.idle_seconds == 90 * 60 for a in plan.actions)
    assert any(isinstance(a, DeletePod) for a in plan.actions)
    assert plan.status["idle"]["message"].startswith("Stopped after 1h30m idle")


def test_a_ready_notebook_in_use_is_looked_at_again() -> None:
    plan = decide(CONFIG, _ready(IdleObserved(3600, jupyter(10), None, ago(120))))
    assert not any(isinstance(a, (IdleStop, DeletePod)) for a in plan.actions)
    assert plan.requeue_after == CONFIG.idle_check_seconds
    assert plan.status["phase"] == "Ready" and plan.status["idle"]["stopAt"]


def test_an_idle_stopped_notebook_says_so_and_the_mark_goes_when_it_is_started() -> None:
    nb = notebook(suspend=True)
    nb["metadata"]["annotations"] = {"nbd.dev/idle-stopped": "2h3m"}
    plan = decide(CONFIG, built_observed(nb))
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (plan.status["phase"], ready["reason"]) == ("Suspended", "IdleStopped")
    assert ready["message"] == "Stopped after 2h3m idle; launch it again to resume (its workspace is kept)."
    resumed = notebook()
    resumed["metadata"]["annotations"] = {"nbd.dev/idle-stopped": "2h3m"}
    assert any(isinstance(a, ClearIdleStop) for a in decide(CONFIG, built_observed(resumed)).actions)
