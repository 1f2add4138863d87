"""A Job's podFailurePolicy on kubesim: upstream's validation, the pure matching, and a pod taken
away through the Eviction API that the Job replaces instead of failing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim import jobpolicy
from kubesim.jobs import plan
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(120)

IGNORE_DISRUPTION = {
    "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
}


def _spec(policy: dict[str, Any], restart: str = "Never", **extra: Any) -> dict[str, Any]:
    return {
        "podFailurePolicy": policy,
        "template": {"spec": {"restartPolicy": restart, "containers": [{"name": "main"}]}},
        **extra,
    }


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        (
            _spec(IGNORE_DISRUPTION, restart="OnFailure"),
            [
                'spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when '
                "podFailurePolicy is specified"
            ],
        ),
        (
            _spec(IGNORE_DISRUPTION, podReplacementPolicy="TerminatingOrFailed"),
            [
                'spec.podReplacementPolicy: Unsupported value: "TerminatingOrFailed": supported values: "Failed"'
            ],
        ),
        (
            _spec({"rules": [{"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}}]}),
            [
                'spec.podFailurePolicy.rules[0].action: Unsupported value: "Retry": supported values: "Count", '
                '"FailIndex", "FailJob", "Ignore"'
            ],
        ),
        (
            _spec({"rules": [{"action": "FailJob"}]}),
            [
                "spec.podFailurePolicy.rules[0]: Invalid value: specifying one of OnExitCodes and "
                "OnPodConditions is required"
            ],
        ),
        (
            _spec(
                {
                    "rules": [
                        {
                            "action": "FailJob",
                            "onExitCodes": {"operator": "In", "values": [0, 3, 2]},
                            "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}],
                        }
                    ]
                }
            ),
            [
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the "
                "In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: [0, 3, 2]: must be ordered",
                'spec.podFailurePolicy.rules[0].onPodConditions[0].status: Unsupported value: "Maybe": '
                'supported values: "False", "True", "Unknown"',
                "spec.podFailurePolicy.rules[0]: Invalid value: specifying both OnExitCodes and OnPodConditions "
                "is not supported",
            ],
        ),
        (
            _spec(
                {
                    "rules": [
                        {
                            "action": "Count",
                            "onExitCodes": {"containerName": "x", "operator": "NotIn", "values": [1]},
                        }
                    ]
                }
            ),
            [
                'spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: "x": must be one of '
                "the container or initContainer names in the pod template"
            ],
        ),
        (
            _spec(
                {
                    "rules": [
                        {"action": "FailIndex", "onExitCodes": {"operator": "Between", "values": [1, 1]}},
                        {"action": "", "onPodConditions": [{"type": "Bad Type", "status": ""}]},
                    ]
                }
            ),
            [
                'spec.podFailurePolicy.rules[0].action: Invalid value: "FailIndex": requires the '
                "backoffLimitPerIndex to be set",
                'spec.podFailurePolicy.rules[0].onExitCodes.operator: Unsupported value: "Between": supported '
                'values: "In", "NotIn"',
                "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Duplicate value: 1",
                'spec.podFailurePolicy.rules[1].action: Required value: valid values: ["Count", "FailIndex", '
                '"FailJob", "Ignore"]',
                'spec.podFailurePolicy.rules[1].onPodConditions[0].type: Invalid value: "Bad Type": name part '
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character",
                "spec.podFailurePolicy.rules[1].onPodConditions[0].status: Required value: valid values: "
                '["False", "True", "Unknown"]',
            ],
        ),
        (
            _spec({"rules": [{"action": "Ignore", "onExitCodes": {"values": []}}]}),
            [
                'spec.podFailurePolicy.rules[0].onExitCodes.operator: Required value: valid values: ["In", '
                '"NotIn"]',
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []: at least one value is "
                "required",
            ],
        ),
    ],
)
def test_validation_says_what_upstream_says(spec: dict[str, Any], messages: list[str]) -> None:
    got = [f"{c['field']}: {c['message']}" for c in jobpolicy.validate(spec)]
    assert got == messages


def _failed_pod(exit_code: int, *conditions: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {
            "phase": "Failed",
            "conditions": [{"type": c, "status": "True"} for c in conditions],
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": exit_code}}}],
        },
    }


def _job(policy: dict[str, Any], backoff: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "uid": "u"},
        "spec": {"backoffLimit": backoff, "podReplacementPolicy": "Failed", **_spec(policy)},
        "status": {},
    }


def test_an_ignored_failure_is_not_counted_and_is_replaced() -> None:
    p = plan(_job(IGNORE_DISRUPTION), [_failed_pod(137, "DisruptionTarget")], 1_700_000_000.0)
    assert p.create == 1 and "conditions" not in p.status and "failed" not in p.status
    counted = plan(_job(IGNORE_DISRUPTION), [_failed_pod(1)], 1_700_000_000.0)
    assert counted.create == 0
    assert {c["type"]: c["reason"] for c in counted.status["conditions"]}["Failed"] == "BackoffLimitExceeded"


def test_fail_job_rule_fails_at_once_with_the_controllers_message() -> None:
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}
        ]
    }
    p = plan(_job(policy, backoff=6), [_failed_pod(42)], 1_700_000_000.0)
    failed = [c for c in p.status["conditions"] if c["type"] == "Failed"][0]
    assert failed["reason"] == "PodFailurePolicy"
    assert (
        failed["message"]
        == "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
    )
    # Another code is the default handling: counted, within the backoff limit.
    assert plan(_job(policy, backoff=6), [_failed_pod(1)], 1_700_000_000.0).create == 1


def test_a_pod_being_deleted_is_replaced_only_once_it_failed() -> None:
    terminating = {
        "metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": "Running"},
    }
    assert plan(_job(IGNORE_DISRUPTION), [terminating], 1_700_000_000.0).create == 0


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("jobpolicy"))
    yield server
    server.stop()


def test_the_api_refuses_a_policy_with_restart_on_failure(ks: KubesimServer) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    batch = client.BatchV1Api(ks.api_client())
    body = {
        "metadata": {"name": "onfailure"},
        "spec": _spec(IGNORE_DISRUPTION, restart="OnFailure")
        | {
            "template": {
                "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "busybox"}]}
            }
        },
    }
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("default", body)
    assert caught.value.status == 422
    assert (
        'Job.batch "onfailure" is invalid: spec.template.spec.restartPolicy: Invalid value: "OnFailure": only '
        '"Never" is supported when podFailurePolicy is specified'
    ) == json.loads(caught.value.body)["message"]


def test_an_evicted_pod_is_replaced_and_the_job_completes(ks: KubesimServer) -> None:
    from kubernetes import client

    api = ks.api_client()
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    marker = ks.state_dir / "evicted-once"
    script = f"if [ -e {marker} ]; then echo done; exit 0; fi; touch {marker}; sleep 60"
    batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": "drained"},
            "spec": {
                "backoffLimit": 0,
                "podFailurePolicy": IGNORE_DISRUPTION,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
                    }
                },
            },
        },
    )
    assert batch.read_namespaced_job("drained", "default").spec.pod_replacement_policy == "Failed"

    def running() -> Any:
        items = core.list_namespaced_pod("default", label_selector="job-name=drained").items
        return next((p for p in items if p.status.phase == "Running"), None) if marker.exists() else None

    first = wait_for(running, 30, "the first pod running")
    core.create_namespaced_pod_eviction(
        first.metadata.name,
        "default",
        {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first.metadata.name}},
    )
    ks.kubectl("wait", "--for=condition=Complete", "job/drained", "--timeout=60s")
    status = batch.read_namespaced_job("drained", "default").status
    assert status.succeeded == 1 and not status.failed
    names = {
        p.metadata.name for p in core.list_namespaced_pod("default", label_selector="job-name=drained").items
    }
    assert first.metadata.name not in names
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=drained").items
    assert sum(1 for e in events if e.reason == "SuccessfulCreate") == 2


def test_an_eviction_names_its_pod_and_the_pod_exists(ks: KubesimServer) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(ks.api_client())
    core.create_namespaced_pod(
        "default",
        {"metadata": {"name": "stays"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    )
    for name, body, status, message in (
        (
            "stays",
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}},
            400,
            "name in URL does not match name in Eviction object: stays != other",
        ),
        (
            "absent",
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "absent"}},
            404,
            'pods "absent" not found',
        ),
    ):
        with pytest.raises(ApiException) as caught:
            core.create_namespaced_pod_eviction(name, "default", body)
        assert caught.value.status == status
        assert json.loads(caught.value.body)["message"] == message
    assert core.read_namespaced_pod("stays", "default").metadata.deletion_timestamp is None
