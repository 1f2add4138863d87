"""The controller as a process against kubesim's API server and fake-gcs-server (no kubelet here:
these tests stop at the build Job; the full path with pods is in test_full_path.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import signing_check
from controller_stack import ROOT, Controller, Notebooks, put, tarball, wait_for

MD5_RE = r"^[0-9a-f]{32}$"


@pytest.fixture
def stack(
    kubesim_factory: Any, gcs_emulator: Any, signing_key: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    server = kubesim_factory(kubelet=False)
    server.kubectl("apply", "-k", str(ROOT / "cluster" / "manifests"))
    controller = Controller(
        server.kubeconfig,
        {
            "NBD_BUCKET": gcs_emulator.bucket,
            "NBD_REGISTRY": "registry.kubesim:5000",
            "NBD_INSECURE_REGISTRY": "true",
            "NBD_SIGNING_KEY_FILE": signing_key.path,
            "STORAGE_EMULATOR_HOST": gcs_emulator.host,
        },
        tmp_path / "controller.log",
    )
    controller.start()
    try:
        yield {
            "server": server,
            "controller": controller,
            "nb": Notebooks(server.api_client()),
            "gcs": gcs_emulator,
            "key": signing_key,
        }
    finally:
        controller.stop()
        print("---- controller log ----\n" + controller.log()[-6000:])


def test_manifests_apply_with_kubectl_and_the_crd_validates(stack: dict[str, Any]) -> None:
    server = stack["server"]
    again = server.kubectl("apply", "-k", str(ROOT / "cluster" / "manifests"))
    assert "customresourcedefinition.apiextensions.k8s.io/notebooks.nbd.dev unchanged" in again.stdout
    bad = (
        "apiVersion: nbd.dev/v1alpha1\nkind: Notebook\nmetadata: {name: bad, namespace: default}\n"
        "spec: {port: 0, build: {upload: {md5: 0123456789ABCDEF0123456789ABCDEF, requestID: r}}}\n"
    )
    result = server.kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.port" in result.stderr and "spec.build.upload.md5" in result.stderr
    env_bad = (
        "apiVersion: nbd.dev/v1alpha1\nkind: Notebook\nmetadata: {name: bad2, namespace: default}\n"
        "spec: {image: x, env: [{name: '1-BAD', value: v}]}\n"
    )
    result = server.kubectl("apply", "-f", "-", input=env_bad, check=False)
    assert result.returncode != 0 and "spec.env[0].name" in result.stderr
    good = (
        "apiVersion: nbd.dev/v1alpha1\nkind: Notebook\nmetadata: {name: good, namespace: default}\n"
        "spec: {image: jupyter/base-notebook}\n"
    )
    server.kubectl("apply", "-f", "-", input=good)
    nb = stack["nb"].get("good")
    assert nb["spec"] == {
        "image": "jupyter/base-notebook",
        "port": 8888,
        "workdir": "/content",
        "suspend": False,
    }
    table = server.kubectl("get", "nb")
    assert table.stdout.split()[:5] == ["NAME", "PHASE", "GPU", "POD", "AGE"]


def test_upload_url_then_verified_upload_then_one_build_job(stack: dict[str, Any]) -> None:
    nb: Notebooks = stack["nb"]
    body = tarball({"Dockerfile": "FROM python:3.12\nCOPY . /content\n", "a.py": "print(1)\n"})
    md5 = hashlib.md5(body).hexdigest()
    nb.create("one", {"build": {"upload": {"md5": md5, "requestID": "req-1"}}})
    upload = wait_for(
        "a signed URL",
        lambda: nb.status("one").get("upload", {}).get("signedURL") and nb.status("one")["upload"],
    )
    assert upload["requestID"] == "req-1" and "storedMD5" not in upload
    assert nb.status("one")["phase"] == "Uploading"
    assert nb.condition("one", "Uploaded")["reason"] == "AwaitingUpload"
    import base64

    query = signing_check.verify_v4(
        upload["signedURL"],
        "PUT",
        {
            "Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(),
            "Content-Type": "application/octet-stream",
        },
        stack["key"].private_key.public_key(),
    )
    assert int(query["X-Goog-Expires"]) <= 900
    assert put(upload["signedURL"], body, md5) == 200
    nb.patch_spec("one", {"build": {"uploaded": "req-1"}})
    status = wait_for(
        "the build to start", lambda: nb.status("one").get("phase") == "Building" and nb.status("one")
    )
    assert status["upload"] == {"requestID": "req-1", "storedMD5": md5}
    assert status["build"] == {
        "md5": md5,
        "image": f"registry.kubesim:5000/nbd/default-context:{md5}",
        "job": f"nbd-build-{md5}",
    }
    jobs = wait_for("the build Job", lambda: nb.jobs())
    assert [j["metadata"]["name"] for j in jobs] == [f"nbd-build-{md5}"]
    template = jobs[0]["spec"]["template"]["spec"]
    assert template["containers"][0]["command"] == ["buildctl-daemonless.sh"]
    args = template["containers"][0]["args"]
    assert args[args.index("--output") + 1] == (
        f"type=image,name=registry.kubesim:5000/nbd/default-context:{md5},push=true,registry.insecure=true"
    )
    assert args[args.index("--import-cache") + 1] == (
        "type=registry,ref=registry.kubesim:5000/nbd/cache:default,registry.insecure=true"
    )
    assert jobs[0]["metadata"]["ownerReferences"][0]["name"] == "one"

    # A second Notebook with the same context in the namespace: no upload, no second Job.
    nb.create("two", {"build": {"upload": {"md5": md5, "requestID": "req-9"}}})
    two = wait_for(
        "the second Notebook's answer",
        lambda: nb.status("two").get("upload", {}).get("storedMD5") and nb.status("two"),
    )
    assert two["upload"] == {"requestID": "req-9", "storedMD5": md5}
    assert two["build"]["job"] == f"nbd-build-{md5}"
    assert len(nb.jobs()) == 1


def test_bytes_that_do_not_match_the_md5_are_never_built(stack: dict[str, Any]) -> None:
    nb: Notebooks = stack["nb"]
    good = tarball({"Dockerfile": "FROM python:3.12\n"})
    md5 = hashlib.md5(good).hexdigest()
    nb.create("bad", {"build": {"upload": {"md5": md5, "requestID": "r1"}}})
    url = wait_for("a signed URL", lambda: nb.status("bad").get("upload", {}).get("signedURL"))
    put(url, tarball({"Dockerfile": "FROM evil\n"}), md5)  # the emulator does not check Content-MD5
    nb.patch_spec("bad", {"build": {"uploaded": "r1"}})
    uploaded = wait_for(
        "the mismatch", lambda: (c := nb.condition("bad", "Uploaded")) and c["reason"] == "MD5Mismatch" and c
    )
    assert uploaded["status"] == "False"
    assert md5 in uploaded["message"] and "new spec.build.upload.requestID" in uploaded["message"]
    assert nb.status("bad")["phase"] == "Failed"
    gcs = stack["gcs"]
    wait_for(
        "the object to be deleted",
        lambda: gcs.client().bucket(gcs.bucket).get_blob(f"contexts/{md5}.tar.gz") is None,
    )
    assert nb.jobs() == []
    # A new request gets a new URL; the right bytes then build.
    nb.patch_spec("bad", {"build": {"upload": {"md5": md5, "requestID": "r2"}}})
    url2 = wait_for(
        "a new URL",
        lambda: (u := nb.status("bad").get("upload", {})).get("requestID") == "r2" and u.get("signedURL"),
    )
    put(url2, good, md5)
    nb.patch_spec("bad", {"build": {"uploaded": "r2"}})
    wait_for("the build Job", lambda: nb.jobs())


def test_killed_controller_restarts_without_duplicating_the_build(stack: dict[str, Any]) -> None:
    nb: Notebooks = stack["nb"]
    controller: Controller = stack["controller"]
    body = tarball({"Dockerfile": "FROM python:3.12\n", "x": "y"})
    md5 = hashlib.md5(body).hexdigest()
    nb.create("k", {"build": {"upload": {"md5": md5, "requestID": "r1"}}})
    url = wait_for("a signed URL", lambda: nb.status("k").get("upload", {}).get("signedURL"))
    put(url, body, md5)
    nb.patch_spec("k", {"build": {"uploaded": "r1"}})
    wait_for("the build Job", lambda: nb.jobs())
    controller.kill()
    generation = nb.get("k")["metadata"]["generation"]
    nb.patch_spec("k", {"env": [{"name": "A", "value": "1"}]})  # a change while it is down
    controller.start()
    wait_for(
        "the restarted controller to catch up",
        lambda: nb.status("k").get("observedGeneration", 0) > generation,
    )
    assert [j["metadata"]["name"] for j in nb.jobs()] == [f"nbd-build-{md5}"]
    assert nb.status("k")["phase"] == "Building"


def test_signed_url_is_not_logged(stack: dict[str, Any]) -> None:
    nb: Notebooks = stack["nb"]
    nb.create("quiet", {"build": {"upload": {"md5": "0" * 32, "requestID": "r1"}}})
    wait_for("a signed URL", lambda: nb.status("quiet").get("upload", {}).get("signedURL"))
    assert "X-Goog-Signature" not in stack["controller"].log()


def test_a_watch_on_a_dead_connection_is_noticed_and_a_new_notebook_reconciled(
    kubesim_factory: Any, gcs_emulator: Any, signing_key: Any, tmp_path: Path
) -> None:
    # Bookmarks every second keep a healthy quiet watch talking; a stalled one goes silent.
    server = kubesim_factory(kubelet=False, bookmark_interval=1.0)
    server.kubectl("apply", "-k", str(ROOT / "cluster" / "manifests"))
    controller = Controller(
        server.kubeconfig,
        {
            "NBD_BUCKET": gcs_emulator.bucket,
            "NBD_REGISTRY": "registry.kubesim:5000",
            "NBD_SIGNING_KEY_FILE": signing_key.path,
            "STORAGE_EMULATOR_HOST": gcs_emulator.host,
            "NBD_WATCH_READ_TIMEOUT": "3",
            "NBD_RESYNC_SECONDS": "3600",  # only a watch can bring a new Notebook to the controller
        },
        tmp_path / "controller.log",
    )
    controller.start()
    nb = Notebooks(server.api_client())
    try:
        nb.create("before", {"image": "jupyter/base-notebook"})
        wait_for("the first Notebook reconciled", lambda: nb.status("before").get("phase"))
        # A healthy quiet watch is never taken for dead: its bookmarks arrive inside the read
        # timeout. Three watches, each quiet for more than the 3 s timeout, is 12 bookmarks.
        wait_for(
            "the watches to be quiet longer than the read timeout",
            lambda: server.admin.status()["bookmarksSent"] >= 12,
            timeout=30,
        )
        assert "a dead connection" not in controller.log()

        assert server.admin.stall_streams() >= 2  # the Notebook and pod watches at least
        nb.create("after", {"image": "jupyter/base-notebook"})
        status = wait_for(
            "the Notebook created after the stall to be reconciled",
            lambda: nb.status("after").get("phase") and nb.status("after"),
            timeout=30,
        )
        assert status["phase"] == "Starting"
        assert "watch notebooks: nothing for 3s (a dead connection?); listing again" in controller.log()
    finally:
        controller.stop()
        print("---- controller log ----\n" + controller.log()[-6000:])


def _run_yaml(name: str, spec: str) -> str:
    return f"apiVersion: nbd.dev/v1alpha1\nkind: Run\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ("{image: x}", "spec.command", "Required value"),
        ("{image: x, command: []}", "spec.command", "should have at least 1 items"),
        ("{image: x, command: echo}", "spec.command", "must be of type array"),
        ("{image: x, command: [echo], nodes: 0}", "spec.nodes", "should be greater than or equal to 1"),
        ("{image: x, command: [echo], nodes: 65}", "spec.nodes", "should be less than or equal to 64"),
        ("{image: x, command: [echo], masterPort: 0}", "spec.masterPort", "greater than or equal to 1"),
        ("{image: x, command: [echo], workdir: rel}", "spec.workdir", "should match"),
        ("{image: x, command: [echo], outputs: {path: out}}", "spec.outputs.path", "should match"),
        ("{image: x, command: [echo], env: [{name: A.B}]}", "spec.env[0].name", "should match"),
        ("{image: x, command: [echo], fetch: {}}", "spec.fetch.requestID", "Required value"),
        (
            "{image: x, command: [echo], ttlSecondsAfterFinished: -1}",
            "spec.ttlSecondsAfterFinished",
            "greater",
        ),
        (
            "{command: [echo], build: {upload: {md5: 0123456789ABCDEF0123456789ABCDEF, requestID: r}}}",
            "spec.build.upload.md5",
            "should match",
        ),
    ],
)
def test_the_run_crd_refuses_a_bad_spec(stack: dict[str, Any], spec: str, field: str, words: str) -> None:
    result = stack["server"].kubectl("apply", "-f", "-", input=_run_yaml("bad", spec), check=False)
    assert result.returncode != 0
    assert field in result.stderr and words in result.stderr, result.stderr


def test_the_run_crd_defaults_and_prints_its_columns(stack: dict[str, Any]) -> None:
    server = stack["server"]
    server.kubectl("apply", "-f", "-", input=_run_yaml("good", "{image: x, command: [python, train.py]}"))
    run = stack["nb"].custom.get_namespaced_custom_object("nbd.dev", "v1alpha1", "default", "runs", "good")
    assert run["spec"] == {
        "image": "x",
        "command": ["python", "train.py"],
        "workdir": "/content",
        "nodes": 1,
        "masterPort": 29500,
        "outputs": {"path": "/content/outputs", "size": "10Gi"},
        "stop": False,
    }
    table = server.kubectl("get", "nbrun")
    assert table.stdout.split()[:6] == ["NAME", "PHASE", "NODES", "GPU", "EXIT", "AGE"]
    both = server.kubectl("get", "nbd")
    assert "run.nbd.dev/good" in both.stdout, both.stdout
