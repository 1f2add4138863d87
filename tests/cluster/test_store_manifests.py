"""The manifests of the in-cluster store agree with the controller's configuration and code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from nbd_controller.config import DEFAULT_STORE_SERVICE, Config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "cluster" / "manifests"


def _docs(name: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def test_the_kustomization_configures_a_valid_incluster_store() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "store.yaml" in kustomization["resources"]
    literals = dict(line.split("=", 1) for line in kustomization["configMapGenerator"][0]["literals"])
    config = Config.from_env(literals)
    assert config.store == "incluster" and config.bucket == ""
    assert config.store_service == DEFAULT_STORE_SERVICE


def test_the_store_service_reaches_the_controllers_port_and_volume() -> None:
    service = next(d for d in _docs("store.yaml") if d["kind"] == "Service")
    claim = next(d for d in _docs("store.yaml") if d["kind"] == "PersistentVolumeClaim")
    deployment = _docs("deployment.yaml")[0]
    namespace, _, name_port = DEFAULT_STORE_SERVICE.partition("/")
    name, _, port_name = name_port.partition(":")
    assert (service["metadata"]["namespace"], service["metadata"]["name"]) == (namespace, name)
    assert service["spec"]["type"] == "ClusterIP"
    port = next(p for p in service["spec"]["ports"] if p["name"] == port_name)
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    container = template["spec"]["containers"][0]
    assert {"name": port["targetPort"], "containerPort": 10250} in container["ports"]
    assert Config.from_env({"NBD_STORE": "incluster", "NBD_REGISTRY": "r"}).store_listen.endswith(":10250")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "store")
    assert mount["mountPath"] == Config.from_env({"NBD_STORE": "incluster", "NBD_REGISTRY": "r"}).store_dir
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "store")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # a ReadWriteOnce claim
    assert template["spec"]["securityContext"]["fsGroup"] == template["spec"]["securityContext"]["runAsGroup"]


def test_the_upload_role_allows_exactly_the_proxy_of_the_one_service_port() -> None:
    docs = _docs("rbac-user.yaml")
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "nbd-store-upload")
    namespace, _, name_port = DEFAULT_STORE_SERVICE.partition("/")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["services/proxy"],
            "resourceNames": [name_port],
            "verbs": ["get", "update"],
        }
    ]
    binding = next(
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "nbd-store-upload"
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "nbd-store-upload",
    }


@pytest.mark.parametrize("module", ["collecting", "urlsigning"])
def test_the_stores_rules_are_pure(module: str) -> None:
    tree = ast.parse((ROOT / "cluster" / "nbd_controller" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"os", "socket", "threading", "asyncio", "http", "kubernetes", "boto3", "google"}
