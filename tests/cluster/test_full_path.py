"""The whole cluster side on kubesim with its kubelet: upload → build (BuildKit stand-in) → a Ready
Jupyter pod reached through port-forward; shared builds, build failures, GPUs, suspend, delete."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_stack import ROOT, Controller, Notebooks, put, tarball, wait_for

from kubesim.testing import start_inprocess

needs_jobs = pytest.mark.skipif(
    importlib.util.find_spec("kubesim.jobs") is None, reason="kubesim's Job controller is not available"
)

REGISTRY = "registry.kubesim:5000"
DOCKERFILE = "FROM python:3.11-slim\nRUN pip install --no-cache-dir jupyter_server\nWORKDIR /content\nCOPY . /content\n"


@pytest.fixture
def cluster(
    gcs_emulator: Any, signing_key: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    builder = getattr(request, "param", "buildkit")
    server = start_inprocess(Path(tempfile.mkdtemp(dir=tmp_path)), gpus=1)
    controller: Controller | None = None
    try:
        kubelet = server.extra["cluster"].kubelet
        assert kubelet.images.get("moby/buildkit:v0.23.2-rootless") is not None  # registered by the kubelet
        kubelet.add_host_port(gcs_emulator.port)  # pods reach the emulator at the same address
        server.kubectl("apply", "-k", str(ROOT / "cluster" / "manifests"))
        controller = Controller(
            server.kubeconfig,
            {
                "NBD_BUCKET": gcs_emulator.bucket,
                "NBD_REGISTRY": REGISTRY,
                "NBD_INSECURE_REGISTRY": "true",
                "NBD_BUILDER": builder,
                "NBD_SIGNING_KEY_FILE": signing_key.path,
                "STORAGE_EMULATOR_HOST": gcs_emulator.host,
            },
            tmp_path / "controller.log",
        )
        controller.start()
        yield {
            "server": server,
            "controller": controller,
            "nb": Notebooks(server.api_client()),
            "kubelet": kubelet,
        }
    finally:
        if controller is not None:
            controller.stop()
            print("---- controller log ----\n" + controller.log()[-8000:])
        server.stop()


def upload_and_mark(nb: Notebooks, name: str, body: bytes, request_id: str = "r1", **spec: Any) -> str:
    md5 = hashlib.md5(body).hexdigest()
    nb.create(name, {"build": {"upload": {"md5": md5, "requestID": request_id}}, **spec})
    upload = wait_for(
        "the upload answer",
        lambda: (
            (u := nb.status(name).get("upload") or {}).get("requestID") == request_id
            and (u.get("signedURL") or u.get("storedMD5"))
            and u
        ),
    )
    if upload.get("signedURL"):
        assert put(upload["signedURL"], body, md5) == 200
        nb.patch_spec(name, {"build": {"uploaded": request_id}})
    return md5


def http_get(api_client: Any, pod: str, port: int, path: str) -> tuple[int, bytes]:
    """One HTTP/1.0 GET through the API server's pods/portforward (WebSocket, v4.channel.k8s.io)."""
    from kubernetes import client
    from kubernetes.stream import portforward

    core = client.CoreV1Api(api_client)
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod, "default", ports=str(port))
    sock = pf.socket(port)
    sock.settimeout(20)
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
        pf.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@needs_jobs
