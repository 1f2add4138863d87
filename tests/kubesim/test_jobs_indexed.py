"""Indexed Jobs: upstream's validation, the pure plan, and indexed pods run by kubesim."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim import jobpolicy
from kubesim.jobs import JobController, plan
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)

NOW = 1_700_000_000.0
INDEX = "batch.kubernetes.io/job-completion-index"


def job(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": 3,
        "parallelism": 3,
        "backoffLimit": 6,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}},
    }
    base.update(spec)
    return {"metadata": {"name": "j", "uid": "u"}, "spec": base, "status": {}}


def pod(index: int, phase: str, exit_code: int = 1, failures: int | None = None) -> dict[str, Any]:
    annotations = {INDEX: str(index)}
    if failures is not None:
        annotations[jobpolicy.FAILURE_COUNT_ANNOTATION] = str(failures)
    status: dict[str, Any] = {"phase": phase}
    if phase == "Failed":
        status["containerStatuses"] = [
            {"name": "c", "state": {"terminated": {"exitCode": exit_code}}, "restartCount": 0}
        ]
    return {"metadata": {"name": f"j-{index}-{phase.lower()}", "annotations": annotations}, "status": status}


def then(j: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """`j` as the controller left it (its status written)."""
    return j | {"status": status}


def ended(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`pods` once the controller's deletions made the running ones fail."""
    return [p | {"status": {"phase": "Failed"}} if p["status"]["phase"] == "Running" else p for p in pods]


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c.get("reason", "") for c in status.get("conditions") or []}


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"completionMode": "Indexed"}, "spec.completions: Required value: when completion mode is Indexed"),
        (
            {"completionMode": "Sometimes"},
            'spec.completionMode: Unsupported value: "Sometimes": supported values: "NonIndexed", "Indexed"',
        ),
        (
            {"backoffLimitPerIndex": 1},
            "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode",
        ),
        (
            {"completionMode": "Indexed", "completions": 2, "maxFailedIndexes": 1},
            "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
        ),
        (
            {"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": 0, "maxFailedIndexes": 3},
            "spec.maxFailedIndexes: Invalid value: 3: must be less than or equal to completions",
        ),
        (
            {"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": -1},
            "spec.backoffLimitPerIndex: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            {"completionMode": "Indexed", "completions": 2, "parallelism": 100_001},
            "spec.parallelism: Invalid value: 100001: must be less than or equal to 100000 when completion mode "
            "is Indexed",
        ),
        (
            {"successPolicy": {"rules": [{"succeededCount": 1}]}},
            "spec.successPolicy: Invalid value: requires indexed completion mode",
        ),
        (
            {
                "completionMode": "Indexed",
                "completions": 2,
                "successPolicy": {"rules": [{"succeededCount": 3}]},
            },
            "spec.successPolicy.rules[0].succeededCount: Invalid value: 3: must be less than or equal to 2 (the "
            "number of specified completions)",
        ),
        (
            {
                "completionMode": "Indexed",
                "completions": 2,
                "successPolicy": {"rules": [{"succeededIndexes": "0-5"}]},
            },
            'spec.successPolicy.rules[0].succeededIndexes: Invalid value: "0-5": error parsing succeededIndexes: '
            "too large index: 5",
        ),
    ],
)
def test_validation_says_what_upstream_says(spec: dict[str, Any], message: str) -> None:
    assert message in [f"{c['field']}: {c['message']}" for c in jobpolicy.validate_spec(spec)]


def test_an_indexed_jobs_last_hostname_must_be_a_dns_label() -> None:
    spec = {"completionMode": "Indexed", "completions": 10}
    assert jobpolicy.validate_indexed_name("a" * 61, spec) == []
    [cause] = jobpolicy.validate_indexed_name("a" * 62, spec)
    assert cause["field"] == "metadata.name" and cause["message"] == (
        f'Invalid value: "{"a" * 62}": will not able to create pod with invalid DNS label: {"a" * 62}-9'
    )
    assert jobpolicy.validate_indexed_name("a" * 62, {"completions": 10}) == []  # NonIndexed: no hostnames


def test_valid_indexed_specs_pass() -> None:
    assert jobpolicy.validate_spec(job()["spec"]) == []
    spec = job(
        backoffLimitPerIndex=0, maxFailedIndexes=0, successPolicy={"rules": [{"succeededIndexes": "0"}]}
    )
    assert jobpolicy.validate_spec(spec["spec"]) == []


