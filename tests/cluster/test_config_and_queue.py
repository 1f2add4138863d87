"""Configuration parsing, the CRD's single source, the layering of pure modules, and the work queue."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from nbd_controller.config import DEFAULT_BUILDKIT_IMAGE, DEFAULT_KANIKO_IMAGE, Config, ConfigError
from nbd_controller.crd import crd_yaml, notebook_crd, run_crd
from nbd_controller.naming import build_job_name, image_ref, object_name, pod_name, token_secret_name
from nbd_controller.workqueue import WorkQueue

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cluster" / "nbd_controller"

BASE = {"NBD_BUCKET": "my-bucket", "NBD_REGISTRY": "europe-docker.pkg.dev/p/nbd/"}


def test_config_defaults() -> None:
    cfg = Config.from_env(BASE)
    assert cfg == Config(bucket="my-bucket", registry="europe-docker.pkg.dev/p/nbd")
    assert cfg.builder_image == DEFAULT_BUILDKIT_IMAGE
    for image in (DEFAULT_BUILDKIT_IMAGE, DEFAULT_KANIKO_IMAGE):
        assert re.fullmatch(r"[a-z0-9./-]+:v[0-9][\w.-]*@sha256:[0-9a-f]{64}", image), image
    assert cfg.upload_url_ttl == 900
    assert (cfg.build_cache, cfg.cache_ref("team")) == (True, "europe-docker.pkg.dev/p/nbd/nbd/cache:team")


def test_config_everything() -> None:
    cfg = Config.from_env(
        {
            **BASE,
            "NBD_PREFIX": "/a/b/",
            "NBD_BUILDER": "kaniko",
            "NBD_KANIKO_IMAGE": "k:1",
            "NBD_UTILITY_IMAGE": "u:1",
            "NBD_NAMESPACES": "a, b,",
            "NBD_GPU_LABEL_KEY": "cloud.google.com/gke-accelerator",
            "NBD_UPLOAD_URL_TTL": "300",
            "NBD_SIGNING_SERVICE_ACCOUNT": "sa@p.iam.gserviceaccount.com",
            "NBD_INSECURE_REGISTRY": "true",
            "NBD_CONCURRENCY": "8",
            "NBD_REGISTRY_SECRET": "regcred",
            "NBD_BUILD_SERVICE_ACCOUNT": "nbd-builder",
            "NBD_BUILD_CACHE": "false",
            "NBD_CACHE_REPO": "europe-docker.pkg.dev/p/cache/",
        }
    )
    assert (cfg.registry_secret, cfg.build_service_account) == ("regcred", "nbd-builder")
    assert (cfg.build_cache, cfg.cache_ref("team")) == (False, "europe-docker.pkg.dev/p/cache/team")
    shared = Config.from_env({**BASE, "NBD_CACHE_SHARED": "true"})
    assert (
        shared.cache_ref("team")
        == shared.cache_ref("other")
        == "europe-docker.pkg.dev/p/nbd/nbd/cache:shared"
    )
    assert (cfg.prefix, cfg.builder, cfg.builder_image, cfg.utility_image) == ("a/b", "kaniko", "k:1", "u:1")
    assert cfg.namespaces == ("a", "b")
    assert cfg.gpu_label_key == "cloud.google.com/gke-accelerator"
    assert (cfg.upload_url_ttl, cfg.insecure_registry, cfg.concurrency) == (300, True, 8)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NBD_REGISTRY": "r"}, "NBD_BUCKET is not set"),
        ({"NBD_BUCKET": "b"}, "NBD_BUCKET='b' is not a valid bucket name"),
        ({"NBD_BUCKET": "bucket"}, "NBD_REGISTRY is not set"),
        ({**BASE, "NBD_BUILDER": "docker"}, "NBD_BUILDER='docker'"),
        ({**BASE, "NBD_UPLOAD_URL_TTL": "3600"}, "out of range"),
        ({**BASE, "NBD_UPLOAD_URL_TTL": "soon"}, "not an integer"),
        ({**BASE, "NBD_RESYNC_SECONDS": "x"}, "not a number"),
        ({**BASE, "NBD_WATCH_READ_TIMEOUT": "soon"}, "NBD_WATCH_READ_TIMEOUT='soon' is not a number"),
        ({**BASE, "NBD_WATCH_READ_TIMEOUT": "0"}, "NBD_WATCH_READ_TIMEOUT=0 is out of range"),
        ({**BASE, "NBD_NOTEBOOK_FS_GROUP": "users"}, "NBD_NOTEBOOK_FS_GROUP='users': give a group id"),
        ({**BASE, "NBD_NOTEBOOK_FS_GROUP": "-1"}, "NBD_NOTEBOOK_FS_GROUP='-1': give a group id"),
        ({**BASE, "NBD_NOTEBOOK_FS_GROUP": "2147483648"}, "or off"),
        ({**BASE, "NBD_BUILD_CACHE": "maybe"}, "NBD_BUILD_CACHE='maybe': use true or false"),
        (
            {**BASE, "NBD_REGISTRY_SECRET": "Reg_Cred"},
            "NBD_REGISTRY_SECRET='Reg_Cred' is not a valid object name",
        ),
        ({**BASE, "NBD_BUILD_SERVICE_ACCOUNT": "a b"}, "NBD_BUILD_SERVICE_ACCOUNT='a b' is not a valid"),
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Config.from_env(env)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, 100),
        ("", 100),
        ("0", 0),
        ("1000", 1000),
        (" 2147483647 ", 2**31 - 1),
        ("off", None),
        ("OFF", None),
    ],
)
def test_notebook_fs_group(raw: str | None, expected: int | None) -> None:
    env = BASE if raw is None else {**BASE, "NBD_NOTEBOOK_FS_GROUP": raw}
    assert Config.from_env(env).notebook_fs_group == expected


def test_no_fs_group_leaves_the_pod_without_a_security_context() -> None:
    from nbd_controller.manifests import notebook_pod

    notebook = {
        "apiVersion": "nbd.dev/v1alpha1",
        "kind": "Notebook",
        "metadata": {"name": "nb", "namespace": "team", "uid": "u1"},
        "spec": {"md5": "a" * 32},
    }
    with_group = notebook_pod(Config.from_env(BASE), notebook, "IMG")["spec"]
    without = notebook_pod(Config.from_env({**BASE, "NBD_NOTEBOOK_FS_GROUP": "off"}), notebook, "IMG")["spec"]
    assert with_group["securityContext"] == {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"}
    assert "securityContext" not in without


def test_names_are_deterministic_and_bounded() -> None:
    md5 = "a" * 32
    assert build_job_name(md5) == "nbd-build-" + md5
    assert image_ref("reg", "team", md5) == f"reg/nbd/team-context:{md5}"
    assert object_name("ctx", md5) == f"ctx/{md5}.tar.gz"
    assert object_name("", md5) == f"{md5}.tar.gz"
    assert pod_name("nb") == "nb-notebook"
    long = "x" * 63
    assert len(pod_name(long)) == 63 and pod_name(long) == pod_name(long)
    assert len(token_secret_name(long)) <= 63 and token_secret_name(long).endswith("-token")


def test_committed_crd_yaml_is_generated_from_crd_py() -> None:
    text = (ROOT / "cluster" / "manifests" / "crd.yaml").read_text()
    assert yaml.safe_load(text) == notebook_crd()
    assert text == crd_yaml(), "crd.yaml is stale: python -m nbd_controller.crd > cluster/manifests/crd.yaml"


def test_committed_run_crd_yaml_is_generated_from_crd_py() -> None:
    text = (ROOT / "cluster" / "manifests" / "run-crd.yaml").read_text()
    assert yaml.safe_load(text) == run_crd()
    assert text == crd_yaml("run"), (
        "run-crd.yaml is stale: python -m nbd_controller.crd run > cluster/manifests/run-crd.yaml"
    )
    kustomization = yaml.safe_load((ROOT / "cluster" / "manifests" / "kustomization.yaml").read_text())
    assert {"crd.yaml", "run-crd.yaml"} <= set(kustomization["resources"])
    assert not any(t.__class__.__name__ in ("AnchorToken", "AliasToken") for t in yaml.scan(text))


def test_crd_yaml_has_no_anchors_or_aliases() -> None:
    # kustomize before 4.4 refuses YAML anchors; the schema shares dicts, which PyYAML would alias.
    tokens = list(yaml.scan(crd_yaml()))
    assert not [t for t in tokens if isinstance(t, (yaml.AnchorToken, yaml.AliasToken))]


PURE = [
    "config",
    "naming",
    "crd",
    "manifests",
    "decisions",
    "conditions",
    "patching",
    "builds",
    "scheduling",
    "idle",
]
FORBIDDEN = {"kubernetes", "asyncio", "google", "grpc", "aiohttp", "threading"}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_libraries(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_queue_coalesces_and_never_runs_a_key_twice_at_once() -> None:
    async def scenario() -> tuple[list[str], int]:
        runs: list[str] = []
        active: set[str] = set()
        overlap = 0
        gate = asyncio.Event()

        async def handler(key: str) -> float | None:
            nonlocal overlap
            if key in active:
                overlap += 1
            active.add(key)
            runs.append(key)
            if key == "a" and runs.count("a") == 1:
                await gate.wait()
            active.discard(key)
            return None

        queue: WorkQueue[str] = WorkQueue(handler, concurrency=3)
        queue.start()
        queue.add("a")
        await asyncio.sleep(0.01)
        for _ in range(5):
            queue.add("a")  # while "a" runs: coalesced into one more run
        queue.add("b")
        queue.add("b")
        await asyncio.sleep(0.05)
        assert runs.count("b") == 1  # "b" is not blocked by the slow "a"
        gate.set()
        await asyncio.sleep(0.05)
        await queue.stop()
        return runs, overlap

    runs, overlap = _run(scenario())
    assert runs.count("a") == 2 and runs.count("b") == 1
    assert overlap == 0


def test_queue_retries_failures_with_backoff_and_honours_requeue() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        calls: list[tuple[str, float]] = []

        async def handler(key: str) -> float | None:
            calls.append((key, loop.time() - start))
            if key == "bad" and len([c for c in calls if c[0] == "bad"]) < 3:
                raise RuntimeError("transient")
            if key == "poll" and len([c for c in calls if c[0] == "poll"]) < 2:
                return 0.05
            return None

        queue: WorkQueue[str] = WorkQueue(handler, concurrency=2, base_backoff=0.02)
        queue.start()
        queue.add("bad")
        queue.add("poll")
        deadline = loop.time() + 5
        while len(calls) < 5 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await queue.stop()
        return calls

    calls = _run(scenario())
    bad = [t for k, t in calls if k == "bad"]
    poll = [t for k, t in calls if k == "poll"]
    assert len(bad) == 3 and len(poll) == 2
    assert bad[1] - bad[0] >= 0.02 and bad[2] - bad[1] >= 0.04  # exponential backoff
    assert poll[1] - poll[0] >= 0.05


def test_controller_role_grants_exactly_what_the_controller_uses() -> None:
    from nbd_controller.permissions import REQUIRED

    docs = list(yaml.safe_load_all((ROOT / "cluster" / "manifests" / "rbac-controller.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    used = {
        (p.group, f"{p.resource}/{p.subresource}" if p.subresource else p.resource, p.verb) for p in REQUIRED
    }
    assert granted == used
    assert ("nbd.dev", "notebooks/finalizers", "update") in used  # blockOwnerDeletion on hardened clusters


def test_user_role_is_enough_for_the_daemon_and_holds_no_write_beyond_notebooks_and_runs() -> None:
    docs = list(yaml.safe_load_all((ROOT / "cluster" / "manifests" / "rbac-user.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    verbs = ("get", "list", "watch", "create", "patch", "delete")
    needed = {("nbd.dev", plural, v) for v in verbs for plural in ("notebooks", "runs")} | {
        ("nbd.dev", "runs/status", "get"),
        ("nbd.dev", "notebooks/status", "get"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("", "pods/exec", "create"),
        ("", "pods/portforward", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("", "events", "list"),
        ("", "secrets", "get"),
    }
    assert needed <= granted
    writes = {(g, r) for g, r, v in granted if v in ("create", "update", "patch", "delete")}
    assert writes == {
        ("nbd.dev", "notebooks"),
        ("nbd.dev", "runs"),
        ("", "pods/exec"),
        ("", "pods/portforward"),
    }
    assert ("nbd.dev", "runs", "update") not in granted


def test_config_of_runs() -> None:
    cfg = Config.from_env(BASE)
    assert (cfg.outputs_storage_class, cfg.outputs_rwx_storage_class, cfg.cluster_domain) == (
        None,
        None,
        "cluster.local",
    )
    cfg = Config.from_env(
        {
            **BASE,
            "NBD_OUTPUTS_STORAGE_CLASS": "premium-rwo",
            "NBD_OUTPUTS_RWX_STORAGE_CLASS": "filestore",
            "NBD_CLUSTER_DOMAIN": "corp.internal.",
        }
    )
    assert (cfg.outputs_storage_class, cfg.outputs_rwx_storage_class, cfg.cluster_domain) == (
        "premium-rwo",
        "filestore",
        "corp.internal",
    )
    for variable, value in (
        ("NBD_OUTPUTS_STORAGE_CLASS", "Bad_Class"),
        ("NBD_OUTPUTS_RWX_STORAGE_CLASS", "-x"),
        ("NBD_CLUSTER_DOMAIN", "under_score.local"),
    ):
        with pytest.raises(ConfigError, match=variable):
            Config.from_env({**BASE, variable: value})


def test_run_names() -> None:
    from nbd_controller.naming import (
        outputs_claim_name,
        outputs_reader_name,
        rank0_address,
        run_job_name,
        run_service_name,
    )
    from nbdcontract import RUN_NAME_MAX, valid_run_name

    assert (run_job_name("t"), run_service_name("t"), outputs_claim_name("t"), outputs_reader_name("t")) == (
        "t",
        "t",
        "t-outputs",
        "t-outputs-reader",
    )
    assert rank0_address("t", "ns", "cluster.local") == "t-0.t.ns.svc.cluster.local"
    longest = "a" * RUN_NAME_MAX
    assert valid_run_name(longest) and not valid_run_name(longest + "a")
    # Hostnames of an Indexed Job's pods are JOB-INDEX: the longest name leaves room for index 63.
    assert len(f"{run_job_name(longest)}-63") <= 63
    for derived in (outputs_claim_name(longest), outputs_reader_name(longest)):
        assert len(derived) <= 63 and derived != outputs_claim_name(longest[:-1] + "b")
    for bad in ("1run", "Run", "run-", "a.b", "", "run\n"):
        assert not valid_run_name(bad), bad


def test_owned_objects_wake_their_notebook_or_run_by_kind() -> None:
    from nbd_controller.main import owner_keys

    waiting = {("team", "m1"): {("Notebook", "team", "nb"), ("Run", "team", "nb")}}
    assert owner_keys("team", {"nbd.dev/notebook": "x"}, waiting) == {("Notebook", "team", "x")}
    assert owner_keys("team", {"nbd.dev/run": "x"}, waiting) == {("Run", "team", "x")}
    build = {"nbd.dev/requested-by": "r", "nbd.dev/requested-by-kind": "Run", "nbd.dev/context-md5": "m1"}
    # A Notebook and a Run of one name are two keys; both wait on the shared build.
    assert owner_keys("team", build, waiting) == {
        ("Run", "team", "r"),
        ("Notebook", "team", "nb"),
        ("Run", "team", "nb"),
    }
    legacy = {"nbd.dev/requested-by": "old", "nbd.dev/context-md5": "m2"}
    assert owner_keys("team", legacy, waiting) == {("Notebook", "team", "old")}
    assert owner_keys("other", build, waiting) == {("Run", "other", "r")}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {},
            (
                (("cpu", "100m"), ("memory", "256Mi"), ("ephemeral-storage", "1Gi")),
                (("ephemeral-storage", "50Gi"),),
            ),
        ),
        (
            {
                "NBD_NOTEBOOK_REQUESTS": "cpu=1, memory=4Gi",
                "NBD_NOTEBOOK_LIMITS": "memory=16Gi,ephemeral-storage=100Gi",
            },
            ((("cpu", "1"), ("memory", "4Gi")), (("memory", "16Gi"), ("ephemeral-storage", "100Gi"))),
        ),
        ({"NBD_NOTEBOOK_REQUESTS": "none", "NBD_NOTEBOOK_LIMITS": "NONE"}, ((), ())),
    ],
)
def test_container_resource_defaults(env: dict[str, str], expected: Any) -> None:
    cfg = Config.from_env({**BASE, **env})
    assert (cfg.notebook_requests, cfg.notebook_limits) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"NBD_BUILD_REQUESTS": "cpu:1"},
            "NBD_BUILD_REQUESTS='cpu:1': write RESOURCE=QUANTITY,... with RESOURCE one of cpu, memory, "
            "ephemeral-storage (for example cpu=500m,memory=2Gi), or none",
        ),
        ({"NBD_NOTEBOOK_LIMITS": "gpu=1"}, "NBD_NOTEBOOK_LIMITS='gpu=1': write RESOURCE=QUANTITY"),
        ({"NBD_NOTEBOOK_REQUESTS": "memory=lots"}, "NBD_NOTEBOOK_REQUESTS='memory=lots': write"),
        (
            {"NBD_BUILD_REQUESTS": "memory=16Gi"},
            "NBD_BUILD_REQUESTS asks memory=16Gi, over NBD_BUILD_LIMITS memory=8Gi: a request must not exceed its limit",
        ),
        (
            {"NBD_NOTEBOOK_REQUESTS": "cpu=1500m", "NBD_NOTEBOOK_LIMITS": "cpu=1"},
            "NBD_NOTEBOOK_REQUESTS asks cpu=1500m, over NBD_NOTEBOOK_LIMITS cpu=1",
        ),
    ],
)
def test_container_resource_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_env({**BASE, **env})
    assert str(e.value).startswith(message)


def test_configured_resources_reach_the_pods_and_the_spec_wins_for_its_own() -> None:
    from nbd_controller.manifests import build_job, notebook_pod

    cfg = Config.from_env(
        {
            **BASE,
            "NBD_NOTEBOOK_REQUESTS": "cpu=1,memory=2Gi",
            "NBD_NOTEBOOK_LIMITS": "memory=4Gi",
            "NBD_BUILD_LIMITS": "none",
        }
    )
    md5 = "0" * 32
    notebook = {
        "metadata": {"name": "nb", "namespace": "t", "uid": "u"},
        "spec": {"resources": {"memory": "8Gi"}, "build": {"upload": {"md5": md5}}},
    }
    container = notebook_pod(cfg, notebook, "IMG")["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    job = build_job(cfg, notebook, md5, "IMG", "https://get")
    template = job["spec"]["template"]["spec"]
    assert template["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "5Gi"}
    }
    assert template["initContainers"][0]["resources"] == template["containers"][0]["resources"]


def test_placement_defaults() -> None:
    env = {
        "NBD_BUCKET": "bkt",
        "NBD_REGISTRY": "r",
        "NBD_DEFAULT_TOLERATIONS": '[{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]',
        "NBD_DEFAULT_NODE_SELECTOR": "cloud.google.com/gke-nodepool=gpu, team=ml",
        "NBD_DEFAULT_PRIORITY_CLASS": "notebooks",
        "NBD_AUTOSCALER": "present",
    }
    config = Config.from_env(env)
    assert config.default_tolerations == (
        {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
    )
    assert config.default_node_selector == {"cloud.google.com/gke-nodepool": "gpu", "team": "ml"}
    assert config.default_priority_class == "notebooks"
    assert config.autoscaler == "present"
    plain = Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r"})
    assert (plain.default_tolerations, plain.default_node_selector, plain.default_priority_class) == (
        (),
        {},
        None,
    )
    assert plain.autoscaler == "auto"


def test_idle_stop_defaults() -> None:
    plain = Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r"})
    assert (plain.idle_stop_after, plain.idle_check_seconds) == (0, 60.0)
    config = Config.from_env(
        {"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r", "NBD_IDLE_STOP_AFTER": "4h", "NBD_IDLE_CHECK_SECONDS": "30"}
    )
    assert (config.idle_stop_after, config.idle_check_seconds) == (4 * 3600, 30.0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NBD_DEFAULT_TOLERATIONS", "[{key: a}]", "NBD_DEFAULT_TOLERATIONS is not JSON"),
        ("NBD_DEFAULT_TOLERATIONS", '{"key": "a"}', "must be a JSON list"),
        (
            "NBD_DEFAULT_TOLERATIONS",
            '[{"key": "a", "operator": "Exists", "value": "b"}]',
            r"\[0\]: a toleration",
        ),
        ("NBD_DEFAULT_NODE_SELECTOR", "team", "item 'team': must look like key=value"),
        ("NBD_DEFAULT_NODE_SELECTOR", "a=b c", "is not a label value"),
        ("NBD_DEFAULT_PRIORITY_CLASS", "High", "is not a PriorityClass name"),
        ("NBD_AUTOSCALER", "karpenter", "choose one of auto, present, none"),
        ("NBD_IDLE_STOP_AFTER", "2 hours", "is not a duration"),
        ("NBD_IDLE_STOP_AFTER", "9999h", "out of range"),
        ("NBD_IDLE_CHECK_SECONDS", "0", "out of range"),
    ],
)
def test_bad_placement_defaults_are_refused_in_one_line(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        Config.from_env({"NBD_BUCKET": "bkt", "NBD_REGISTRY": "r", variable: value})
    assert variable in str(err.value) and "\n" not in str(err.value)
