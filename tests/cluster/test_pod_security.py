"""Notebook and run pods against the Pod Security levels, checked by kubesim's admission rules
(upstream's checks): baseline always, restricted when the namespace asks for it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubesim import podsecurity
from nbd_controller.config import Config, ConfigError
from nbd_controller.decisions import BuildObserved, restricted_pods
from nbd_controller.manifests import notebook_pod, run_job

CONFIG = Config(bucket="b", registry="r")
MD5 = "0" * 32


def _notebook() -> dict[str, Any]:
    return {
        "metadata": {"name": "nb", "namespace": "t", "uid": "u"},
        "spec": {"build": {"upload": {"md5": MD5}}},
    }


def _run_pod(restricted: bool) -> dict[str, Any]:
    run = {
        "kind": "Run",
        "metadata": {"name": "r1", "namespace": "t", "uid": "u"},
        "spec": {"command": ["python", "train.py"], "build": {"upload": {"md5": MD5}}},
    }
    template = run_job(CONFIG, run, "IMG", restricted=restricted)["spec"]["template"]
    return {"metadata": template["metadata"], "spec": template["spec"]}


@pytest.mark.parametrize(
    "pod", [notebook_pod(CONFIG, _notebook(), "IMG"), _run_pod(False)], ids=["notebook", "run"]
)
def test_pods_pass_baseline_as_they_are(pod: dict[str, Any]) -> None:
    assert podsecurity.violations(pod, "baseline") == []
    assert podsecurity.violations(pod, "restricted"), "restricted needs more: only asked for where enforced"


@pytest.mark.parametrize(
    "pod",
    [notebook_pod(CONFIG, _notebook(), "IMG", restricted=True), _run_pod(True)],
    ids=["notebook", "run"],
)
def test_restricted_pods_pass_restricted(pod: dict[str, Any]) -> None:
    assert podsecurity.violations(pod, "restricted") == []
    assert pod["spec"]["securityContext"]["fsGroup"] == 100  # /content stays writable for the image's user


@pytest.mark.parametrize(
    ("setting", "label", "restricted"),
    [
        ("auto", "privileged", False),
        ("auto", "baseline", False),
        ("auto", "restricted", True),
        ("restricted", "privileged", True),
        ("baseline", "restricted", False),
    ],
)
def test_which_pods_are_restricted(setting: str, label: str, restricted: bool) -> None:
    config = Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r", "NBD_POD_SECURITY": setting})
    observed = BuildObserved(now=datetime.now(UTC), pod_security=label)
    assert restricted_pods(config, observed) is restricted


def test_a_bad_pod_security_setting_names_the_choices() -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r", "NBD_POD_SECURITY": "strict"})
    assert str(e.value) == "NBD_POD_SECURITY='strict': choose one of auto, restricted, baseline"


def test_a_bad_build_namespace_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r", "NBD_BUILD_NAMESPACE": "Builds_Here"})
    assert str(e.value) == "NBD_BUILD_NAMESPACE='Builds_Here' is not a valid namespace name"
    ok = Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r", "NBD_BUILD_NAMESPACE": "nbd-builds"})
    assert ok.build_location("team") == ("nbd-builds", "team")
    assert ok.build_location("nbd-builds") == ("nbd-builds", "")