def test_intervals_round_trip() -> None:
    assert jobpolicy.format_intervals({0, 1}) == "0-1"
    assert jobpolicy.format_intervals([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert jobpolicy.format_intervals(set()) == ""
    assert jobpolicy.parse_intervals("0-2,5", 6) == {0, 1, 2, 5}
    assert jobpolicy.parse_intervals("0-2,9,x", 6) == {0, 1, 2}  # the controller skips what it cannot use
    with pytest.raises(ValueError, match="non-increasing order"):
        jobpolicy.parse_intervals("3,1", 6, strict=True)


# ----------------------------------------------------------------------------- the plan


def test_plan_creates_every_index_up_to_parallelism() -> None:
    p = plan(job(parallelism=2), [], NOW)
    assert p.create == 0 and p.create_indexes == [(0, 0), (1, 0)]
    p = plan(job(parallelism=2), [pod(0, "Succeeded"), pod(1, "Running")], NOW)
    assert p.create_indexes == [(2, 0)] and p.status["completedIndexes"] == "0"


def test_plan_completes_with_completed_indexes() -> None:
    p = plan(job(), [pod(0, "Succeeded"), pod(1, "Succeeded"), pod(2, "Succeeded")], NOW)
    assert conditions(p.status) == {
        "SuccessCriteriaMet": "CompletionsReached",
        "Complete": "CompletionsReached",
    }
    assert p.status["completedIndexes"] == "0-2" and p.status["succeeded"] == 3


def test_plan_replaces_a_failed_index_with_the_same_index() -> None:
    p = plan(job(), [pod(0, "Running"), pod(1, "Failed"), pod(2, "Running")], NOW)
    assert p.create_indexes == [(1, 1)] and p.status["failed"] == 1 and "failedIndexes" not in p.status


def test_backoff_limit_per_index_zero_fails_the_index_and_max_failed_zero_the_job() -> None:
    pods = [pod(0, "Running"), pod(1, "Failed"), pod(2, "Running")]
    p = plan(job(backoffLimitPerIndex=0), pods, NOW)
    assert p.status["failedIndexes"] == "1" and p.create_indexes == [] and conditions(p.status) == {}
    j = job(backoffLimitPerIndex=0, maxFailedIndexes=0)
    p = plan(j, pods, NOW)
    # As upstream since 1.31: FailureTarget first, the pods stopped, Failed once they ended.
    assert conditions(p.status) == {"FailureTarget": "MaxFailedIndexesExceeded"}
    assert sorted(p.delete) == ["j-0-running", "j-2-running"]
    p2 = plan(then(j, p.status), pods, NOW + 1)
    assert conditions(p2.status) == {"FailureTarget": "MaxFailedIndexesExceeded"}
    p3 = plan(then(j, p2.status), ended(pods), NOW + 2)
    assert conditions(p3.status) == {
        "FailureTarget": "MaxFailedIndexesExceeded",
        "Failed": "MaxFailedIndexesExceeded",
    }
    failed = [c for c in p3.status["conditions"] if c["type"] == "Failed"][0]
    assert failed["message"] == "Job has exceeded the specified maximal number of failed indexes"
    assert p3.status["failedIndexes"] == "1" and p3.delete == []  # the stopped pods fail no index


def test_backoff_limit_per_index_retries_then_fails_when_all_indexes_ended() -> None:
    p = plan(job(backoffLimitPerIndex=1), [pod(0, "Succeeded"), pod(1, "Failed"), pod(2, "Succeeded")], NOW)
    assert p.create_indexes == [(1, 1)] and p.status["failedIndexes"] == ""
    retried = [pod(0, "Succeeded"), pod(1, "Failed"), pod(1, "Failed", failures=1), pod(2, "Succeeded")]
    retried[2]["metadata"]["name"] = "j-1-again"
    p = plan(job(backoffLimitPerIndex=1), retried, NOW)
    assert conditions(p.status) == {"FailureTarget": "FailedIndexes", "Failed": "FailedIndexes"}
    assert p.status["failedIndexes"] == "1" and p.status["completedIndexes"] == "0,2"


def test_failure_policy_actions_on_indexes() -> None:
    def rules(action: str) -> dict[str, Any]:
        return {"rules": [{"action": action, "onExitCodes": {"operator": "In", "values": [42]}}]}

    pods = [pod(0, "Running"), pod(1, "Failed", exit_code=42), pod(2, "Running")]
    p = plan(job(backoffLimitPerIndex=3, podFailurePolicy=rules("FailIndex")), pods, NOW)
    assert p.status["failedIndexes"] == "1" and p.create_indexes == [] and conditions(p.status) == {}
    p = plan(job(podFailurePolicy=rules("FailJob")), pods, NOW)
    assert conditions(p.status) == {"FailureTarget": "PodFailurePolicy"}
    assert sorted(p.delete) == ["j-0-running", "j-2-running"]
    p = plan(job(backoffLimit=0, podFailurePolicy=rules("Ignore")), pods, NOW)
    assert conditions(p.status) == {} and p.create_indexes == [(1, 0)] and p.status.get("failed", 0) == 0
    # Count (or no match): the Job-wide backoffLimit decides.
    p = plan(job(backoffLimit=0, podFailurePolicy=rules("Count")), pods, NOW)
    assert conditions(p.status) == {"FailureTarget": "BackoffLimitExceeded"}


def test_success_policy_completes_early_and_stops_the_rest() -> None:
    policy = {"rules": [{"succeededIndexes": "0"}]}
    j = job(successPolicy=policy)
    pods = [pod(0, "Succeeded"), pod(1, "Running"), pod(2, "Running")]
    p = plan(j, pods, NOW)
    assert (
        conditions(p.status) == {"SuccessCriteriaMet": "SuccessPolicy"} and "completionTime" not in p.status
    )
    assert sorted(p.delete) == ["j-1-running", "j-2-running"]
    p2 = plan(then(j, p.status), ended(pods), NOW + 1)
    assert conditions(p2.status) == {"SuccessCriteriaMet": "SuccessPolicy", "Complete": "SuccessPolicy"}
    assert [c["message"] for c in p2.status["conditions"]] == ["Matched rules at index 0"] * 2
    assert p2.status["completionTime"] and p2.status["completedIndexes"] == "0"
    count = {"rules": [{"succeededIndexes": "0-2", "succeededCount": 2}]}
    assert conditions(plan(job(successPolicy=count), [pod(0, "Succeeded")], NOW).status) == {}


def test_pods_of_an_indexed_job_carry_their_index() -> None:
    controller = JobController.__new__(JobController)
    j = job(backoffLimitPerIndex=1)
    j["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    p = controller.pod_for(j, 1, 1)
    assert p["metadata"]["name"].startswith("j-1-")
    assert p["metadata"]["annotations"][INDEX] == "1" and p["metadata"]["labels"][INDEX] == "1"
    assert p["metadata"]["annotations"][jobpolicy.FAILURE_COUNT_ANNOTATION] == "1"
    assert p["spec"]["hostname"] == "j-1"
    assert p["spec"]["containers"][0]["env"][-1] == {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX}']"}},
    }
    j["spec"]["template"]["spec"]["hostname"] = "mine"
    assert controller.pod_for(j, 0)["spec"]["hostname"] == "mine"


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("indexed"))
    yield server
    server.stop()


def indexed(name: str, script: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": 2,
        "parallelism": 2,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
            }
        },
    }
    body.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": body}