def test_upload_build_and_a_ready_notebook_through_port_forward(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    body = tarball({"Dockerfile": DOCKERFILE, "hello.py": "print('hello')\n"})
    md5 = upload_and_mark(nb, "hello", body)
    status = wait_for(
        "Ready", lambda: (s := nb.status("hello")).get("phase") in ("Ready", "Failed") and s, timeout=120
    )
    assert status["phase"] == "Ready", status
    image = f"{REGISTRY}/nbd/default-context:{md5}"
    assert status["build"] == {"md5": md5, "image": image, "job": f"nbd-build-{md5}"}
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Uploaded": ("True", "Stored"),
        "Built": ("True", "Built"),
        "Ready": ("True", "PodReady"),
    }
    assert image in cluster["kubelet"].images.list()

    # The build's log is the Job pod's log: the init container's, then BuildKit's plain progress.
    core = nb.core
    build_pod = core.list_namespaced_pod("default", label_selector=f"nbd.dev/context-md5={md5}").items[0]
    fetch_log = core.read_namespaced_pod_log(build_pod.metadata.name, "default", container="fetch")
    assert f"MD5 {md5} verified" in fetch_log
    build_log = core.read_namespaced_pod_log(build_pod.metadata.name, "default", container="build")
    assert "#1 [internal] load build definition from Dockerfile" in build_log
    assert f"naming to {image} done" in build_log

    # The notebook: files where COPY put them, the token from the Secret, Jupyter on the port.
    pods = core.list_namespaced_pod(
        "default", label_selector="nbd.dev/notebook=hello"
    ).items  # never the build pod
    assert [p.metadata.name for p in pods] == [status["pod"]]
    secret = core.read_namespaced_secret(status["tokenSecret"], "default")
    token = base64.b64decode(secret.data["token"]).decode()
    assert len(token) >= 32
    code, payload = http_get(nb.api_client, status["pod"], 8888, "/api")
    assert code == 200 and "version" in json.loads(payload)
    code, _ = http_get(nb.api_client, status["pod"], 8888, "/api/contents/hello.py")
    assert code == 403
    code, payload = http_get(nb.api_client, status["pod"], 8888, f"/api/contents/hello.py?token={token}")
    assert code == 200 and json.loads(payload)["content"] == "print('hello')\n"

    # Same context again in the namespace: no upload and no build.
    nb.create("again", {"build": {"upload": {"md5": md5, "requestID": "x"}}})
    again = wait_for(
        "the second notebook", lambda: (s := nb.status("again")).get("phase") == "Ready" and s, timeout=60
    )
    assert again["upload"] == {"requestID": "x", "storedMD5": md5}
    assert {c["type"]: c["reason"] for c in again["conditions"]}["Built"] == "AlreadyBuilt"
    assert len(nb.jobs()) == 1

    # Suspend deletes the pod and keeps the rest; resume brings it back; delete removes everything.
    nb.patch_spec("hello", {"suspend": True})
    wait_for(
        "suspended", lambda: nb.status("hello").get("phase") == "Suspended" and nb.pod(status["pod"]) is None
    )
    assert core.read_namespaced_secret(status["tokenSecret"], "default")
    nb.patch_spec("hello", {"suspend": False})
    wait_for("ready again", lambda: nb.status("hello").get("phase") == "Ready", timeout=60)
    nb.delete("hello")

    def all_gone() -> bool:
        left = [
            *(["pod"] if nb.pod(status["pod"]) is not None else []),
            *(
                f"secret {s.metadata.name}"
                for s in core.list_namespaced_secret("default", label_selector="nbd.dev/notebook=hello").items
            ),
            *(f"job {j['metadata']['name']}" for j in nb.jobs("nbd.dev/requested-by=hello")),
        ]
        if left:
            raise StillThere(", ".join(left))
        return True

    # The pod goes after Jupyter's own shutdown (its grace period), which a loaded machine stretches.
    wait_for("the pod, secret and job to go", all_gone, timeout=120, retry_on=(StillThere,))


class StillThere(Exception):
    """What is left of a deleted Notebook, shown when the wait for it to go times out."""


@needs_jobs
def test_missing_dockerfile_is_a_build_failure_with_buildkits_message(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    upload_and_mark(nb, "nodf", tarball({"hello.py": "print(1)\n"}))
    built = wait_for(
        "the build failure",
        lambda: (c := nb.condition("nodf", "Built")) and c["reason"] == "BuildFailed" and c,
        timeout=90,
    )
    assert built["status"] == "False"
    assert (
        "failed to solve: failed to read dockerfile: open Dockerfile: no such file or directory"
        in built["message"]
    )
    assert nb.status("nodf")["phase"] == "Failed"


def _push_prebuilt_jupyter_image(kubelet: Any, tmp_path: Path, ref: str) -> None:
    """A team's prebuilt image with Jupyter in it, as if pulled from their registry."""
    import io

    from kubesim.images.buildkit import build

    ctx = tmp_path / "prebuilt"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM python:3.12\nRUN --mount=type=cache,target=/root/.cache/pip pip install jupyter_server\n"
    )
    out = io.StringIO()
    assert (
        build(context=ctx, dockerfile=ctx / "Dockerfile", target=ref, store=kubelet.images, out=out) == 0
    ), out.getvalue()


