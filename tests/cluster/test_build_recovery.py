"""Builds that recover, on kubesim with its kubelet and the controller as a process: a build pod
evicted mid-build is replaced by its Job (podFailurePolicy), a failed build stays failed for its
request and a new request builds again, and a build pod that cannot start says why within seconds."""

from __future__ import annotations

import time
import uuid
from typing import Any

from controller_stack import Controller, Notebooks, tarball, wait_for
from test_full_path import REGISTRY, cluster, needs_jobs, upload_and_mark
from test_registry_builds import SERVE, docker_config_secret

from kubesim.images.registry import RegistryPolicy

__all__ = ["cluster"]


def _dockerfile(run: str) -> str:
    return f"FROM python:3.12\nWORKDIR /content\nRUN {run}\nCOPY . /content\n"


def _built(nb: Notebooks, name: str, reason: str) -> Any:
    return (c := nb.condition(name, "Built")) and c["reason"] == reason and c


def _build_pods(nb: Notebooks, md5: str) -> list[Any]:
    return nb.core.list_namespaced_pod("default", label_selector=f"nbd.dev/context-md5={md5}").items


@needs_jobs
def test_a_build_pod_evicted_mid_build_is_replaced_and_the_build_finishes(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    # A RUN of its own (never cached) that takes a while, so that the eviction lands mid-build.
    run = f"sleep 3 && echo {uuid.uuid4().hex} > api"
    md5 = upload_and_mark(
        nb, "evicted", tarball({"Dockerfile": _dockerfile(run), "a.py": "a = 1\n"}), command=SERVE
    )

    def building() -> Any:
        for pod in _build_pods(nb, md5):
            for status in pod.status.container_statuses or []:
                if status.name == "build" and status.state.running:
                    return pod
        return None

    first = wait_for("the build container running", building, timeout=60)
    nb.core.create_namespaced_pod_eviction(
        first.metadata.name,
        "default",
        {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first.metadata.name}},
    )
    status = wait_for(
        "Ready after the eviction",
        lambda: (s := nb.status("evicted")).get("phase") in ("Ready", "Failed") and s,
        timeout=120,
    )
    assert status["phase"] == "Ready", status
    job = nb.batch.read_namespaced_job(f"nbd-build-{md5}", "default")
    assert job.status.succeeded == 1 and not job.status.failed
    events = nb.core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name=nbd-build-{md5}"
    ).items
    assert sum(1 for e in events if e.reason == "SuccessfulCreate") == 2


@needs_jobs
def test_a_failed_build_stays_failed_for_its_request_and_a_new_launch_builds_again(
    cluster: dict[str, Any],
) -> None:
    nb: Notebooks = cluster["nb"]
    controller: Controller = cluster["controller"]
    RegistryPolicy(cluster["kubelet"].images.root).require(f"{REGISTRY}/nbd", "pusher", "s3cret")
    body = tarball({"Dockerfile": _dockerfile("echo ok > api"), "c.py": "c = 1\n"})
    md5 = upload_and_mark(nb, "retry", body, command=SERVE)
    wait_for("the failed push", lambda: _built(nb, "retry", "BuildFailed"), timeout=120)
    failed_uid = nb.batch.read_namespaced_job(f"nbd-build-{md5}", "default").metadata.uid

    # The admin gives the builds the registry's credentials.
    nb.core.create_namespaced_secret("default", docker_config_secret("regcred", "pusher", "s3cret"))
    controller.stop()
    controller.env["NBD_REGISTRY_SECRET"] = "regcred"
    controller.start()
    # The same request stays failed: a change of another field is looked at, the build is not redone.
    nb.patch_spec("retry", {"env": [{"name": "A", "value": "1"}]})
    generation = (nb.get("retry") or {})["metadata"]["generation"]
    status = wait_for(
        "the controller to look at the new generation",
        lambda: (s := nb.status("retry")).get("observedGeneration") == generation and s,
        timeout=30,
    )
    assert status["phase"] == "Failed"
    assert _built(nb, "retry", "BuildFailed")
    assert nb.batch.read_namespaced_job(f"nbd-build-{md5}", "default").metadata.uid == failed_uid

    # A new launch of the same content (a new request): the failed Job goes and the build runs again.
    nb.patch_spec("retry", {"build": {"upload": {"md5": md5, "requestID": "r2"}}})
    retrying = wait_for("the retry", lambda: _built(nb, "retry", "RetryingFailedBuild"), timeout=30)
    assert retrying["message"] == (
        f"Retrying the failed build of context {md5}: Job nbd-build-{md5} failed for request r1; "
        "building again for request r2."
    )
    status = wait_for(
        "Ready after the retry",
        lambda: (s := nb.status("retry")).get("phase") in ("Ready", "Failed") and s,
        timeout=120,
    )
    assert status["phase"] == "Ready", status
    assert nb.batch.read_namespaced_job(f"nbd-build-{md5}", "default").metadata.uid != failed_uid


@needs_jobs
def test_a_build_pod_that_cannot_start_says_why_within_seconds(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    controller: Controller = cluster["controller"]
    controller.stop()
    controller.env["NBD_REGISTRY_SECRET"] = "absent"
    controller.start()
    upload_and_mark(nb, "nosecret", tarball({"Dockerfile": _dockerfile("echo ok > api"), "d.py": "d = 1\n"}))
    started = time.monotonic()
    built = wait_for(
        "the missing Secret reported", lambda: _built(nb, "nosecret", "BuildNotStarting"), timeout=30
    )
    assert time.monotonic() - started < 15
    assert (
        'FailedMount: MountVolume.SetUp failed for volume "registry-auth" : secret "absent" not found'
        in built["message"]
    )

    controller.stop()
    controller.env.pop("NBD_REGISTRY_SECRET")
    controller.env["NBD_BUILDKIT_IMAGE"] = "registry.example/missing/buildkit:v1"
    controller.start()
    upload_and_mark(nb, "noimage", tarball({"Dockerfile": _dockerfile("echo ok > api"), "e.py": "e = 1\n"}))
    started = time.monotonic()
    built = wait_for(
        "the builder's image pull reported", lambda: _built(nb, "noimage", "BuildNotStarting"), timeout=30
    )
    assert time.monotonic() - started < 15
    assert (
        'Failed to pull image "registry.example/missing/buildkit:v1"' in built["message"]
        or 'Back-off pulling image "registry.example/missing/buildkit:v1"' in built["message"]
    )
    assert nb.status("noimage")["phase"] == "Building"
