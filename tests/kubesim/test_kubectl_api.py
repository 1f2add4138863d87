"""The real kubectl (1.32) against kubesim's API server: tables, watch, apply, validation, wait, delete."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubesim.testing import KubesimServer


def _write(tmp_path: Path, name: str, *docs: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


@pytest.fixture
def with_crd(apiserver: KubesimServer, crd_manifest: dict[str, Any], tmp_path: Path) -> KubesimServer:
    apiserver.kubectl("apply", "-f", _write(tmp_path, "crd.yaml", crd_manifest))
    return apiserver


def test_get_prints_server_side_tables(apiserver: KubesimServer) -> None:
    api = apiserver.api_client()
    client.CoreV1Api(api).create_namespaced_pod(
        "default",
        {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
    )
    out = apiserver.kubectl("get", "pods").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert out[1].split()[:4] == ["web", "0/1", "Pending", "0"]
    wide = apiserver.kubectl("get", "pods", "-o", "wide").stdout.splitlines()[0]
    assert "NODE" in wide and "IP" in wide
    ns = apiserver.kubectl("get", "ns").stdout
    assert "kube-system" in ns and "Active" in ns
    allns = apiserver.kubectl("get", "pods", "-A").stdout.splitlines()
    assert allns[0].split()[0] == "NAMESPACE" and allns[1].split()[:2] == ["default", "web"]
    missing = apiserver.kubectl("get", "pod", "nope", check=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "nope" not found' in missing.stderr
    api.close()


def test_custom_resource_printer_columns_and_short_names(
    with_crd: KubesimServer, make_widget: Any, tmp_path: Path
) -> None:
    with_crd.kubectl("apply", "-f", _write(tmp_path, "w.yaml", make_widget("w1", port=8080)))
    lines = with_crd.kubectl("get", "wd").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PORT", "READY"]
    assert lines[1].split() == ["w1", "8080"]
    resources = with_crd.kubectl("api-resources", "--api-group=example.dev").stdout
    assert "widgets" in resources and "wd" in resources


def test_get_watch_streams_changes(apiserver: KubesimServer) -> None:
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(apiserver.kubeconfig),
            "--cache-dir",
            str(apiserver.cache_dir),
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "fresh" in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        api = apiserver.api_client()
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + 20
        while not seen.is_set() and time.monotonic() < deadline:
            # Create until kubectl shows one (it may not be watching yet when the first is made).
            name = f"fresh-{int(time.monotonic() * 1000)}"
            core.create_namespaced_config_map("default", {"metadata": {"name": name}})
            seen.wait(0.5)
        api.close()
        assert seen.is_set(), "".join(lines)
    finally:
        proc.kill()
        proc.wait()
    assert lines[0].split()[:2] == ["EVENT", "NAME"]
    assert any(line.split()[0] == "ADDED" and "fresh" in line for line in lines)


def test_apply_client_side_and_server_side(
    with_crd: KubesimServer, crd_manifest: dict[str, Any], make_widget: Any, tmp_path: Path
) -> None:
    k = with_crd.kubectl
    # Re-applying the CRD is a no-op, server-side apply of it works too.
    crd_file = _write(tmp_path, "crd.yaml", crd_manifest)
    assert "unchanged" in k("apply", "-f", crd_file).stdout
    assert "serverside-applied" in k("apply", "--server-side", "-f", crd_file).stdout
    w = make_widget("w1", port=80)
    f = _write(tmp_path, "w.yaml", w)
    assert "created" in k("apply", "-f", f).stdout
    assert "unchanged" in k("apply", "-f", f).stdout
    w["spec"]["port"] = 81
    f = _write(tmp_path, "w.yaml", w)
    res = k("apply", "-f", f)
    assert "configured" in res.stdout and "warning" not in res.stderr.lower()
    got = json.loads(k("get", "widget", "w1", "-o", "json").stdout)
    assert got["spec"] == {"port": 81, "mode": "a"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in got["metadata"]["annotations"]
    # Server-side apply creates a missing object and takes over an existing one with --force-conflicts.
    w2 = make_widget("w2", port=82)
    assert "serverside-applied" in k("apply", "--server-side", "-f", _write(tmp_path, "w2.yaml", w2)).stdout
    w2["spec"]["port"] = 83
    k("apply", "--server-side", "--force-conflicts", "-f", _write(tmp_path, "w2.yaml", w2))
    got = json.loads(k("get", "widget", "w2", "-o", "json", "--show-managed-fields").stdout)
    assert got["spec"]["port"] == 83
    assert any(
        m["manager"] == "kubectl" and m["operation"] == "Apply" for m in got["metadata"]["managedFields"]
    )
    # Built-in kinds take the strategic-merge path.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:1"}]},
    }
    k("apply", "-f", _write(tmp_path, "p.yaml", pod))
    pod["spec"]["containers"][1]["image"] = "img:2"
    res = k("apply", "-f", _write(tmp_path, "p.yaml", pod))
    assert "configured" in res.stdout, res.stderr
    images = json.loads(k("get", "pod", "p", "-o", "json").stdout)["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in images] == [("a", "img:1"), ("b", "img:2")]


def test_invalid_custom_resource_is_rejected(
    with_crd: KubesimServer, make_widget: Any, tmp_path: Path
) -> None:
    bad = make_widget("bad", port=70000, mode="z")
    res = with_crd.kubectl("apply", "-f", _write(tmp_path, "bad.yaml", bad), check=False)
    assert res.returncode == 1
    assert 'The Widget "bad" is invalid' in res.stderr
    assert (
        "spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535"
        in res.stderr
    )
    assert 'spec.mode: Unsupported value: "z": supported values: "a", "b"' in res.stderr
    unknown = make_widget("unk", port=1, colour="red")
    res = with_crd.kubectl("create", "-f", _write(tmp_path, "unk.yaml", unknown), check=False)
    assert res.returncode == 1 and 'strict decoding error: unknown field "spec.colour"' in res.stderr
    # --validate=false: the unknown field is pruned and the object created.
    with_crd.kubectl("create", "--validate=false", "-f", _write(tmp_path, "unk.yaml", unknown))
    got = json.loads(with_crd.kubectl("get", "widget", "unk", "-o", "json").stdout)
    assert "colour" not in got["spec"]


def test_wait_for_condition_set_through_status(
    with_crd: KubesimServer, make_widget: Any, tmp_path: Path
) -> None:
    with_crd.kubectl("apply", "-f", _write(tmp_path, "w.yaml", make_widget("w1")))
    waiter = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(with_crd.kubeconfig),
            "--cache-dir",
            str(with_crd.cache_dir),
            "wait",
            "--for=condition=Ready",
            "widget/w1",
            "--timeout=30s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # let it start watching; the condition must arrive through the watch or the get
        api = with_crd.api_client()
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "example.dev",
            "v1",
            "default",
            "widgets",
            "w1",
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Done",
                            "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }
                    ]
                }
            },
        )
        api.close()
        out, err = waiter.communicate(timeout=40)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert "widget.example.dev/w1 condition met" in out
    lines = with_crd.kubectl("get", "wd", "w1").stdout.splitlines()
    assert lines[1].split() == ["w1", "80", "True"]


def test_delete_cascades_to_dependents(apiserver: KubesimServer, tmp_path: Path) -> None:
    api = apiserver.api_client()
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map("default", {"metadata": {"name": "dep1", "ownerReferences": [ref]}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "dep2", "ownerReferences": [ref]}})
    assert 'configmap "owner" deleted' in apiserver.kubectl("delete", "configmap", "owner").stdout
    names = apiserver.kubectl("get", "cm", "-o", "name").stdout.split()
    assert names == []
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref["uid"] = owner.metadata.uid
    core.create_namespaced_config_map("default", {"metadata": {"name": "dep3", "ownerReferences": [ref]}})
    apiserver.kubectl("delete", "configmap", "owner", "--cascade=foreground")
    apiserver.kubectl("delete", "configmap", "--all")
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref["uid"] = owner.metadata.uid
    core.create_namespaced_config_map("default", {"metadata": {"name": "kept", "ownerReferences": [ref]}})
    apiserver.kubectl("delete", "configmap", "owner", "--cascade=orphan")
    assert apiserver.kubectl("get", "cm", "-o", "name").stdout.split() == ["configmap/kept"]
    api.close()


def test_apply_kustomize_of_real_manifests(apiserver: KubesimServer) -> None:
    manifests = Path(__file__).resolve().parents[2] / "cluster" / "manifests"
    if not (manifests / "kustomization.yaml").exists():
        pytest.skip("cluster/manifests has no kustomization yet")
    res = apiserver.kubectl("apply", "-k", str(manifests))
    assert "created" in res.stdout
    again = apiserver.kubectl("apply", "-k", str(manifests))
    assert "configured" not in again.stdout or "unchanged" in again.stdout


def test_explain_and_events(with_crd: KubesimServer) -> None:
    out = with_crd.kubectl("explain", "widgets.spec").stdout
    assert "port" in out
    api = with_crd.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "x", "namespace": "default"},
            "reason": "FailedScheduling",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            "type": "Warning",
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:00Z",
        },
    )
    api.close()
    out = with_crd.kubectl("get", "events").stdout
    assert "FailedScheduling" in out and "pod/x" in out
    os.environ.get("KUBECONFIG")  # kubectl never used the environment's config


def test_typed_kubectl_commands_send_protobuf(apiserver: KubesimServer) -> None:
    k = apiserver.kubectl
    k("create", "namespace", "team")
    k("create", "secret", "generic", "creds", "-n", "team", "--from-literal=key=value", "--type=example/x")
    k("create", "configmap", "conf", "-n", "team", "--from-literal=a=b")
    k("create", "serviceaccount", "robot", "-n", "team")
    k("create", "job", "once", "-n", "team", "--image=busybox:1.36", "--", "echo", "hi")
    k("create", "deployment", "web", "-n", "team", "--image=nginx:1", "--replicas=2", "--port=80")
    secret = json.loads(k("get", "secret", "creds", "-n", "team", "-o", "json").stdout)
    assert secret["data"] == {"key": "dmFsdWU="} and secret["type"] == "example/x"
    assert json.loads(k("get", "cm", "conf", "-n", "team", "-o", "json").stdout)["data"] == {"a": "b"}
    job = json.loads(k("get", "job", "once", "-n", "team", "-o", "json").stdout)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["command"]) == ("busybox:1.36", ["echo", "hi"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    deploy = json.loads(k("get", "deploy", "web", "-n", "team", "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP"}
    ]
    assert k("create", "token", "robot", "-n", "team").stdout.startswith("kubesim.")
    assert k("auth", "can-i", "list", "pods", "-n", "team").stdout.strip() == "yes"
    k("scale", "deployment", "web", "-n", "team", "--replicas=3")
    assert json.loads(k("get", "deploy", "web", "-n", "team", "-o", "json").stdout)["spec"]["replicas"] == 3
    k("delete", "namespace", "team")
    assert k("get", "ns", "team", check=False).returncode == 1


def test_explain_builtin_kinds(apiserver: KubesimServer) -> None:
    out = apiserver.kubectl("explain", "pods").stdout
    assert "KIND:       Pod" in out and "apiVersion" in out
