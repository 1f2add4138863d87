"""Launches on a cluster whose GPU pools scale from zero, with tainted pools and nbd-config defaults.

One cluster for the module (kubesim with three node pools, none with a node at first), and the
controller configured with default tolerations, a default node selector and a default priority class:

- `l4`: nodes with one nvidia-l4, tainted nvidia.com/gpu (as GKE and EKS taint GPU nodes); a GPU
  pod tolerates that by itself;
- `ml`: one nvidia-t4 each, also tainted dedicated=ml, which only a notebook.yaml toleration admits;
- `slow`: one nvidia-a100, added a minute after it is asked for (longer than the timeout test waits);
- `h100`: one nvidia-h100, for the training run.

What a person reads in the terminal is checked as they read it: `nbctl launch` without --output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_daemon import DaemonProcess
from fixtures_stack import LocalStack, _start, make_namespace
from launchkit import LaunchKit, make_project

from devstack import down

pytestmark = pytest.mark.timeout(420)

GPU_LABEL = "nvidia.com/gpu.product"
POOLS = [
    {
        "name": "l4",
        "gpus": 1,
        "maxNodes": 2,
        "labels": [f"{GPU_LABEL}=nvidia-l4"],
        "taints": ["nvidia.com/gpu=present:NoSchedule"],
        "scaleUpDelay": 2,
        "devicePluginDelay": 2,
    },
    {
        "name": "ml",
        "gpus": 1,
        "maxNodes": 1,
        "labels": [f"{GPU_LABEL}=nvidia-t4"],
        "taints": ["nvidia.com/gpu=present:NoSchedule", "dedicated=ml:NoSchedule"],
        "scaleUpDelay": 1,
        "devicePluginDelay": 1,
    },
    {"name": "slow", "gpus": 1, "maxNodes": 1, "labels": [f"{GPU_LABEL}=nvidia-a100"], "scaleUpDelay": 60},
    {"name": "h100", "gpus": 1, "maxNodes": 1, "labels": [f"{GPU_LABEL}=nvidia-h100"], "scaleUpDelay": 2},
]
DEFAULT_TOLERATION = {"key": "team", "operator": "Exists", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CONTROLLER_ENV = {
    "NBD_DEFAULT_TOLERATIONS": json.dumps([DEFAULT_TOLERATION]),
    "NBD_DEFAULT_NODE_SELECTOR": "kubernetes.io/os=linux",
    "NBD_DEFAULT_PRIORITY_CLASS": "nbd-default",
}


@pytest.fixture(scope="module")
def pools_stack() -> Iterator[LocalStack]:
    args = [a for pool in POOLS for a in ("--node-pool", json.dumps(pool))]
    stack, state = _start(extra_kubesim_args=args, controller_extra_env=CONTROLLER_ENV)
    from kubernetes import client, config

    api = client.SchedulingV1Api(config.new_client_from_config(config_file=stack.kubeconfig))
    for name, value in (("nbd-default", 100), ("nbd-high", 1000)):
        api.create_priority_class({"metadata": {"name": name}, "value": value})
    yield stack
    down(state)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def pkit(launch_daemon: DaemonProcess, pools_stack: LocalStack) -> LaunchKit:
    return LaunchKit(launch_daemon, pools_stack)


@pytest.fixture
def pns(pkit: LaunchKit, pools_stack: LocalStack) -> Iterator[str]:
    name = make_namespace(pools_stack, "as")
    yield name
    pkit.cleanup(name)
    try:
        pools_stack.core().delete_namespace(name)
    except Exception:
        pass


def notebook_pod(kit: LaunchKit, ns: str, name: str) -> Any:
    pods = kit.pods(ns, f"nbd.dev/notebook={name}")
    assert pods, f"no notebook pod of {name}"
    return pods[-1]


def tolerations(pod: Any) -> list[dict[str, Any]]:
    return [
        {
            k: v
            for k, v in {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}.items()
            if v
        }
        for t in pod.spec.tolerations or []
        # The API server's own, added to every pod.
        if t.key not in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
    ]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("nbctl: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_launch_waits_for_a_pool_that_scales_from_zero(pkit: LaunchKit, pns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "scaled")
    proc = pkit.nbctl(
        "launch", str(project), "-n", pns, "--gpus", "1", "--gpu-type", "nvidia-l4", timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    # What the person read while the pool grew: what the notebook waits for, and for how long.
    waits = [line.strip() for line in proc.stderr.splitlines() if "waiting for a node" in line]
    assert waits, proc.stderr
    assert waits[0].startswith("note: waiting for a node with 1 nvidia.com/gpu (nvidia-l4): ")
    assert any("the cluster is scaling up, " in line for line in waits), waits
    assert "cannot be scheduled" not in proc.stderr
    assert proc.stdout.strip().startswith("http://127.0.0.1:")
    pod = notebook_pod(pkit, pns, "scaled")
    assert pod.spec.node_name.startswith("l4-")
    # The GPU taint is tolerated by itself; the cluster's defaults apply to the pod.
    assert tolerations(pod) == [DEFAULT_TOLERATION, GPU_TOLERATION]
    assert pod.spec.node_selector == {"kubernetes.io/os": "linux", GPU_LABEL: "nvidia-l4"}
    assert pod.spec.priority_class_name == "nbd-default"


def test_no_pool_fits_fails_at_once_naming_what_the_cluster_offers(
    pkit: LaunchKit, pns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "greedy")
    proc = pkit.nbctl("launch", str(project), "-n", pns, "--gpus", "4", timeout=240)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "cannot be scheduled" in line
    assert (
        "pod didn't trigger scale-up: 1 node(s) had untolerated taint {dedicated: ml}, 3 Insufficient nvidia.com/gpu"
        in line
    )
    assert "the autoscaler's node pools are l4, ml, slow, h100" in line
    assert "ask for fewer GPUs" in line
    # It did not wait for the launch timeout (15 minutes by default).
    assert "launch timeout" not in line


def test_a_tainted_pool_is_reached_only_with_the_notebook_yaml_toleration(
    pkit: LaunchKit, pns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "dedicated")
    (project / "notebook.yaml").write_text("resources:\n  gpu:\n    count: 1\n    type: nvidia-t4\n")
    proc = pkit.nbctl("launch", str(project), "-n", pns, timeout=240)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "untolerated taint {dedicated: ml}" in line, line
    assert "add the tolerations or nodeSelector the GPU nodes need to notebook.yaml" in line
    (project / "notebook.yaml").write_text(
        "resources:\n  gpu:\n    count: 1\n    type: nvidia-t4\n"
        "tolerations:\n  - {key: dedicated, operator: Equal, value: ml, effect: NoSchedule}\n"
        "nodeSelector:\n  kubernetes.io/os: linux\n  team: ml\n"
        "priorityClassName: nbd-high\n"
    )
    proc = pkit.nbctl("launch", str(project), "-n", pns, timeout=300)
    # `team: ml` is a label no pool has: the autoscaler says so at once.
    assert proc.returncode == 1 and "didn't match Pod's node affinity/selector" in proc.stderr, proc.stderr
    (project / "notebook.yaml").write_text(
        "resources:\n  gpu:\n    count: 1\n    type: nvidia-t4\n"
        "tolerations:\n  - {key: dedicated, operator: Equal, value: ml, effect: NoSchedule}\n"
        "priorityClassName: nbd-high\n"
    )
    proc = pkit.nbctl("launch", str(project), "-n", pns, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pod = notebook_pod(pkit, pns, "dedicated")
    assert pod.spec.node_name == "ml-1"
    dedicated = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    assert tolerations(pod) == [DEFAULT_TOLERATION, dedicated, GPU_TOLERATION]
    assert pod.spec.priority_class_name == "nbd-high"


def test_a_launch_that_times_out_says_what_it_waited_for(pkit: LaunchKit, pns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path, "patient")
    proc = pkit.nbctl(
        "launch",
        str(project),
        "-n",
        pns,
        "--gpus",
        "1",
        "--gpu-type",
        "nvidia-a100",
        "--timeout",
        "8s",
        timeout=240,
    )
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "did not start within the launch timeout of 8s" in line
    assert "a node with 1 nvidia.com/gpu (nvidia-a100): the cluster is scaling up" in line
    assert "the Notebook patient stays in the cluster" in line and "nbctl stop patient" in line
    assert pkit.notebook(pns, "patient") is not None


def test_a_bad_timeout_and_bad_placement_are_refused_before_packaging(
    pkit: LaunchKit, pns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "refused")
    proc = pkit.nbctl("launch", str(project), "-n", pns, "--timeout", "soon")
    assert proc.returncode != 0 and "--timeout 'soon' is not a duration" in proc.stderr, proc.stderr
    (project / "notebook.yaml").write_text(
        "tolerations:\n  - {key: dedicated, operator: Exists, value: ml}\n"
    )
    proc = pkit.nbctl("launch", str(project), "-n", pns)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "tolerations[0]: a toleration with operator Exists takes no value" in line
    assert "packag" not in proc.stderr.lower()
    assert pkit.notebook(pns, "refused") is None


def test_a_training_run_waits_for_its_pool_and_one_no_pool_fits_fails_at_once(
    pkit: LaunchKit, pns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "trainer")
    (project / "train.py").write_text("print('trained on', __import__('socket').gethostname(), flush=True)\n")
    proc = pkit.nbctl(
        "run", str(project), "-n", pns, "--name", "h100-run", "--gpus", "1", "--gpu-type", "nvidia-h100",
        "--", "python", "train.py",
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "trained on h100-run" in proc.stdout
    assert "Waiting for a node with 1 nvidia.com/gpu (nvidia-h100)" in proc.stderr, proc.stderr
    pods = pkit.pods(pns, "nbd.dev/run=h100-run")
    assert [p.spec.node_name for p in pods] == ["h100-1"]
    assert GPU_TOLERATION in tolerations(pods[0]) and DEFAULT_TOLERATION in tolerations(pods[0])
    proc = pkit.nbctl(
        "run",
        str(project),
        "-n",
        pns,
        "--name",
        "too-big",
        "--gpus",
        "8",
        "--",
        "python",
        "train.py",
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc.stderr)
    assert "run too-big cannot start: rank 0: no node can run the pod" in line
    assert "pod didn't trigger scale-up" in line and "the Run stays in the cluster" in line