def test_the_api_refuses_an_indexed_job_without_completions(ks: KubesimServer) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    batch = client.BatchV1Api(ks.api_client())
    body = indexed("nocount", "true")
    del body["spec"]["completions"]
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("default", body)
    assert caught.value.status == 422
    assert json.loads(caught.value.body)["message"] == (
        'Job.batch "nocount" is invalid: spec.completions: Required value: when completion mode is Indexed'
    )


def test_an_indexed_job_runs_every_index(ks: KubesimServer) -> None:
    from kubernetes import client

    api = ks.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(
        "default", indexed("idx", 'echo "index=$JOB_COMPLETION_INDEX host=$(hostname)"')
    )
    ks.kubectl("wait", "--for=condition=Complete", "job/idx", "--timeout=60s")
    st = batch.read_namespaced_job("idx", "default").status
    assert st.completed_indexes == "0-1" and st.succeeded == 2
    pods = core.list_namespaced_pod("default", label_selector="job-name=idx").items
    assert sorted(p.metadata.labels[INDEX] for p in pods) == ["0", "1"]
    for p in pods:
        i = p.metadata.annotations[INDEX]
        assert p.spec.hostname == f"idx-{i}"
        log = core.read_namespaced_pod_log(p.metadata.name, "default")
        assert log == f"index={i} host=idx-{i}\n"


def test_a_failing_index_fails_the_job_and_stops_the_other_pod(ks: KubesimServer) -> None:
    from kubernetes import client

    api = ks.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    script = 'if [ "$JOB_COMPLETION_INDEX" = 1 ]; then exit 3; fi; exec sleep 300'
    batch.create_namespaced_job(
        "default", indexed("onefails", script, backoffLimitPerIndex=0, maxFailedIndexes=0)
    )
    ks.kubectl("wait", "--for=condition=Failed", "job/onefails", "--timeout=60s")
    st = batch.read_namespaced_job("onefails", "default").status
    failed = [c for c in st.conditions if c.type == "Failed"][0]
    assert failed.reason == "MaxFailedIndexesExceeded" and st.failed_indexes == "1"

    def sleeper_gone() -> bool:
        pods = core.list_namespaced_pod("default", label_selector="job-name=onefails").items
        return [p.metadata.annotations[INDEX] for p in pods] == ["1"]

    wait_for(sleeper_gone, timeout=30, what="the running index's pod to be deleted")