def test_prebuilt_image_runs_ready_suspends_and_resumes(cluster: dict[str, Any], tmp_path: Path) -> None:
    nb: Notebooks = cluster["nb"]
    image = "registry.example/team/jupyter:1"
    _push_prebuilt_jupyter_image(cluster["kubelet"], tmp_path, image)
    nb.create("pre", {"image": image, "resources": {"gpu": {"count": 1}}, "workdir": "/content"})
    status = wait_for("Ready", lambda: (s := nb.status("pre")).get("phase") == "Ready" and s, timeout=90)
    pod = nb.pod(status["pod"])
    assert pod is not None
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {
        "ephemeral-storage": "50Gi",
        "nvidia.com/gpu": "1",
    }
    code, payload = http_get(nb.api_client, status["pod"], 8888, "/api")
    assert code == 200 and "version" in json.loads(payload)
    nb.patch_spec("pre", {"suspend": True})
    wait_for(
        "suspended",
        lambda: nb.status("pre").get("phase") == "Suspended" and nb.pod(status["pod"]) is None,
        timeout=60,
    )
    nb.patch_spec("pre", {"suspend": False})
    wait_for("ready again", lambda: nb.status("pre").get("phase") == "Ready", timeout=90)
    nb.delete("pre")
    wait_for(
        "the pod and secret to go",
        lambda: (
            nb.pod(status["pod"]) is None
            and not nb.core.list_namespaced_secret("default", label_selector="nbd.dev/notebook=pre").items
        ),
        timeout=60,
    )


