"""Runs on kubesim with its kubelet and the controller as a process: a one-node run that fails with
its script's exit code and leaves an output to fetch, the build shared with Notebooks, stop, and
the objects of a run of two nodes."""

from __future__ import annotations

import hashlib
from typing import Any

from controller_stack import Notebooks, Runs, put, tarball, wait_for
from test_full_path import cluster, needs_jobs, upload_and_mark

# The fixture, re-exported so that pytest finds it here.
__all__ = ["cluster"]

RUN_DOCKERFILE = "FROM python:3.11-slim\nWORKDIR /content\nCOPY . /content\n"
SCRIPT = (
    "import os, sys\n"
    "print('data:', open('data.txt').read().strip(), flush=True)\n"
    "print('rank', os.environ['NODE_RANK'], 'of', os.environ['WORLD_SIZE'], 'master', "
    "os.environ['MASTER_ADDR'] + ':' + os.environ['MASTER_PORT'], 'nproc', os.environ['NPROC_PER_NODE'], "
    "'cwd', os.getcwd(), 'torchrun', os.environ['PET_NNODES'], os.environ['PET_NODE_RANK'], flush=True)\n"
    "open('/content/outputs/x', 'w').write('result 42\\n')\n"
    "sys.exit(int(os.environ.get('EXIT', '0')))\n"
)
SERVE = ["python3", "-m", "http.server", "8888"]


def _runs(cluster: dict[str, Any]) -> Runs:
    return Runs(cluster["server"].api_client())


def _finished(runs: Runs, name: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        f"run {name} to finish",
        lambda: (s := runs.status(name)).get("phase") in ("Succeeded", "Failed", "Stopped") and s,
        timeout=timeout,
    )


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def _build_jobs(runs: Runs, md5: str) -> list[dict[str, Any]]:
    return runs.jobs(f"nbd.dev/component=build,nbd.dev/context-md5={md5}")


@needs_jobs
def test_one_node_run_fails_with_its_exit_code_and_its_output_is_fetched(cluster: dict[str, Any]) -> None:
    runs = _runs(cluster)
    body = tarball({"Dockerfile": RUN_DOCKERFILE, "data.txt": "from the image\n"})
    md5 = upload_and_mark(
        runs, "train", body, command=["python", "-c", SCRIPT], env=[{"name": "EXIT", "value": "3"}]
    )
    status = _finished(runs, "train")
    assert status["phase"] == "Failed", status
    assert status["exitCode"] == 3 and status["failedRank"] == 0
    assert _conditions(status) == {
        "Uploaded": ("True", "Stored"),
        "Built": ("True", "Built"),
        "Started": ("True", "Started"),
        "Finished": ("True", "ScriptFailed"),
    }
    [rank] = status["ranks"]
    assert rank["index"] == 0 and rank["phase"] == "Failed" and rank["exitCode"] == 3
    assert status["job"] == "train" and status["outputsClaim"] == "train-outputs"
    assert status["image"] == f"registry.kubesim:5000/nbd/default-context:{md5}"
    assert status["startTime"] and status["completionTime"]
    assert "exited with code 3" in status["message"]
    assert status["masterAddr"] == "127.0.0.1"

    # One pod, not retried: the failing script ran once (podFailurePolicy FailJob).
    pods = runs.core.list_namespaced_pod("default", label_selector="nbd.dev/run=train,nbd.dev/component=run")
    assert [p.metadata.name for p in pods.items] == [rank["pod"]]
    log = runs.core.read_namespaced_pod_log(rank["pod"], "default", container="run")
    assert "data: from the image" in log
    assert "rank 0 of 1 master 127.0.0.1:29500 nproc 1 cwd /content torchrun 1 0" in log
    [job] = runs.jobs("nbd.dev/run=train")
    assert job["spec"]["completions"] == 1 and job["spec"]["backoffLimit"] == 3
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Run"
    claim = runs.core.read_namespaced_persistent_volume_claim("train-outputs", "default")
    assert claim.spec.access_modes == ["ReadWriteOnce"]
    assert claim.spec.resources.requests == {"storage": "10Gi"}
    # The build Job says which kind asked for it.
    [build] = _build_jobs(runs, md5)
    assert build["metadata"]["labels"]["nbd.dev/requested-by-kind"] == "Run"
    assert build["metadata"]["labels"]["nbd.dev/requested-by"] == "train"

    # The Job goes (as ttlSecondsAfterFinished would make it): the Run stays as it ended, and no
    # second Job is made.
    runs.batch.delete_namespaced_job("train", "default", propagation_policy="Background")
    wait_for("the Job to go", lambda: not runs.jobs("nbd.dev/run=train"), timeout=30)

    # Fetching: a reader pod mounts the claim read-only and sees the file.
    runs.patch_spec("train", {"fetch": {"requestID": "f1"}})
    fetch = wait_for(
        "the reader pod",
        lambda: (f := runs.status("train").get("fetch") or {}).get("ready") and f,
        timeout=60,
    )
    assert fetch == {"requestID": "f1", "pod": "train-outputs-reader", "ready": True}
    assert runs.exec("train-outputs-reader", ["cat", "/content/outputs/x"]) == "result 42\n"
    denied = runs.exec("train-outputs-reader", ["sh", "-c", "echo y > /content/outputs/y 2>&1; echo rc=$?"])
    assert "rc=0" not in denied  # mounted read-only
    reader = runs.pod("train-outputs-reader")
    assert reader is not None
    assert reader["metadata"]["labels"]["nbd.dev/component"] == "outputs"
    assert reader["metadata"]["annotations"]["nbd.dev/fetch-request"] == "f1"
    assert reader["spec"]["activeDeadlineSeconds"] == 3600
    first_uid = reader["metadata"]["uid"]

    # A new request replaces the reader.
    runs.patch_spec("train", {"fetch": {"requestID": "f2"}})
    wait_for(
        "a reader for request f2",
        lambda: (
            (f := runs.status("train").get("fetch") or {}).get("requestID") == "f2"
            and f.get("ready")
            and (p := runs.pod("train-outputs-reader")) is not None
            and p["metadata"]["uid"] != first_uid
        ),
        timeout=60,
    )
    # The run stays as it ended.
    after = runs.status("train")
    assert (after["phase"], after["exitCode"], after["failedRank"]) == ("Failed", 3, 0)
    assert _conditions(after)["Finished"] == ("True", "ScriptFailed")
    assert not runs.jobs("nbd.dev/run=train")

    # Deleting the Run takes its Job, its claim and the reader with it.
    runs.delete("train")

    def gone() -> bool:
        claims = runs.core.list_namespaced_persistent_volume_claim(
            "default", label_selector="nbd.dev/run=train"
        )
        return (
            not runs.jobs("nbd.dev/run=train")
            and runs.pod("train-outputs-reader") is None
            and not claims.items
        )

    wait_for("the run's objects to go", gone, timeout=60)


