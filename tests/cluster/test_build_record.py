"""The controller's `nbd-builds` record against kubesim's API server (which holds a ConfigMap to
the real 1 MiB limit): it stays bounded, keeps what Notebooks name, and forgets on request."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from nbd_controller.builds import KEEP_RECORDS, MAX_RECORDS
from nbd_controller.kube import Kube
from nbd_controller.naming import BUILDS_CONFIGMAP


def md5(i: int) -> str:
    return f"{i:032x}"


def image(i: int) -> str:
    # Long references, as a real registry path makes them (each record ~300 bytes).
    return f"europe-west4-docker.pkg.dev/{'p' * 30}/{'r' * 40}/nbd/{'team' * 30}-context:{md5(i)}"


def test_the_record_stays_bounded_and_keeps_what_notebooks_and_runs_name(kubesim_factory: Any) -> None:
    server = kubesim_factory(kubelet=False)
    server.kubectl("apply", "-f", "cluster/manifests/crd.yaml")
    server.kubectl("apply", "-f", "cluster/manifests/run-crd.yaml")
    api = server.api_client()
    try:
        kube = Kube(api)
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map(
            "default",
            {"metadata": {"name": BUILDS_CONFIGMAP}, "data": {md5(i): image(i) for i in range(MAX_RECORDS)}},
        )
        # A Notebook names an early record, which must survive the pruning.
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "nbd.dev",
            "v1alpha1",
            "default",
            "notebooks",
            {
                "apiVersion": "nbd.dev/v1alpha1",
                "kind": "Notebook",
                "metadata": {"name": "nb"},
                "spec": {"build": {"upload": {"md5": md5(0), "requestID": "r"}}},
            },
        )
        # And a Run another one.
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "nbd.dev",
            "v1alpha1",
            "default",
            "runs",
            {
                "apiVersion": "nbd.dev/v1alpha1",
                "kind": "Run",
                "metadata": {"name": "run"},
                "spec": {"build": {"upload": {"md5": md5(1), "requestID": "r"}}, "command": ["true"]},
            },
        )

        new = MAX_RECORDS + 1
        for extra in range(new, new + 5 * (MAX_RECORDS - KEEP_RECORDS)):  # several prunings' worth
            kube.record_build("default", md5(extra), image(extra))
        record = kube.get_builds("default")
        assert len(record) <= MAX_RECORDS
        assert md5(0) in record  # named by a Notebook
        assert md5(1) in record  # named by a Run
        assert all(
            md5(i) in record for i in range(new, new + 5 * (MAX_RECORDS - KEEP_RECORDS))
        )  # all new ones

        # Recording the same build again writes nothing; forgetting removes one record.
        before = core.read_namespaced_config_map(BUILDS_CONFIGMAP, "default").metadata.resource_version
        kube.record_build("default", md5(new), image(new))
        assert (
            core.read_namespaced_config_map(BUILDS_CONFIGMAP, "default").metadata.resource_version == before
        )
        kube.forget_build("default", md5(new))
        assert md5(new) not in kube.get_builds("default")
        kube.forget_build("absent-namespace", md5(new))  # no record there: nothing to forget
    finally:
        api.close()


def test_pruning_the_record_works_before_the_run_crd_is_installed(kubesim_factory: Any) -> None:
    server = kubesim_factory(kubelet=False)
    server.kubectl("apply", "-f", "cluster/manifests/crd.yaml")
    api = server.api_client()
    try:
        client.CoreV1Api(api).create_namespaced_config_map(
            "default",
            {"metadata": {"name": BUILDS_CONFIGMAP}, "data": {md5(i): image(i) for i in range(MAX_RECORDS)}},
        )
        Kube(api).record_build("default", md5(MAX_RECORDS), image(MAX_RECORDS))
        assert md5(MAX_RECORDS) in Kube(api).get_builds("default")
    finally:
        api.close()
