"""The controller's own image, checked without a Docker engine: kubesim's builder builds
cluster/Dockerfile from the context `.dockerignore` leaves, the image holds the controller and what
it imports (not the daemon, gRPC, watchdog or the local cluster), and the controller started from it
in a pod of kubesim serves Notebooks."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

from controller_stack import ROOT, Notebooks, wait_for
from test_full_path import cluster, needs_jobs

from kubesim.images.buildkit import build
from nbd.context.ignore import PatternMatcher, parse_dockerignore

__all__ = ["cluster"]

IMAGE = "registry.kubesim:5000/nbd/nbd-controller:test"


def _context(target: Path) -> list[str]:
    """Copies what `.dockerignore` keeps of the repository into `target`; returns the kept paths."""
    matcher = PatternMatcher(parse_dockerignore((ROOT / ".dockerignore").read_text()))
    kept: list[str] = []
    for folder, dirs, files in os.walk(ROOT):
        rel_dir = os.path.relpath(folder, ROOT)
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", "node_modules")]
        for name in files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if matcher.matches_or_parent_matches(rel):
                continue
            kept.append(rel)
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target / rel)
    return sorted(kept)


@needs_jobs
def test_kubesim_builds_the_controller_image_and_the_controller_runs_from_it(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    nb: Notebooks = cluster["nb"]
    kubelet = cluster["kubelet"]
    context = tmp_path / "context"
    kept = _context(context)
    assert kept and all(p.startswith(("contract/", "cluster/")) for p in kept), kept
    assert "cluster/Dockerfile" in kept and not any("egg-info" in p or "__pycache__" in p for p in kept)

    out = io.StringIO()
    rc = build(
        context=context,
        dockerfile=context / "cluster" / "Dockerfile",
        target=IMAGE,
        store=kubelet.images,
        out=out,
    )
    assert rc == 0, out.getvalue()[-3000:]
    image = kubelet.images.get(IMAGE)
    assert image is not None and image.config.entrypoint == ["nbd-controller"]

    # What the image holds: the controller's distributions and their imports, nothing of the daemon.
    probe = (
        "import importlib.util as u; "
        "print(sorted(m for m in ('nbd_controller', 'nbdcontract', 'kubernetes', 'google.cloud.storage', "
        "'nbd', 'nbdapi', 'nbdlocal', 'grpc', 'watchdog', 'kubesim', 'devstack') if u.find_spec(m)))"
    )
    nb.core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "image-contents"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "probe", "image": IMAGE, "command": ["python3", "-c", probe]}],
            },
        },
    )
    wait_for(
        "the probe to finish",
        lambda: (
            ((nb.pod("image-contents") or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")
        ),
        timeout=60,
    )
    log = nb.core.read_namespaced_pod_log("image-contents", "default")
    assert log.strip() == "['google.cloud.storage', 'kubernetes', 'nbd_controller', 'nbdcontract']", log

    # The controller from the image, in a pod, in place of the one the fixture runs as a process.
    controller = cluster["controller"]
    controller.stop()
    server = cluster["server"]
    kubelet.add_host_port(int(server.url.rsplit(":", 1)[1]))
    env = {k: v for k, v in controller.env.items() if k.startswith(("NBD_", "STORAGE_"))}
    env["NBD_SIGNING_KEY_FILE"] = "/etc/nbd-key/sa.json"
    nb.core.create_namespaced_secret(
        "default",
        {
            "metadata": {"name": "controller-files"},
            "stringData": {
                "kubeconfig": Path(server.kubeconfig).read_text(),
                "sa.json": Path(controller.env["NBD_SIGNING_KEY_FILE"]).read_text(),
            },
        },
    )
    nb.core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "nbd-controller"},
            "spec": {
                "containers": [
                    {
                        "name": "controller",
                        "image": IMAGE,
                        "args": ["--kubeconfig", "/etc/nbd-kube/kubeconfig"],
                        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                        "volumeMounts": [
                            {"name": "files", "mountPath": "/etc/nbd-kube", "readOnly": True},
                            {"name": "files", "mountPath": "/etc/nbd-key", "readOnly": True},
                        ],
                    }
                ],
                "volumes": [{"name": "files", "secret": {"secretName": "controller-files"}}],
            },
        },
    )
    # A prebuilt image whose server answers the readiness probe's GET /api.
    serve = "echo ok > api && exec python3 -m http.server 8888"
    nb.create("from-image", {"image": "python:3.12", "command": ["sh", "-c", serve]})

    def served() -> Any:
        pod = (nb.pod("nbd-controller") or {}).get("status") or {}
        if pod.get("phase") in ("Succeeded", "Failed") or any(
            (c.get("state") or {}).get("terminated") or (c.get("restartCount") or 0)
            for c in pod.get("containerStatuses") or []
        ):
            return {
                "controller pod": pod,
                "log": nb.core.read_namespaced_pod_log("nbd-controller", "default"),
            }
        return (s := nb.status("from-image")).get("phase") in ("Ready", "Failed") and s

    status = wait_for("Ready through the controller in the pod", served, timeout=120)
    assert status["phase"] == "Ready", (status, nb.core.read_namespaced_pod_log("nbd-controller", "default"))
    assert "nbd-controller started" in nb.core.read_namespaced_pod_log("nbd-controller", "default")
