"""The run model: names, the request's rules, the Run the daemon writes and the run it reads back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from nbd.errors import InvalidArgument
from nbd.runs.model import rank_prefix, run_info, run_manifest, run_name_for, validate_run
from nbd.runstate import Rank, RunPhase
from nbdcontract import RUN_NAME_MAX, RUN_NODES_MAX, valid_run_name


@pytest.mark.parametrize(
    ("directory", "suffix", "expected"),
    [
        ("hello", "ab1cd", "hello-ab1cd"),
        ("My Project", "x0000", "my-project-x0000"),
        ("___", "zzzzz", "notebook-zzzzz"),
        ("2024 experiment", "a1b2c", "run-2024-experiment-a1b2c"),
        ("a" * 80, "q1w2e", "a" * (RUN_NAME_MAX - 6) + "-q1w2e"),
    ],
)
def test_run_names(directory: str, suffix: str, expected: str) -> None:
    name = run_name_for(directory, suffix)
    assert name == expected
    assert valid_run_name(name) and len(name) <= RUN_NAME_MAX


def test_a_new_name_each_time() -> None:
    names = {run_name_for("train") for _ in range(50)}
    assert len(names) == 50 and all(valid_run_name(n) for n in names)


@pytest.mark.parametrize(
    ("name", "command", "nodes", "reason", "message"),
    [
        ("r", [], 1, "NoCommand", "no command to run; put it after `--`"),
        ("r", [""], 1, "NoCommand", "no command to run"),
        ("r", ["python"], 0, "BadNodes", "--nodes 0 is out of range; give 1 to 64 nodes"),
        ("r", ["python"], RUN_NODES_MAX + 1, "BadNodes", "--nodes 65 is out of range"),
        ("Bad_Name", ["python"], 1, "BadRunName", "run name 'Bad_Name' is not valid"),
        ("a" * 61, ["python"], 1, "BadRunName", "at most 60"),
        ("1abc", ["python"], 1, "BadRunName", "starting with a letter"),
    ],
)
def test_bad_requests_are_refused_before_packaging(
    name: str, command: list[str], nodes: int, reason: str, message: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_run(name, command, nodes)
    assert e.value.reason == reason and message in e.value.message


def test_a_good_request_passes() -> None:
    validate_run("train-ab1cd", ["torchrun", "train.py"], 2)


def test_the_run_manifest_takes_the_notebook_spec_but_not_its_server() -> None:
    spec = {
        "resources": {"gpu": {"count": 2, "type": "l4"}},
        "env": [{"name": "A", "value": "1"}],
        "command": ["jupyter", "lab"],
        "port": 9999,
        "workdir": "/content",
        "build": {"upload": {"md5": "a" * 32, "requestID": "r1"}},
        # A notebook's own: never in a run.
        "idle": {"stopAfter": "2h"},
        "workspace": {"size": "50Gi"},
        "sync": {"maxFileSize": "100Mi"},
    }
    manifest = run_manifest(
        "t-1", "team", spec, ["python", "train.py"], 2, ttl_seconds_after_finished=600, directory="/src/t"
    )
    assert manifest == {
        "apiVersion": "nbd.dev/v1alpha1",
        "kind": "Run",
        "metadata": {
            "name": "t-1",
            "namespace": "team",
            "labels": {"app.kubernetes.io/managed-by": "nbd"},
            "annotations": {"nbd.dev/local-directory": "/src/t"},
        },
        "spec": {
            "resources": {"gpu": {"count": 2, "type": "l4"}},
            "env": [{"name": "A", "value": "1"}],
            "workdir": "/content",
            "build": {"upload": {"md5": "a" * 32, "requestID": "r1"}},
            "command": ["python", "train.py"],
            "nodes": 2,
            "ttlSecondsAfterFinished": 600,
        },
    }
    assert "ttlSecondsAfterFinished" not in run_manifest("t", "ns", {}, ["x"], 1)["spec"]


def _run(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "t-1",
            "namespace": "team",
            "uid": "u1",
            "generation": 2,
            "creationTimestamp": "2026-12-03T10:00:00Z",
            "annotations": {"nbd.dev/local-directory": "/src/t"},
        },
        "spec": {"command": ["python", "t.py"], "build": {"upload": {"md5": "b" * 32}}, **spec},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "spec", "expected"),
    [
        ({}, {}, {"phase": RunPhase.PENDING, "nodes": 1, "gpus_per_node": 0, "exit_code": None}),
        (
            {"phase": "Running", "startTime": "2026-12-03T10:01:00Z", "job": "t-1", "image": "IMG"},
            {"nodes": 2, "resources": {"gpu": {"type": "l4"}}},
            {
                "phase": RunPhase.RUNNING,
                "nodes": 2,
                "gpus_per_node": 1,
                "gpu_type": "l4",
                "job": "t-1",
                "image": "IMG",
                "started": datetime(2026, 12, 3, 10, 1, tzinfo=UTC),
            },
        ),
        (
            {
                "phase": "Failed",
                "exitCode": 3,
                "failedRank": 1,
                "completionTime": "2026-12-03T10:05:00Z",
                "conditions": [
                    {"type": "Finished", "reason": "RankFailed", "message": "rank 1 exited with 3"}
                ],
                "ranks": [
                    {"index": 1, "pod": "t-1-1-x", "phase": "Failed", "exitCode": 3},
                    {"index": 0, "pod": "t-1-0-y", "phase": "Failed"},
                ],
            },
            {"nodes": 2, "outputs": {"path": "/content/out"}},
            {
                "phase": RunPhase.FAILED,
                "exit_code": 3,
                "failed_rank": 1,
                "reason": "RankFailed",
                "message": "rank 1 exited with 3",
                "outputs_path": "/content/out",
                "ranks": (Rank(0, "t-1-0-y", "Failed", None), Rank(1, "t-1-1-x", "Failed", 3)),
            },
        ),
        ({"phase": "Stopped", "reason": "Stopped"}, {}, {"phase": RunPhase.STOPPED, "reason": "Stopped"}),
        ({"phase": "NoSuchPhase", "exitCode": True}, {}, {"phase": RunPhase.PENDING, "exit_code": None}),
    ],
)
def test_run_info(status: dict[str, Any], spec: dict[str, Any], expected: dict[str, Any]) -> None:
    info = run_info(_run(status, **spec), context="kind")
    assert (info.name, info.namespace, info.context, info.uid) == ("t-1", "team", "kind", "u1")
    assert info.command == ("python", "t.py") and info.context_md5 == "b" * 32
    assert info.directory == "/src/t" and info.created == datetime(2026, 12, 3, 10, tzinfo=UTC)
    for key, value in expected.items():
        assert getattr(info, key) == value, key


@pytest.mark.parametrize(
    ("phase", "finished"),
    [(p, p in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.STOPPED)) for p in RunPhase],
)
def test_finished_phases(phase: RunPhase, finished: bool) -> None:
    assert phase.finished is finished


def test_rank_prefix() -> None:
    assert rank_prefix(0, 1) == "" and rank_prefix(1, 2) == "[rank 1] "
