"""Table tests of the launch's pure spec rules: names, notebook.yaml, overrides, manifest."""

from __future__ import annotations

from typing import Any

import pytest

from nbd.errors import InvalidArgument
from nbd.launch.spec import (
    NotebookFileError,
    merge_spec,
    notebook_manifest,
    notebook_name_for,
    parse_notebook_file,
    sync_max_file_size,
    validate_name,
)
from nbd.session import NotebookSpec


@pytest.mark.parametrize(
    ("directory", "name"),
    [
        ("hello", "hello"),
        ("My Project_2", "my-project-2"),
        ("--weird--", "weird"),
        ("ümlaut", "mlaut"),
        ("...", "notebook"),
        ("a" * 80, "a" * 63),
        ("x" * 62 + "-y", "x" * 62),
        ("data.v2", "data-v2"),
    ],
)
def test_name_from_directory_is_dns_safe(directory: str, name: str) -> None:
    assert notebook_name_for(directory) == name
    assert validate_name(notebook_name_for(directory)) == name


@pytest.mark.parametrize("bad", ["", "Upper", "-lead", "trail-", "a_b", "a" * 64])
def test_explicit_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid notebook name"):
        validate_name(bad)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("", {}),
        ("image: python:3.11\n", {"image": "python:3.11"}),
        ("resources: {gpu: 2}\n", {"resources": {"gpu": {"count": 2}}}),
        (
            "resources: {gpu: {count: 1, type: nvidia-l4}, cpu: 4, memory: 8Gi}\n",
            {"resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "4", "memory": "8Gi"}},
        ),
        ("env: {A: 1, B: x}\n", {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "x"}]}),
        ("env: [{name: A, value: v}]\n", {"env": [{"name": "A", "value": "v"}]}),
        ("command: jupyter lab\n", {"command": ["sh", "-c", "jupyter lab"]}),
        (
            "command: [python3, app.py]\nport: 9000\nworkdir: /work\n",
            {"command": ["python3", "app.py"], "port": 9000, "workdir": "/work"},
        ),
        (
            "apiVersion: nbd.dev/v1alpha1\nkind: Notebook\nspec: {image: busybox}\n",
            {"image": "busybox"},
        ),
        (
            "tolerations:\n- {key: dedicated, operator: Equal, value: ml, effect: NoSchedule}\n"
            "- {key: spot, operator: Exists}\n- {operator: Exists}\n"
            "- {key: n, operator: Exists, effect: NoExecute, tolerationSeconds: 60}\n"
            "nodeSelector: {cloud.google.com/gke-nodepool: gpu, team: ''}\npriorityClassName: high\n",
            {
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                    {"key": "spot", "operator": "Exists"},
                    {"operator": "Exists"},
                    {"key": "n", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
                ],
                "nodeSelector": {"cloud.google.com/gke-nodepool": "gpu", "team": ""},
                "priorityClassName": "high",
            },
        ),
    ],
)
def test_notebook_file_parses(text: str, spec: dict[str, Any]) -> None:
    assert parse_notebook_file(text, "notebook.yaml") == spec


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("image: busybox\n", 100 << 20),
        ("sync: {}\n", 100 << 20),
        ("sync: {maxFileSize: 100Mi}\n", 100 << 20),
        ("sync: {maxFileSize: 1.5Gi}\n", 3 << 29),
        ("sync: {maxFileSize: 2G}\n", 2_000_000_000),
        ("sync: {maxFileSize: 500k}\n", 500_000),
        ("sync: {maxFileSize: 4096}\n", 4096),
        ("sync: {maxFileSize: '4096'}\n", 4096),
        ("sync: {maxFileSize: 0}\n", 0),
    ],
)
def test_sync_max_file_size(text: str, size: int) -> None:
    spec = parse_notebook_file(text, "notebook.yaml")
    assert sync_max_file_size(spec) == size
    # A setting of the local sync only: never part of the Notebook sent to the cluster.
    assert "sync" not in notebook_manifest("n", "ns", spec)["spec"]


