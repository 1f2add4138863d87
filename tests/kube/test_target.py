"""Kubeconfig resolution: paths, contexts, namespaces and the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbd.errors import FailedPrecondition, InvalidArgument
from nbd.kube import load_target, load_target_blocking, resolve_kubeconfig_path


def write_config(path: Path, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}},
            {"name": "c2", "cluster": {"server": "http://127.0.0.1:1"}},
        ],
        "users": [{"name": "u", "user": {"token": "t0k"}}],
        "contexts": [
            {"name": "prod", "context": {"cluster": "c1", "user": "u", "namespace": "ml"}},
            {"name": "dev", "context": {"cluster": "c2", "user": "u"}},
        ],
        "current-context": "prod",
    }
    config.update(overrides)
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("explicit", "env", "expected"),
    [
        ("/x/config", "/env/config", "/x/config"),
        (None, "/env/config", "/env/config"),
        (None, "/a:/b", "/a:/b"),
        (None, "", "~/.kube/config"),
        (None, None, "~/.kube/config"),
    ],
)
def test_resolve_kubeconfig_path(
    monkeypatch: pytest.MonkeyPatch, explicit: str | None, env: str | None, expected: str
) -> None:
    if env is None:
        monkeypatch.delenv("KUBECONFIG", raising=False)
    else:
        monkeypatch.setenv("KUBECONFIG", env)
    assert resolve_kubeconfig_path(explicit) == expected


def test_no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FailedPrecondition) as info:
        load_target_blocking(str(missing), None, None)
    assert info.value.reason == "NoKubeconfig"
    assert str(info.value) == f"no kubeconfig at {missing}; set KUBECONFIG or pass --kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(FailedPrecondition, match=f"no kubeconfig at {missing};"):
        load_target_blocking(None, None, None)
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FailedPrecondition, match="no kubeconfig at ~/.kube/config;"):
        load_target_blocking(None, None, None)


def test_current_context_and_its_namespace(tmp_path: Path) -> None:
    target = load_target_blocking(str(write_config(tmp_path / "k")), None, None)
    assert (target.context, target.namespace, target.host) == ("prod", "ml", "https://10.0.0.1:6443")
    assert target.configuration.verify_ssl is False
    assert target.configuration.api_key == {"BearerToken": "Bearer t0k"}


def test_explicit_context_and_namespace(tmp_path: Path) -> None:
    path = str(write_config(tmp_path / "k"))
    assert load_target_blocking(path, "dev", None).namespace == "default"
    target = load_target_blocking(path, "dev", "team")
    assert (target.context, target.namespace, target.host) == ("dev", "team", "http://127.0.0.1:1")


def test_kubeconfig_env_list_is_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_config(tmp_path / "a")
    second = write_config(
        tmp_path / "b",
        clusters=[{"name": "c3", "cluster": {"server": "http://127.0.0.1:3"}}],
        contexts=[{"name": "extra", "context": {"cluster": "c3", "user": "u"}}],
    )
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{first}:{second}")
    target = load_target_blocking(None, "extra", None)
    assert target.host == "http://127.0.0.1:3"


def test_unknown_context_lists_the_available_ones(tmp_path: Path) -> None:
    path = write_config(tmp_path / "k")
    with pytest.raises(InvalidArgument) as info:
        load_target_blocking(str(path), "staging", None)
    assert info.value.reason == "UnknownContext"
    assert (
        str(info.value) == f'context "staging" is not in the kubeconfig {path}; available contexts: prod, dev'
    )


def test_no_current_context(tmp_path: Path) -> None:
    path = write_config(tmp_path / "k", **{"current-context": ""})
    with pytest.raises(FailedPrecondition) as info:
        load_target_blocking(str(path), None, None)
    assert info.value.reason == "NoContext"
    assert "pass --context (available contexts: prod, dev)" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "clusters: [unclosed\n",
        "key: value: other\n",
        "\t- tabs\n",
    ],
)
def test_bad_yaml(tmp_path: Path, content: str) -> None:
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(InvalidArgument) as info:
        load_target_blocking(str(path), None, None)
    assert info.value.reason == "InvalidKubeconfig"
    assert str(info.value).startswith(f"the kubeconfig {path} is not valid YAML (")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "InvalidKubeconfig"),
        ("just a string\n", "InvalidKubeconfig"),
    ],
)
def test_empty_or_not_a_kubeconfig(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(InvalidArgument) as info:
        load_target_blocking(str(path), None, None)
    assert info.value.reason == reason
    assert str(path) in str(info.value)


def test_context_naming_a_missing_cluster(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "k", contexts=[{"name": "prod", "context": {"cluster": "ghost", "user": "u"}}]
    )
    with pytest.raises(InvalidArgument) as info:
        load_target_blocking(str(path), None, None)
    assert info.value.reason == "InvalidKubeconfig"
    assert 'for context "prod"' in str(info.value)


def test_client_certificate_and_ca_files(tmp_path: Path) -> None:
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("x")
    path = write_config(
        tmp_path / "k",
        clusters=[
            {
                "name": "c1",
                "cluster": {
                    "server": "https://h:6443",
                    "certificate-authority": "ca.crt",
                    "tls-server-name": "api.local",
                },
            }
        ],
        users=[{"name": "u", "user": {"client-certificate": "client.crt", "client-key": "client.key"}}],
    )
    cfg = load_target_blocking(str(path), None, None).configuration
    assert cfg.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert cfg.cert_file == str(tmp_path / "client.crt")
    assert cfg.key_file == str(tmp_path / "client.key")
    assert cfg.tls_server_name == "api.local"


@pytest.mark.anyio
async def test_load_target_runs_in_a_thread(tmp_path: Path) -> None:
    target = await load_target(str(write_config(tmp_path / "k")), "dev", None)
    assert target.context == "dev"
