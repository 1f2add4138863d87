"""The Job controller: the pure plan, and Jobs run by kubesim end to end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubesim.jobs import plan
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)


def job(**spec: Any) -> dict[str, Any]:
    base = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 6,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}},
    }
    base.update(spec)
    return {"metadata": {"name": "j", "uid": "u"}, "spec": base, "status": {}}


def pods(*phases: str, restarts: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "metadata": {"name": f"p{i}"},
            "status": {"phase": ph, "containerStatuses": [{"restartCount": restarts}]},
        }
        for i, ph in enumerate(phases)
    ]


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c.get("reason", "") for c in status.get("conditions") or []}


@pytest.mark.parametrize(
    "spec, existing, create, conds, active",
    [
        ({}, [], 1, {}, 0),
        ({}, pods("Running"), 0, {}, 1),
        (
            {},
            pods("Succeeded"),
            0,
            {"SuccessCriteriaMet": "CompletionsReached", "Complete": "CompletionsReached"},
            0,
        ),
        ({"backoffLimit": 1}, pods("Failed"), 1, {}, 0),
        (
            {"backoffLimit": 1},
            pods("Failed", "Failed"),
            0,
            {"FailureTarget": "BackoffLimitExceeded", "Failed": "BackoffLimitExceeded"},
            0,
        ),
        ({"completions": 3, "parallelism": 2}, pods("Succeeded"), 2, {}, 0),
        ({"completions": 3, "parallelism": 2}, pods("Succeeded", "Succeeded", "Running"), 0, {}, 1),
        ({"suspend": True}, [], 0, {}, 0),
    ],
)
def test_plan(
    spec: dict[str, Any], existing: list[dict[str, Any]], create: int, conds: dict[str, str], active: int
) -> None:
    p = plan(job(**spec), existing, 1_700_000_000.0)
    assert p.create == create
    assert conditions(p.status) == conds
    assert p.status.get("active", 0) == active


def test_plan_counts_restarts_under_on_failure() -> None:
    j = job(backoffLimit=2)
    j["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    p = plan(j, pods("Running", restarts=3), 1_700_000_000.0)
    assert conditions(p.status) == {"FailureTarget": "BackoffLimitExceeded"} and p.delete == ["p0"]


def test_plan_deadline_and_finished_jobs() -> None:
    j = job(activeDeadlineSeconds=5)
    j["status"]["startTime"] = "2023-11-14T22:13:20Z"  # 1_700_000_000
    p = plan(j, pods("Running"), 1_700_000_010.0)
    # As upstream since 1.31: Failed (same reason) only once the Job's pods have ended.
    assert conditions(p.status) == {"FailureTarget": "DeadlineExceeded"} and p.delete == ["p0"]
    j["status"] = p.status
    assert conditions(plan(j, pods("Running"), 1_700_000_011.0).status) == {
        "FailureTarget": "DeadlineExceeded"
    }
    p = plan(j, pods("Failed"), 1_700_000_012.0)
    assert conditions(p.status) == {"FailureTarget": "DeadlineExceeded", "Failed": "DeadlineExceeded"}
    assert p.delete == [] and "completionTime" not in p.status
    done = job()
    done["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    assert plan(done, [], 1_700_000_000.0).create == 0


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("jobs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clients(ks: KubesimServer) -> Iterator[tuple[Any, Any]]:
    from kubernetes import client

    api = ks.api_client()
    yield client.BatchV1Api(api), client.CoreV1Api(api)
    api.close()


def job_manifest(name: str, script: str, backoff: int = 6) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
                }
            },
        },
    }


def test_job_succeeds(ks: KubesimServer, clients: tuple[Any, Any]) -> None:
    batch, core = clients
    created = batch.create_namespaced_job("default", job_manifest("works", "echo built"))
    ks.kubectl("wait", "--for=condition=Complete", "job/works", "--timeout=30s")
    st = batch.read_namespaced_job("works", "default").status
    assert st.succeeded == 1 and st.completion_time is not None and st.start_time is not None
    assert {c.type for c in st.conditions} == {"SuccessCriteriaMet", "Complete"}
    p = core.list_namespaced_pod("default", label_selector="job-name=works").items
    assert len(p) == 1
    labels = p[0].metadata.labels
    assert labels["batch.kubernetes.io/job-name"] == "works"
    assert labels["controller-uid"] == created.metadata.uid
    ref = p[0].metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("Job", "works", created.metadata.uid, True)
    assert ks.kubectl("logs", "job/works").stdout == "built\n"


def test_job_fails_after_backoff_limit(ks: KubesimServer, clients: tuple[Any, Any]) -> None:
    batch, core = clients
    batch.create_namespaced_job("default", job_manifest("breaks", "echo no; exit 1", backoff=2))
    ks.kubectl("wait", "--for=condition=Failed", "job/breaks", "--timeout=60s")
    st = batch.read_namespaced_job("breaks", "default").status
    assert st.failed == 3
    failed = [c for c in st.conditions if c.type == "Failed"][0]
    assert (
        failed.reason == "BackoffLimitExceeded"
        and failed.message == "Job has reached the specified backoff limit"
    )
    assert len(core.list_namespaced_pod("default", label_selector="job-name=breaks").items) == 3