@pytest.mark.parametrize(
    "text",
    [
        "sync: {maxFileSize: 100MB}\n",
        "sync: {maxFileSize: -1}\n",
        "sync: {maxFileSize: lots}\n",
        "sync: {maxFileSize: 1.5}\n",
        "sync: {maxFileSize: true}\n",
        "sync: {maxFileSize: [1]}\n",
    ],
)
def test_bad_sync_max_file_size_is_one_line_naming_the_field_and_an_example(text: str) -> None:
    with pytest.raises(NotebookFileError) as err:
        parse_notebook_file(text, "notebook.yaml")
    message = str(err.value)
    assert message.startswith(
        "notebook.yaml: sync.maxFileSize must be a size in bytes or a quantity like 100Mi"
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sync: 100Mi\n", "sync must be a mapping, for example sync: {maxFileSize: 100Mi}"),
        ("sync: {maxSize: 1}\n", r"unknown sync field\(s\) maxSize; allowed: maxFileSize"),
    ],
)
def test_bad_sync_section(text: str, message: str) -> None:
    with pytest.raises(NotebookFileError, match=message):
        parse_notebook_file(text, "notebook.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]\n", "must be a mapping"),
        ("image: [\n", "not valid YAML"),
        ("gpus: 2\n", "unknown field"),
        ("port: 0\n", "between 1 and 65535"),
        ("port: true\n", "between 1 and 65535"),
        ("workdir: content\n", "absolute path"),
        ("resources: {gpu: -1}\n", "≥ 0"),
        ("resources: {gpus: 1}\n", "unknown resources field"),
        ("env: {'1BAD': x}\n", "invalid environment variable name"),
        ("env: [x]\n", "env entries"),
        ("command: []\n", "non-empty list"),
        ("apiVersion: v1\nkind: Pod\n", "expected apiVersion nbd.dev/v1alpha1"),
        ("tolerations: {key: a}\n", "tolerations must be a list"),
        ("tolerations: [a]\n", r"tolerations\[0\]: a toleration must be a mapping"),
        ("tolerations: [{key: a, op: Exists}]\n", r"unknown toleration field\(s\) op"),
        ("tolerations: [{key: a, operator: In}]\n", "operator 'In' must be one of Exists, Equal"),
        ("tolerations: [{value: x}]\n", "without a key must have operator Exists"),
        ("tolerations: [{key: a, operator: Exists, value: x}]\n", "operator Exists takes no value"),
        ("tolerations: [{key: 'bad key'}]\n", "is not a label key"),
        ("tolerations: [{key: a, value: 'not ok'}]\n", "is not a label value"),
        ("tolerations: [{key: a, effect: Never}]\n", "effect 'Never' must be one of"),
        ("tolerations: [{key: a, tolerationSeconds: 5}]\n", "only applies to effect NoExecute"),
        ("nodeSelector: [a]\n", "nodeSelector must be a mapping"),
        ("nodeSelector: {a: 1}\n", "must be a string"),
        ("nodeSelector: {'-a': b}\n", "is not a label key"),
        ("nodeSelector: {a: 'b c'}\n", "is not a label value"),
        ("priorityClassName: High\n", "is not a PriorityClass name"),
        ("priorityClassName: 3\n", "is not a PriorityClass name"),
    ],
)
def test_bad_notebook_file_names_the_file_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(NotebookFileError, match=message) as err:
        parse_notebook_file(text, "notebook.yaml")
    assert "notebook.yaml" in str(err.value) or "YAML" in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_win_and_env_merges_by_name() -> None:
    base = parse_notebook_file(
        "resources: {gpu: {count: 1, type: t4}, cpu: 2}\nenv: {A: file, B: file}\n", "f"
    )
    merged = merge_spec(
        base, NotebookSpec(gpu_count=2, memory="4Gi", env={"B": "flag", "C": "flag"}, image="img")
    )
    assert merged == {
        "image": "img",
        "resources": {"gpu": {"count": 2, "type": "t4"}, "cpu": "2", "memory": "4Gi"},
        "env": [
            {"name": "A", "value": "file"},
            {"name": "B", "value": "flag"},
            {"name": "C", "value": "flag"},
        ],
    }
    assert base["resources"]["gpu"]["count"] == 1, "the file's spec is not mutated"


def test_manifest_shape() -> None:
    m = notebook_manifest("hello", "team", {"port": 8888}, directory="/home/u/hello")
    assert m == {
        "apiVersion": "nbd.dev/v1alpha1",
        "kind": "Notebook",
        "metadata": {
            "name": "hello",
            "namespace": "team",
            "labels": {"app.kubernetes.io/managed-by": "nbd"},
            "annotations": {"nbd.dev/local-directory": "/home/u/hello"},
        },
        "spec": {"port": 8888, "suspend": False},
    }