@needs_jobs
def test_a_run_of_content_built_by_a_notebook_starts_without_upload_or_build(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    runs = _runs(cluster)
    body = tarball({"Dockerfile": RUN_DOCKERFILE, "data.txt": "built once\n"})
    md5 = upload_and_mark(nb, "edit", body, command=SERVE)
    wait_for(
        "the notebook's build",
        lambda: _conditions(nb.status("edit")).get("Built") == ("True", "Built"),
        timeout=120,
    )
    # The Notebook goes, and its build Job with it; the record of the build stays.
    nb.delete("edit")
    wait_for("the build Job to go", lambda: not _build_jobs(runs, md5), timeout=60)

    runs.create(
        "again", {"build": {"upload": {"md5": md5, "requestID": "r1"}}, "command": ["python", "-c", SCRIPT]}
    )
    status = _finished(runs, "again")
    assert status["phase"] == "Succeeded", status
    assert status["exitCode"] == 0 and "failedRank" not in status
    assert status["upload"] == {"requestID": "r1", "storedMD5": md5}
    assert _conditions(status)["Uploaded"] == ("True", "AlreadyBuilt")
    assert _conditions(status)["Built"] == ("True", "AlreadyBuilt")
    assert _conditions(status)["Finished"] == ("True", "Succeeded")
    assert not _build_jobs(runs, md5)
    assert "signedURL" not in (runs.status("again").get("upload") or {})


@needs_jobs
def test_a_run_and_a_notebook_of_new_content_share_one_build(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    runs = _runs(cluster)
    body = tarball({"Dockerfile": RUN_DOCKERFILE, "data.txt": "shared\n"})
    md5 = hashlib.md5(body).hexdigest()
    upload = {"md5": md5, "requestID": "r1"}
    runs.create("shared-run", {"build": {"upload": upload}, "command": ["python", "-c", SCRIPT]})
    nb.create("shared-nb", {"build": {"upload": upload}, "command": SERVE})
    answer = wait_for(
        "the run's upload URL",
        lambda: (u := runs.status("shared-run").get("upload") or {}).get("signedURL") and u,
    )
    assert put(answer["signedURL"], body, md5) == 200
    runs.patch_spec("shared-run", {"build": {"uploaded": "r1"}})
    status = _finished(runs, "shared-run")
    assert status["phase"] == "Succeeded", status
    wait_for(
        "the notebook's image",
        lambda: _conditions(nb.status("shared-nb")).get("Built", ("",))[0] == "True",
        timeout=120,
    )
    builds = _build_jobs(runs, md5)
    assert len(builds) == 1, [b["metadata"]["labels"] for b in builds]
    assert nb.status("shared-nb")["build"]["job"] == f"nbd-build-{md5}"


@needs_jobs
def test_stop_deletes_the_job_and_keeps_the_run_and_its_outputs(cluster: dict[str, Any]) -> None:
    runs = _runs(cluster)
    body = tarball({"Dockerfile": RUN_DOCKERFILE, "data.txt": "long\n"})
    forever = "import time\nopen('/content/outputs/started', 'w').write('1')\nprint('up', flush=True)\ntime.sleep(600)\n"
    upload_and_mark(runs, "long", body, command=["python", "-c", forever], ttlSecondsAfterFinished=300)
    wait_for("the run to run", lambda: runs.status("long").get("phase") == "Running", timeout=120)
    [job] = runs.jobs("nbd.dev/run=long")
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    # A controller killed while the run runs finds it again and makes no second Job.
    controller = cluster["controller"]
    controller.kill()
    controller.start()
    runs.patch_spec("long", {"env": [{"name": "WAKE", "value": "1"}]})  # something to look at
    wait_for(
        "the restarted controller to see the run",
        lambda: (
            (runs.get("long") or {}).get("status", {}).get("observedGeneration")
            == (runs.get("long") or {}).get("metadata", {}).get("generation")
        ),
        timeout=60,
    )
    assert [j["metadata"]["uid"] for j in runs.jobs("nbd.dev/run=long")] == [job["metadata"]["uid"]]
    assert runs.status("long")["phase"] == "Running"
    runs.patch_spec("long", {"stop": True})
    status = _finished(runs, "long", timeout=60)
    assert status["phase"] == "Stopped", status
    assert _conditions(status)["Finished"] == ("True", "Stopped")
    assert "exitCode" not in status
    wait_for(
        "the Job and its pods to go",
        lambda: (
            not runs.jobs("nbd.dev/run=long")
            and not runs.core.list_namespaced_pod(
                "default", label_selector="nbd.dev/run=long,nbd.dev/component=run"
            ).items
        ),
        timeout=60,
    )
    assert runs.get("long") is not None
    assert runs.core.read_namespaced_persistent_volume_claim("long-outputs", "default").metadata.name
    # Stopped stays stopped: unsetting stop does not start it again.
    runs.patch_spec("long", {"stop": False})
    runs.patch_spec("long", {"fetch": {"requestID": "after-stop"}})
    wait_for("the reader", lambda: (runs.status("long").get("fetch") or {}).get("ready"), timeout=60)
    assert runs.exec("long-outputs-reader", ["cat", "/content/outputs/started"]) == "1"
    assert runs.status("long")["phase"] == "Stopped"
    assert not runs.jobs("nbd.dev/run=long")


def test_a_run_of_two_nodes_gets_an_indexed_job_and_a_headless_service(cluster: dict[str, Any]) -> None:
    runs = _runs(cluster)
    runs.create(
        "ddp",
        {
            "image": "python:3.12-alpine",
            "workdir": "/",
            "nodes": 2,
            "masterPort": 29400,
            "command": ["sleep", "30"],
            "env": [{"name": "MASTER_PORT", "value": "1"}, {"name": "LR", "value": "0.1"}],
        },
    )
    status = wait_for("the run's Job", lambda: (s := runs.status("ddp")).get("job") and s, timeout=60)
    assert status["service"] == "ddp"
    assert status["masterAddr"] == "ddp-0.ddp.default.svc.cluster.local"
    service = runs.api_client.sanitize_for_serialization(runs.core.read_namespaced_service("ddp", "default"))
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"nbd.dev/run": "ddp", "nbd.dev/component": "run"}
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("master", 29400)]
    [job] = runs.jobs("nbd.dev/run=ddp")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["podFailurePolicy"]["rules"][1] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "run", "operator": "NotIn", "values": [0]},
    }
    pod_spec = spec["template"]["spec"]
    assert pod_spec["subdomain"] == "ddp" and pod_spec["restartPolicy"] == "Never"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_spec["containers"][0]["env"]}
    assert env == {
        "MASTER_ADDR": "ddp-0.ddp.default.svc.cluster.local",
        "MASTER_PORT": "29400",
        "WORLD_SIZE": "2",
        "NODE_RANK": {
            "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
        },
        "NPROC_PER_NODE": "1",
        "PET_NNODES": "2",
        "PET_NODE_RANK": {
            "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
        },
        "PET_MASTER_ADDR": "ddp-0.ddp.default.svc.cluster.local",
        "PET_MASTER_PORT": "29400",
        "PET_NPROC_PER_NODE": "1",
        "NBD_RUN": "ddp",
        "LR": "0.1",
    }
    claim = runs.core.read_namespaced_persistent_volume_claim("ddp-outputs", "default")
    assert claim.spec.access_modes == ["ReadWriteMany"]
    runs.patch_spec("ddp", {"stop": True})
    assert _finished(runs, "ddp", timeout=60)["phase"] == "Stopped"


@needs_jobs
def test_a_run_whose_build_fails_is_failed_with_the_build_log(cluster: dict[str, Any]) -> None:
    runs = _runs(cluster)
    body = tarball({"Dockerfile": "FROM python:3.11-slim\nRUN echo no-such-step >&2 && exit 7\n", "a": "a\n"})
    md5 = upload_and_mark(runs, "broken", body, command=["python", "-V"])
    status = _finished(runs, "broken")
    assert status["phase"] == "Failed", status
    assert _conditions(status)["Built"] == ("False", "BuildFailed")
    assert _conditions(status)["Finished"] == ("True", "BuildFailed")
    assert _conditions(status)["Started"] == ("False", "NotBuilt")
    assert "no-such-step" in status["message"]
    assert "job" not in status and "exitCode" not in status
    assert not runs.jobs("nbd.dev/run=broken")
    assert len(_build_jobs(runs, md5)) == 1