def test_more_gpus_than_the_node_has_is_unschedulable(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    nb.create(
        "gpu",
        {
            "image": "python:3.12",
            "command": ["python3", "-m", "http.server", "8888"],
            "resources": {"gpu": {"count": 4}},
        },
    )
    ready = wait_for(
        "unschedulable",
        lambda: (c := nb.condition("gpu", "Ready")) and c["reason"] == "Unschedulable" and c,
        timeout=60,
    )
    assert ready["status"] == "False"
    assert "nvidia.com/gpu" in ready["message"]


@needs_jobs
def test_controller_killed_mid_build_leaves_one_job_and_finishes(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    controller: Controller = cluster["controller"]
    dockerfile = "FROM python:3.12\nWORKDIR /content\nRUN sleep 3 && echo slept > slept.txt && echo ok > api\nCOPY . /content\n"
    md5 = upload_and_mark(
        nb,
        "slow",
        tarball({"Dockerfile": dockerfile, "a.py": "a = 1\n"}),
        command=["python3", "-m", "http.server", "8888"],
    )
    wait_for(
        "the build to run", lambda: nb.status("slow").get("phase") == "Building" and nb.jobs(), timeout=60
    )
    controller.kill()  # SIGKILL while the build runs
    controller.start()
    status = wait_for(
        "Ready", lambda: (s := nb.status("slow")).get("phase") in ("Ready", "Failed") and s, timeout=120
    )
    assert status["phase"] == "Ready", status
    assert [j["metadata"]["name"] for j in nb.jobs()] == [f"nbd-build-{md5}"]
    pods = nb.core.list_namespaced_pod("default", label_selector=f"nbd.dev/context-md5={md5}").items
    assert len(pods) == 1
    code, body = http_get(nb.api_client, status["pod"], 8888, "/slept.txt")
    assert code == 200 and body == b"slept\n"


@needs_jobs
def test_pods_refused_by_a_quota_are_reported_at_once_and_recover(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    core = nb.core
    core.create_namespaced_resource_quota(
        "default", {"metadata": {"name": "frozen"}, "spec": {"hard": {"pods": "0"}}}
    )
    dockerfile = "FROM python:3.12\nWORKDIR /content\nRUN echo ok > api\nCOPY . /content\n"
    upload_and_mark(
        nb,
        "quota",
        tarball({"Dockerfile": dockerfile, "a.py": "a = 1\n"}),
        command=["python3", "-m", "http.server", "8888"],
    )
    built = wait_for(
        "the refused build pod to be reported",
        lambda: (c := nb.condition("quota", "Built")) and c["reason"] == "FailedCreate" and c,
        timeout=30,
    )
    assert "exceeded quota: frozen, requested: pods=1, used: pods=0, limited: pods=0" in built["message"]
    assert nb.status("quota")["phase"] == "Failed"

    # Room for the build only: the notebook pod, which asks for a GPU, is refused in turn.
    core.replace_namespaced_resource_quota(
        "frozen",
        "default",
        {"metadata": {"name": "frozen"}, "spec": {"hard": {"pods": "5", "requests.nvidia.com/gpu": "0"}}},
    )
    nb.patch_spec("quota", {"resources": {"gpu": {"count": 1}}})
    ready = wait_for(
        "the refused notebook pod to be reported",
        lambda: (c := nb.condition("quota", "Ready")) and c["reason"] == "FailedCreate" and c,
        timeout=120,
    )
    assert (
        "requests.nvidia.com/gpu=1" in ready["message"]
        and "limited: requests.nvidia.com/gpu=0" in ready["message"]
    )

    core.delete_namespaced_resource_quota("frozen", "default")
    status = wait_for(
        "Ready once the quota is gone",
        lambda: (s := nb.status("quota")).get("phase") == "Ready" and s,
        timeout=60,
    )
    code, body = http_get(nb.api_client, status["pod"], 8888, "/api")
    assert code == 200 and body == b"ok\n"


@needs_jobs
def test_an_image_removed_from_the_registry_is_built_again(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    dockerfile = "FROM python:3.12\nWORKDIR /content\nRUN echo ok > api\nCOPY . /content\n"
    md5 = upload_and_mark(
        nb,
        "kept",
        tarball({"Dockerfile": dockerfile, "a.py": "a = 1\n"}),
        command=["python3", "-m", "http.server", "8888"],
    )
    status = wait_for(
        "Ready", lambda: (s := nb.status("kept")).get("phase") in ("Ready", "Failed") and s, timeout=120
    )
    assert status["phase"] == "Ready", status
    image = status["image"]
    first_job = nb.jobs()[0]["metadata"]["uid"]

    # A cleanup policy deletes the image; the node is replaced, so the next pod has to pull it.
    assert cluster["kubelet"].images.delete(image)
    nb.core.delete_namespaced_pod(status["pod"], "default")
    wait_for(
        "a new build Job", lambda: [j for j in nb.jobs() if j["metadata"]["uid"] != first_job], timeout=90
    )
    again = wait_for(
        "Ready again", lambda: (s := nb.status("kept")).get("phase") in ("Ready", "Failed") and s, timeout=120
    )
    assert f"the image built from {md5} is gone from the registry" in cluster["controller"].log()
    assert again["phase"] == "Ready", again
    assert image in cluster["kubelet"].images.list()
    jobs = nb.jobs()
    assert [j["metadata"]["name"] for j in jobs] == [f"nbd-build-{md5}"] and jobs[0]["metadata"][
        "uid"
    ] != first_job
    code, body = http_get(nb.api_client, again["pod"], 8888, "/api")
    assert code == 200 and body == b"ok\n"


@needs_jobs
@pytest.mark.parametrize("cluster", ["kaniko"], indirect=True)
def test_kaniko_fork_builder_option(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    dockerfile = "FROM python:3.12\nWORKDIR /content\nRUN echo ok > api\nCOPY . /content\n"
    md5 = upload_and_mark(
        nb,
        "kan",
        tarball({"Dockerfile": dockerfile, "k.txt": "kaniko\n"}),
        command=["python3", "-m", "http.server", "8888"],
    )
    status = wait_for(
        "Ready", lambda: (s := nb.status("kan")).get("phase") in ("Ready", "Failed") and s, timeout=120
    )
    assert status["phase"] == "Ready", status
    pod = nb.core.list_namespaced_pod("default", label_selector=f"nbd.dev/context-md5={md5}").items[0]
    log = nb.core.read_namespaced_pod_log(pod.metadata.name, "default", container="build")
    assert f"Pushed {REGISTRY}/nbd/default-context:{md5}" in log
    code, body = http_get(nb.api_client, status["pod"], 8888, "/k.txt")
    assert code == 200 and body == b"kaniko\n"
