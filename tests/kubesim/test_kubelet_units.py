"""Pure parts of the kubelet: command/env resolution, quantities, scheduling, phases, volumes, logs."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from kubesim.images import Image, ImageConfig
from kubesim.images.layers import LayerStore
from kubesim.kubelet import logs as logfiles
from kubesim.kubelet.containerfs import host_path, instance_fs
from kubesim.kubelet.namespaces import Mount, _container_script, _script
from kubesim.kubelet.node import NodeConfig, machine_arch, node_object, parse_label, parse_taint
from kubesim.kubelet.scheduler import fit, pod_requests, tolerates, untolerated_taint
from kubesim.kubelet.spec import ConfigError, expand, parse_quantity, resolve_argv, resolve_env
from kubesim.kubelet.status import ContainerView, PodFacts, Terminated, pod_phase, pod_status, will_restart
from kubesim.kubelet.volumes import pod_volumes, volume_mounts


@pytest.mark.parametrize(
    "value, env, expected",
    [
        ("$(A)", {"A": "1"}, "1"),
        ("x$(A)y", {"A": "1"}, "x1y"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
        ("$$", {}, "$"),
        ("plain", {"A": "1"}, "plain"),
    ],
)
def test_expand(value: str, env: dict[str, str], expected: str) -> None:
    assert expand(value, env) == expected


@pytest.mark.parametrize(
    "container, entrypoint, cmd, expected",
    [
        ({}, ["ep"], ["c1", "c2"], ["ep", "c1", "c2"]),
        ({"command": ["sh"]}, ["ep"], ["c1"], ["sh"]),
        ({"command": ["sh"], "args": ["-c", "x"]}, ["ep"], ["c1"], ["sh", "-c", "x"]),
        ({"args": ["a"]}, ["ep"], ["c1"], ["ep", "a"]),
        ({"args": ["$(X)"]}, [], ["c1"], ["v"]),
        ({}, [], [], []),
    ],
)
def test_resolve_argv(
    container: dict[str, Any], entrypoint: list[str], cmd: list[str], expected: list[str]
) -> None:
    assert resolve_argv(container, entrypoint, cmd, {"X": "v"}) == expected


POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "kubesim-node"},
    "status": {"podIP": "127.0.0.1"},
}
OBJECTS = {
    ("Secret", "s"): {"data": {"k": base64.b64encode(b"secret-value").decode()}},
    ("ConfigMap", "cm"): {"data": {"a": "1", "b": "2"}},
}


def lookup(kind: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, name))


def test_resolve_env_sources_and_order() -> None:
    c = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "a"}}},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "E", "value": "$(N)-$(IMG)"},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
    }
    env = resolve_env(POD, c, {"PATH": "/bin"}, ["IMG=i", "PATH=/img"], lookup)
    assert env["S"] == "secret-value" and env["C"] == "1" and env["N"] == "p" and env["NS"] == "ns"
    assert env["L"] == "x" and env["E"] == "p-i" and env["CM_b"] == "2" and env["PATH"] == "/img"
    assert "OPT" not in env


@pytest.mark.parametrize(
    "item, message",
    [
        (
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}},
            'secret "nope" not found',
        ),
        (
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}},
            'configmap "nope" not found',
        ),
        ({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "zz"}}}, "couldn't find key zz"),
        ({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}, "unsupported fieldRef"),
    ],
)
def test_resolve_env_errors(item: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_env(POD, {"env": [item]}, {}, [], lookup)


@pytest.mark.parametrize(
    "q, value",
    [
        ("500m", 0.5),
        ("2", 2.0),
        (3, 3.0),
        ("1Gi", 2**30),
        ("1G", 1e9),
        ("128Mi", 128 * 2**20),
        ("1e3", 1000.0),
    ],
)
def test_parse_quantity(q: Any, value: float) -> None:
    assert parse_quantity(q) == pytest.approx(value)


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_quantity("lots")


def _pod(
    gpus: int = 0, selector: dict[str, str] | None = None, phase: str = "Pending", cpu: str | None = None
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if gpus:
        res["limits"] = {"nvidia.com/gpu": gpus}
    if cpu:
        res["requests"] = {"cpu": cpu}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": res}]}
    if selector:
        spec["nodeSelector"] = selector
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


ALLOC = {"cpu": "2", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "1"}
LABELS = {"kubernetes.io/os": "linux", "nvidia.com/gpu.product": "L4"}


@pytest.mark.parametrize(
    "pod, bound, ok, message",
    [
        (_pod(), [], True, ""),
        (_pod(gpus=1), [], True, ""),
        (_pod(gpus=2), [], False, "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
        (_pod(gpus=1), [_pod(gpus=1, phase="Running")], False, "1 Insufficient nvidia.com/gpu."),
        (_pod(gpus=1), [_pod(gpus=1, phase="Succeeded")], True, ""),
        (_pod(gpus=1, cpu="3"), [], False, "1 Insufficient cpu, 1 Insufficient nvidia.com/gpu"),
        (_pod(selector={"nvidia.com/gpu.product": "L4"}), [], True, ""),
        (
            _pod(selector={"nvidia.com/gpu.product": "A100"}),
            [],
            False,
            "didn't match Pod's node affinity/selector",
        ),
    ],
)
def test_fit(pod: dict[str, Any], bound: list[dict[str, Any]], ok: bool, message: str) -> None:
    if "Insufficient cpu, 1 Insufficient nvidia" in message:
        pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 2
    result = fit(pod, LABELS, ALLOC, bound)
    assert result.ok is ok
    assert message in result.message


def test_fit_node_affinity_expressions() -> None:
    pod = _pod()
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["A100"]}
                        ]
                    },
                    {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "Exists"}]},
                ]
            }
        }
    }
    assert fit(pod, LABELS, ALLOC, []).ok
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ].pop()
    assert not fit(pod, LABELS, ALLOC, []).ok


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    "toleration, taint, matches",
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"}, GPU_TAINT, False),
        ({"key": "nvidia.com/gpu"}, GPU_TAINT, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, GPU_TAINT, False),
        ({"key": "sku", "operator": "Exists"}, GPU_TAINT, False),
        ({"operator": "Exists"}, GPU_TAINT, True),
        ({"operator": "Exists", "effect": "NoExecute"}, GPU_TAINT, False),
        ({"value": "present"}, GPU_TAINT, False),
        ({"key": "sku"}, {"key": "sku", "effect": "NoSchedule"}, True),
        ({"key": "sku", "value": ""}, {"key": "sku", "value": "gpu", "effect": "NoSchedule"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Gt", "value": "1"}, GPU_TAINT, False),
    ],
)
def test_tolerates(toleration: dict[str, Any], taint: dict[str, Any], matches: bool) -> None:
    assert tolerates(toleration, taint) is matches


@pytest.mark.parametrize(
    "taints, tolerations, blocking",
    [
        ([], [], None),
        ([GPU_TAINT], [], GPU_TAINT),
        ([{"key": "soft", "effect": "PreferNoSchedule"}], [], None),
        ([{"key": "evict", "effect": "NoExecute"}], [], {"key": "evict", "effect": "NoExecute"}),
        (
            [GPU_TAINT, {"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
        ),
        (
            [GPU_TAINT, {"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            [{"key": "nvidia.com/gpu", "operator": "Exists"}, {"key": "sku", "value": "gpu"}],
            None,
        ),
    ],
)
def test_untolerated_taint(
    taints: list[dict[str, Any]], tolerations: list[dict[str, Any]], blocking: dict[str, Any] | None
) -> None:
    assert untolerated_taint(taints, tolerations) == blocking


@pytest.mark.parametrize(
    "taints, tolerations, selector, gpus, message",
    [
        ([GPU_TAINT], [], None, 0, "1 node(s) had untolerated taint {nvidia.com/gpu: present}. "),
        (
            [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}],
            [],
            None,
            0,
            "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. ",
        ),
        # The taint filter runs before node affinity and resources: its reason is the one reported.
        ([GPU_TAINT], [], {"nvidia.com/gpu.product": "A100"}, 5, "had untolerated taint"),
        (
            [GPU_TAINT],
            [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            {"nvidia.com/gpu.product": "A100"},
            5,
            "didn't match Pod's node affinity/selector",
        ),
        (
            [GPU_TAINT],
            [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            None,
            5,
            "Insufficient nvidia.com/gpu",
        ),
        ([GPU_TAINT], [{"key": "nvidia.com/gpu", "operator": "Exists"}], None, 1, ""),
    ],
)
def test_fit_with_taints(
    taints: list[dict[str, Any]],
    tolerations: list[dict[str, Any]],
    selector: dict[str, str] | None,
    gpus: int,
    message: str,
) -> None:
    pod = _pod(gpus=gpus, selector=selector)
    pod["spec"]["tolerations"] = tolerations
    result = fit(pod, LABELS, ALLOC, [], taints)
    assert result.ok is (message == "")
    assert message in result.message
    if not result.ok:
        assert result.message.startswith("0/1 nodes are available: 1 ")
        tail = (
            "1 No preemption victims found for incoming pod."
            if "Insufficient" in message
            else "1 Preemption is not helpful for scheduling."
        )
        assert result.message.endswith(" preemption: 0/1 nodes are available: " + tail)


def test_pod_requests_init_max_and_limits_as_requests() -> None:
    pod = {
        "spec": {
            "containers": [
                {"resources": {"limits": {"nvidia.com/gpu": 1}}},
                {"resources": {"requests": {"cpu": "500m"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
        }
    }
    assert pod_requests(pod) == {"nvidia.com/gpu": 1.0, "cpu": 2.0}


def _view(state: str, code: int = 0, started: bool = True) -> ContainerView:
    v = ContainerView("c", "busybox", ever_started=started)
    if state == "running":
        v.waiting_reason, v.running_since = None, "t"
    elif state == "terminated":
        v.waiting_reason, v.terminated = (
            None,
            Terminated(code, "Completed" if code == 0 else "Error", "t", "t"),
        )
    elif state == "backoff":
        v.waiting_reason = "CrashLoopBackOff"
    return v


@pytest.mark.parametrize(
    "policy, views, init_done, phase",
    [
        ("Always", [_view("waiting", started=False)], True, "Pending"),
        ("Always", [_view("running")], False, "Pending"),
        ("Always", [_view("running")], True, "Running"),
        ("Always", [_view("backoff")], True, "Running"),
        ("Never", [_view("terminated", 0)], True, "Succeeded"),
        ("Never", [_view("terminated", 1)], True, "Failed"),
        ("OnFailure", [_view("terminated", 0)], True, "Succeeded"),
        ("OnFailure", [_view("terminated", 1)], True, "Running"),
        ("Always", [_view("terminated", 0)], True, "Running"),
        ("Never", [_view("terminated", 0), _view("running")], True, "Running"),
    ],
)
def test_pod_phase(policy: str, views: list[ContainerView], init_done: bool, phase: str) -> None:
    assert pod_phase(policy, [], views, init_done) == phase


def test_failed_init_container_fails_pod_under_never() -> None:
    assert pod_phase("Never", [_view("terminated", 1)], [_view("waiting", started=False)], False) == "Failed"
    assert (
        pod_phase("OnFailure", [_view("terminated", 1)], [_view("waiting", started=False)], False)
        == "Pending"
    )


@pytest.mark.parametrize(
    "policy, code, restart",
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 1, False),
    ],
)
def test_will_restart(policy: str, code: int, restart: bool) -> None:
    assert will_restart(policy, code) is restart


def test_pod_status_conditions_and_container_states() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"restartPolicy": "Always", "containers": [{"name": "c"}]},
        "status": {},
    }
    running = _view("running")
    running.ready = True
    st = pod_status(pod, [], [running], PodFacts(start_time="t0", sandbox_ready=True, init_done=True), "now")
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert st["phase"] == "Running" and conds["Ready"] == "True" and conds["ContainersReady"] == "True"
    assert st["containerStatuses"][0]["state"] == {"running": {"startedAt": "t"}}
    backoff = _view("backoff")
    backoff.last_terminated = Terminated(2, "Error", "a", "b")
    backoff.restart_count = 3
    st = pod_status(pod, [], [backoff], PodFacts(start_time="t0", init_done=True), "now")
    cs = st["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff" and cs["restartCount"] == 3
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert {c["type"]: c.get("reason") for c in st["conditions"]}["Ready"] == "ContainersNotReady"


def test_node_object_labels_and_capacity() -> None:
    cfg = NodeConfig(gpus=2, labels=dict([parse_label("nvidia.com/gpu.product=NVIDIA-L4")]))
    node = node_object(cfg, "now")
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/arch"] == machine_arch() and labels["kubernetes.io/os"] == "linux"
    assert (
        labels["kubernetes.io/hostname"] == "kubesim-node" and labels["nvidia.com/gpu.product"] == "NVIDIA-L4"
    )
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert all(a["address"] in ("127.0.0.1", "kubesim-node") for a in node["status"]["addresses"])


@pytest.mark.parametrize(
    "text, taint",
    [
        (
            "nvidia.com/gpu=present:NoSchedule",
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        ),
        ("dedicated:NoExecute", {"key": "dedicated", "effect": "NoExecute"}),
        ("sku=gpu:PreferNoSchedule", {"key": "sku", "value": "gpu", "effect": "PreferNoSchedule"}),
    ],
)
def test_parse_taint(text: str, taint: dict[str, str]) -> None:
    assert parse_taint(text) == taint


@pytest.mark.parametrize("text", ["nvidia.com/gpu=present", "=x:NoSchedule", "k=v:Sometimes", ":NoSchedule"])
def test_parse_taint_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"key\[=value\]:Effect"):
        parse_taint(text)


def test_node_object_carries_taints() -> None:
    assert "taints" not in node_object(NodeConfig(), "now")["spec"]
    node = node_object(NodeConfig(taints=[parse_taint("nvidia.com/gpu=present:NoSchedule")]), "now")
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def test_parse_label_rejects_missing_equals() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_label("novalue")


def _mounts_pod() -> tuple[Image, dict[str, Any]]:
    return (
        Image("docker.io/x/y:latest", ImageConfig(workdir="/app"), None),
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "workingDir": "/content-kubesim-test-nonexistent",
                        "volumeMounts": [
                            {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                            {"name": "scratch", "mountPath": "/scratch"},
                            {"name": "scratch", "mountPath": "/sub", "subPath": "a/b"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "sec", "secret": {"secretName": "s"}},
                    {"name": "scratch", "emptyDir": {}},
                ],
            },
        },
    )


@pytest.mark.parametrize("isolated", [True, False])
def test_container_mounts(tmp_path: Path, isolated: bool) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "app").mkdir(parents=True)
    (rootfs / "app" / "main.py").write_text("print(1)")
    (rootfs / "usr").mkdir()
    image, pod = _mounts_pod()
    image = Image(image.name, image.config, rootfs)
    volumes = pod_volumes(pod, tmp_path / "pod", tmp_path / "state", lookup)
    c = pod["spec"]["containers"][0]
    fs = instance_fs(
        image,
        c,
        volume_mounts(c, volumes),
        tmp_path / "pod" / "containers" / "c" / "0",
        LayerStore(tmp_path / "layers"),
        isolated=isolated,
    )
    by_target = {m.target: m for m in fs.mounts}
    view = {m.target: m for m in fs.view}
    assert (
        Path(by_target["/etc/sec"].source, "k").read_text() == "secret-value"
        and by_target["/etc/sec"].read_only
    )
    assert by_target["/sub"].source == str(tmp_path / "pod" / "volumes" / "scratch" / "a" / "b")
    assert Path(by_target["/sub"].source).is_dir()
    assert Path(view["/app"].source, "main.py").read_text() == "print(1)"
    assert "/usr" not in by_target
    assert by_target["/content-kubesim-test-nonexistent"].source.startswith(str(fs.dir / "fs"))
    assert host_path("/app/main.py", fs.view) == str(Path(view["/app"].source, "main.py"))
    assert host_path("/elsewhere", fs.view) == "/elsewhere"
    if isolated:
        # The image's entries come from an overlay of the image, made per instance, never copied.
        assert fs.overlay is not None and fs.overlay.upper == str(fs.dir / "upper")
        assert (fs.overlay.base, fs.overlay.lower) == (str(rootfs), (".",))
        assert by_target["/app"].source == str(fs.dir / "merged" / "app") and view["/app"].source == str(
            rootfs / "app"
        )
    else:
        assert fs.overlay is None and by_target["/app"] == view["/app"]
        assert by_target["/app"].source == str(fs.dir / "fs" / "app")


def test_an_image_with_layers_is_the_overlay_of_its_layers(tmp_path: Path) -> None:
    layers = LayerStore(tmp_path / "layers")
    for layer_id in ("l0", "l1"):
        (tmp_path / layer_id / "content").mkdir(parents=True)
        layers.commit(tmp_path / layer_id, layer_id, layer_id)
    rootfs = tmp_path / "rootfs"
    (rootfs / "content").mkdir(parents=True)
    image = Image("docker.io/x/y:latest", ImageConfig(workdir="/content"), rootfs, ("l0", "l1"))
    fs = instance_fs(image, {"name": "c"}, [], tmp_path / "i", layers, isolated=True)
    assert fs.overlay is not None
    assert (fs.overlay.base, fs.overlay.lower) == (str(layers.root), ("l1/fs", "l0/fs"))  # top first
    assert [m.target for m in fs.mounts] == ["/content"]
    script = _container_script(fs.overlay, fs.mounts).splitlines()
    assert script[1:4] == [
        f"cd {layers.root}",
        f"mount -t overlay overlay -o lowerdir=l1/fs:l0/fs,upperdir={tmp_path}/i/upper,"
        f"workdir={tmp_path}/i/work {tmp_path}/i/merged",
        "cd /",
    ]
    assert f"mount --bind {tmp_path}/i/merged/content /content" in script and script[-2] == "echo ready"


def test_a_volume_hides_the_image_entry_at_its_path(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "content").mkdir(parents=True)
    image = Image("docker.io/x/y:latest", ImageConfig(workdir="/content"), rootfs)
    fs = instance_fs(
        image,
        {"name": "c"},
        [Mount(str(tmp_path / "vol"), "/content")],
        tmp_path / "i",
        LayerStore(tmp_path / "layers"),
        isolated=True,
    )
    assert fs.mounts == [Mount(str(tmp_path / "vol"), "/content")] and fs.overlay is None


def test_pod_volumes_missing_secret_is_a_config_error(tmp_path: Path) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "v", "secret": {"secretName": "gone"}}]},
    }
    with pytest.raises(ConfigError, match='secret "gone" not found'):
        pod_volumes(pod, tmp_path / "pod", tmp_path / "state", lookup)


def test_pod_volumes_undefined_volume_is_a_config_error(tmp_path: Path) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]},
    }
    with pytest.raises(ConfigError, match='volume "nope" of container "c" is not defined in the pod'):
        pod_volumes(pod, tmp_path / "pod", tmp_path / "state", lookup)


@pytest.mark.parametrize("sub", ["../escape", "/abs", "a/../../b"])
def test_a_sub_path_leaving_its_volume_is_a_config_error(tmp_path: Path, sub: str) -> None:
    c = {"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": sub}]}
    with pytest.raises(ConfigError, match="subPath"):
        volume_mounts(c, {"v": tmp_path / "v"})


def test_sandbox_script_orders_mounts_shallow_first() -> None:
    script = _script("p", [Mount("/s/b", "/a/b/c"), Mount("/s/a", "/a"), Mount("/s/f", "/etc/f", True, True)])
    lines = script.splitlines()
    assert lines.index("mount --bind /s/a /a") < lines.index("mount --bind /s/b /a/b/c")
    assert "mount -o remount,bind,ro /etc/f" in lines and lines[-2] == "echo ready"


def test_log_entries_join_partials_and_filter(tmp_path: Path) -> None:
    async def scenario() -> list[bytes]:
        lf = logfiles.LogFile(tmp_path / "0.log")
        lf.append(b"one\ntw")
        lf.append(b"o\nthree\n")
        lf.append(b"err\n", "stderr")
        lf.close()
        outs = []
        for opts in (
            logfiles.LogOptions(),
            logfiles.LogOptions(tail_lines=2),
            logfiles.LogOptions(timestamps=True),
            logfiles.LogOptions(limit_bytes=5),
            logfiles.LogOptions(since_seconds=3600),
        ):
            outs.append(b"".join([c async for c in logfiles.read(lf.path, None, opts)]))
        return outs

    full, tail, stamped, limited, since = asyncio.run(scenario())
    assert full == b"one\ntwo\nthree\nerr\n"
    assert tail == b"three\nerr\n"
    assert stamped.splitlines()[1].endswith(b" two") and stamped.startswith(b"20")
    assert limited == b"one\nt"
    assert since == full


def test_log_follow_sees_new_lines_and_ends_on_close(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        lf = logfiles.LogFile(tmp_path / "0.log")
        lf.append(b"a\n")
        got = []

        async def follow() -> None:
            async for c in logfiles.read(lf.path, lf, logfiles.LogOptions(follow=True)):
                got.append(c)

        task = asyncio.ensure_future(follow())
        await asyncio.sleep(0.05)
        lf.append(b"b\nc")
        await asyncio.sleep(0.05)
        lf.append(b"\n")
        lf.close()
        await asyncio.wait_for(task, 5)
        return b"".join(got)

    assert asyncio.run(scenario()) == b"a\nb\nc\n"


def test_backoff_delay_is_capped() -> None:
    from kubesim.kubelet import KubeletConfig

    cfg = KubeletConfig(state_dir=Path("/nonexistent"), backoff_initial=0.5, backoff_max=3)
    assert [cfg.backoff_delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_kubelet_config_node_labels_and_keyword_construction(tmp_path: Path) -> None:
    from kubesim.kubelet import Kubelet, KubeletConfig
    from kubesim.store import Store

    cfg = KubeletConfig(
        state_dir=tmp_path, node=NodeConfig(gpus=1), node_labels=["nvidia.com/gpu.product=L4"]
    )
    assert cfg.node.labels == {"nvidia.com/gpu.product": "L4"}
    with pytest.raises(ValueError, match="key=value"):
        KubeletConfig(state_dir=tmp_path, node_labels=["broken"])
    kubelet = Kubelet(
        Store(),
        state_dir=tmp_path,
        gpus=2,
        node_labels={"a": "b"},
        host_ports=[5000],
        api_url="http://127.0.0.1:6443",
    )
    assert kubelet.config.node.gpus == 2 and kubelet.config.node.labels == {"a": "b"}
    assert kubelet.host_ports == {5000, 6443} and kubelet.config.api_port == 6443
    with pytest.raises(ValueError, match="state_dir"):
        Kubelet(Store())


def test_kubelet_config_and_keyword_construction_take_taints(tmp_path: Path) -> None:
    from kubesim.kubelet import Kubelet, KubeletConfig
    from kubesim.store import Store

    gpu = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    cfg = KubeletConfig(state_dir=tmp_path, node_taints=["nvidia.com/gpu=present:NoSchedule"])
    assert cfg.node.taints == [gpu]
    with pytest.raises(ValueError, match="Effect"):
        KubeletConfig(state_dir=tmp_path, node_taints=["nvidia.com/gpu"])
    kubelet = Kubelet(Store(), state_dir=tmp_path, node_taints=["sku=gpu:NoSchedule"])
    assert kubelet.config.node.taints == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    "mounts, expected",
    [
        # deeper targets after their ancestors
        ([("/s/b", "/a/b"), ("/s/a", "/a")], ["/a", "/a/b"]),
        # a mount whose source lives under another mount's target goes first
        ([("/s/tmpvol", "/tmp"), ("/tmp/state/pods/x/fs/content", "/content")], ["/content", "/tmp"]),
        # both constraints at once: the ancestor still comes first
        ([("/tmp/state/v", "/tmp/sub"), ("/s/tmpvol", "/tmp")], ["/tmp", "/tmp/sub"]),
    ],
)
def test_mount_order(mounts: list[tuple[str, str]], expected: list[str]) -> None:
    from kubesim.kubelet.namespaces import mount_order

    assert [m.target for m in mount_order([Mount(s, t) for s, t in mounts])] == expected
