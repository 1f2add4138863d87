"""Builds against a registry that wants credentials, on kubesim with its kubelet: a push without
them fails with the registry's 401, the Secret named by NBD_REGISTRY_SECRET makes the same kind of
build push, and the notebook pod pulls with it as imagePullSecrets while a pod without it is refused
with the kubelet's words."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from controller_stack import Controller, Notebooks, tarball, wait_for
from test_full_path import REGISTRY, cluster, needs_jobs, upload_and_mark

from kubesim.images.registry import RegistryPolicy

__all__ = ["cluster"]

DOCKERFILE = "FROM python:3.12\nWORKDIR /content\nRUN echo ok > api\nCOPY . /content\n"
SERVE = ["python3", "-m", "http.server", "8888"]


def docker_config_secret(name: str, username: str, password: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = json.dumps({"auths": {REGISTRY: {"auth": auth}}})
    return {
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def _waiting(nb: Notebooks, pod: str) -> dict[str, Any] | None:
    status = (nb.pod(pod) or {}).get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and "Failed to pull" in str(
            waiting.get("message")
        ):
            return dict(waiting)
    return None


def _pull_events(nb: Notebooks, pod: str) -> list[str]:
    events = nb.core.list_namespaced_event("default", field_selector=f"involvedObject.name={pod}").items
    return [str(e.message) for e in events if e.reason == "Failed"]


@needs_jobs
@pytest.mark.parametrize("cluster", ["buildkit", "kaniko"], indirect=True)
def test_an_unauthenticated_push_fails_and_an_authenticated_one_works(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    controller: Controller = cluster["controller"]
    RegistryPolicy(cluster["kubelet"].images.root).require(f"{REGISTRY}/nbd", "pusher", "s3cret")

    md5 = upload_and_mark(nb, "anon", tarball({"Dockerfile": DOCKERFILE, "a.py": "a = 1\n"}), command=SERVE)
    built = wait_for(
        "the refused push",
        lambda: (c := nb.condition("anon", "Built")) and c["reason"] == "BuildFailed" and c,
        timeout=120,
    )
    image = f"{REGISTRY}/nbd/default-context:{md5}"
    uploads = f"https://{REGISTRY}/v2/nbd/default-context/blobs/uploads/"
    if controller.env["NBD_BUILDER"] == "buildkit":
        refusal = (
            f"failed to push {image}: unexpected status from POST request to {uploads}: 401 Unauthorized"
        )
    else:
        refusal = f'checking push permission for "{image}": POST {uploads}: UNAUTHORIZED'
    assert refusal in built["message"]
    assert nb.status("anon")["phase"] == "Failed"
    assert "s3cret" not in built["message"]

    nb.core.create_namespaced_secret("default", docker_config_secret("regcred", "pusher", "s3cret"))
    controller.stop()
    controller.env["NBD_REGISTRY_SECRET"] = "regcred"
    controller.start()
    md5 = upload_and_mark(nb, "authed", tarball({"Dockerfile": DOCKERFILE, "b.py": "b = 1\n"}), command=SERVE)
    status = wait_for(
        "Ready with the registry's credentials",
        lambda: (s := nb.status("authed")).get("phase") in ("Ready", "Failed") and s,
        timeout=120,
    )
    assert status["phase"] == "Ready", status
    assert (nb.pod(status["pod"]) or {})["spec"]["imagePullSecrets"] == [{"name": "regcred"}]

    # The pushed image is private: a pod without the pull secret, or with a wrong one, is refused.
    image = f"{REGISTRY}/nbd/default-context:{md5}"
    nb.core.create_namespaced_secret("default", docker_config_secret("wrong", "pusher", "guess"))
    for name, secrets in (("nocreds", []), ("badcreds", [{"name": "wrong"}])):
        nb.core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": name},
                "spec": {
                    "containers": [{"name": "c", "image": image, "command": SERVE}],
                    "imagePullSecrets": secrets,
                },
            },
        )
    waiting = wait_for("the refused pull", lambda: _waiting(nb, "nocreds"), timeout=30)
    assert (
        f'failed to resolve reference "{image}": pull access denied, repository does not exist or may '
        "require authorization: authorization failed: no basic auth credentials"
    ) in waiting["message"] or waiting["reason"] == "ImagePullBackOff"
    assert any("no basic auth credentials" in m for m in _pull_events(nb, "nocreds"))
    wait_for("the wrong credentials refused", lambda: _waiting(nb, "badcreds"), timeout=30)
    assert any(
        f"unexpected status from HEAD request to https://{REGISTRY}/v2/nbd/default-context/manifests/{md5}: "
        "401 Unauthorized" in m
        for m in _pull_events(nb, "badcreds")
    )
