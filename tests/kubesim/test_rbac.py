"""RBAC authorization and OwnerReferencesPermissionEnforcement in kubesim, as a hardened cluster
answers: the rule matching by table, then through the API with the official client as users and
service accounts that hold only what their bindings give."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubesim import rbac
from kubesim.auth import User
from kubesim.testing import KubesimServer

BOT = "system:serviceaccount:ops:bot"


def rule(
    verbs: list[str], resources: list[str], groups: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "verbs": verbs,
        "apiGroups": groups if groups is not None else [""],
        "resources": resources,
        **extra,
    }


def objects(
    rules: list[dict[str, Any]], *, kind: str = "ClusterRoleBinding", subject: dict[str, Any] | None = None
) -> rbac.Objects:
    subject = subject or {"kind": "User", "name": "alice"}
    role = {"metadata": {"name": "r"}, "rules": rules}
    objs = rbac.Objects(cluster_roles={"r": role}, roles={("team", "r"): role})
    ref = {"kind": "ClusterRole" if kind != "RoleBinding-Role" else "Role", "name": "r"}
    binding = {"metadata": {"name": "b", "namespace": "team"}, "roleRef": ref, "subjects": [subject]}
    if kind == "ClusterRoleBinding":
        objs.cluster_role_bindings.append(binding)
    else:
        objs.role_bindings.append(binding)
    return objs


ALICE = User("alice", ("devs", "system:authenticated"))
A = rbac.Attributes


@pytest.mark.parametrize(
    ("objs", "attrs", "allowed"),
    [
        (objects([rule(["get"], ["pods"])]), A("get", "", "pods", "team", "p"), True),
        (objects([rule(["get"], ["pods"])]), A("list", "", "pods", "team"), False),
        (objects([rule(["*"], ["pods"])]), A("delete", "", "pods", "x", "p"), True),
        (objects([rule(["get"], ["pods"])]), A("get", "batch", "pods", "team", "p"), False),
        (objects([rule(["get"], ["*"], ["*"])]), A("get", "batch", "jobs", "team", "j"), True),
        # a subresource is its own resource name
        (objects([rule(["get"], ["pods"])]), A("get", "", "pods", "team", "p", "log"), False),
        (objects([rule(["get"], ["pods/log"])]), A("get", "", "pods", "team", "p", "log"), True),
        (
            objects([rule(["update"], ["*/finalizers"], ["nbd.dev"])]),
            A("update", "nbd.dev", "notebooks", "t", "n", "finalizers"),
            True,
        ),
        # resourceNames: only requests naming one of them
        (
            objects([rule(["get"], ["services"], resourceNames=["store"])]),
            A("get", "", "services", "team", "store"),
            True,
        ),
        (
            objects([rule(["get"], ["services"], resourceNames=["store"])]),
            A("get", "", "services", "team", "other"),
            False,
        ),
        (
            objects([rule(["list"], ["services"], resourceNames=["store"])]),
            A("list", "", "services", "team"),
            False,
        ),
        # a RoleBinding grants only in its namespace, whether it refers to a Role or a ClusterRole
        (objects([rule(["get"], ["pods"])], kind="RoleBinding"), A("get", "", "pods", "team", "p"), True),
        (objects([rule(["get"], ["pods"])], kind="RoleBinding"), A("get", "", "pods", "other", "p"), False),
        (objects([rule(["get"], ["pods"])], kind="RoleBinding"), A("get", "", "pods", None, None), False),
        (
            objects([rule(["get"], ["pods"])], kind="RoleBinding-Role"),
            A("get", "", "pods", "team", "p"),
            True,
        ),
        # subjects: users, groups, service accounts (namespace defaults to the binding's)
        (
            objects([rule(["get"], ["pods"])], subject={"kind": "User", "name": "bob"}),
            A("get", "", "pods", "team", "p"),
            False,
        ),
        (
            objects([rule(["get"], ["pods"])], subject={"kind": "Group", "name": "devs"}),
            A("get", "", "pods", "team", "p"),
            True,
        ),
    ],
)
def test_rules_match_as_the_rbac_authorizer_does(
    objs: rbac.Objects, attrs: rbac.Attributes, allowed: bool
) -> None:
    assert rbac.allows(objs, ALICE, attrs) is allowed


@pytest.mark.parametrize(
    ("subject", "user", "allowed"),
    [
        ({"kind": "ServiceAccount", "name": "bot"}, "system:serviceaccount:team:bot", True),
        (
            {"kind": "ServiceAccount", "name": "bot", "namespace": "ops"},
            "system:serviceaccount:ops:bot",
            True,
        ),
        ({"kind": "ServiceAccount", "name": "bot"}, "system:serviceaccount:ops:bot", False),
        ({"kind": "Group", "name": "system:serviceaccounts:team"}, "system:serviceaccount:team:x", True),
        ({"kind": "Group", "name": "system:serviceaccounts"}, "alice", False),
    ],
)
def test_service_account_subjects(subject: dict[str, Any], user: str, allowed: bool) -> None:
    objs = objects([rule(["get"], ["pods"])], kind="RoleBinding", subject=subject)
    who = User(user, rbac.service_account_groups(user) + ("system:authenticated",))
    assert rbac.allows(objs, who, A("get", "", "pods", "team", "p")) is allowed


@pytest.fixture
def strict(kubesim_factory: Any) -> KubesimServer:
    return kubesim_factory(
        tls=True,
        kubelet=False,
        extra_tokens={"bot-token": BOT},
        extra_args=["--rbac", "--enforce-owner-references"],
    )


def as_user(server: KubesimServer, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = server.url
    cfg.ssl_ca_cert = str(server.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def grant(admin: client.ApiClient, name: str, rules: list[dict[str, Any]], namespace: str = "ops") -> None:
    rbac_api = client.RbacAuthorizationV1Api(admin)
    rbac_api.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac_api.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "ops"}],
        },
    )


def forbidden(call: Any) -> str:
    with pytest.raises(ApiException) as e:
        call()
    assert e.value.status == 403, e.value.body
    import json

    return str(json.loads(e.value.body)["message"])


def test_a_service_account_holds_only_what_its_bindings_give(strict: KubesimServer) -> None:
    admin = strict.api_client()
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": "ops"}})
    bot = client.CoreV1Api(as_user(strict, "bot-token"))
    assert forbidden(lambda: bot.list_namespaced_pod("ops")) == (
        f'pods is forbidden: User "{BOT}" cannot list resource "pods" in API group "" in the namespace "ops"'
    )
    assert forbidden(lambda: bot.list_node()) == (
        f'nodes is forbidden: User "{BOT}" cannot list resource "nodes" in API group "" at the cluster scope'
    )
    grant(admin, "reader", [rule(["list"], ["pods"])])
    assert bot.list_namespaced_pod("ops").items == []
    forbidden(lambda: bot.list_namespaced_pod("default"))  # a Role grants only in its namespace

    # The access review answers by the same rules (what `kubectl auth can-i` asks).
    authz = client.AuthorizationV1Api(as_user(strict, "bot-token"))

    def can(verb: str, resource: str, namespace: str) -> bool:
        review = authz.create_self_subject_access_review(
            {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}}}
        )
        return bool(review.status.allowed)

    assert can("list", "pods", "ops") and not can("delete", "pods", "ops")


def test_block_owner_deletion_needs_update_on_the_owners_finalizers(strict: KubesimServer) -> None:
    admin = strict.api_client()
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "ops"}})
    owner = core.create_namespaced_config_map("ops", {"metadata": {"name": "owner"}})
    grant(admin, "writer", [rule(["create", "get", "update"], ["secrets"])])
    bot = client.CoreV1Api(as_user(strict, "bot-token"))
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }

    def secret(name: str, **ref_changes: Any) -> dict[str, Any]:
        return {"metadata": {"name": name, "ownerReferences": [{**ref, **ref_changes}]}}

    assert forbidden(lambda: bot.create_namespaced_secret("ops", secret("s"))) == (
        'secrets "s" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a '
        "resource you can't set finalizers on: , <nil>"
    )
    # Without blockOwnerDeletion the same create is fine: creating needs no delete permission.
    bot.create_namespaced_secret("ops", secret("plain", blockOwnerDeletion=False))
    # Changing the owner references of an existing object needs delete on it.
    assert forbidden(
        lambda: bot.replace_namespaced_secret(
            "plain", "ops", secret("plain", controller=False, blockOwnerDeletion=False)
        )
    ) == ('secrets "plain" is forbidden: cannot set an ownerRef on a resource you can\'t delete: , <nil>')
    grant(admin, "finalizers", [rule(["update"], ["configmaps/finalizers"])])
    created = bot.create_namespaced_secret("ops", secret("s"))
    assert created.metadata.owner_references[0].block_owner_deletion is True
    # The admin (system:masters) is never refused.
    core.create_namespaced_secret("ops", secret("by-admin"))


def test_rbac_without_tls_is_refused_at_start(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubesim", "serve", "--rbac", "--state-dir", str(tmp_path), "--no-kubelet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kubesim: --rbac needs --tls (kubectl sends no credentials over plain HTTP); add --tls"
    )
