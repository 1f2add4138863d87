"""notebook.yaml's and the flags' volume fields: spec.workspace, spec.resources.shm, spec.volumes,
checked with the contract's rules before anything is packaged."""

from __future__ import annotations

from typing import Any

import pytest

from nbd.errors import InvalidArgument
from nbd.launch.spec import merge_spec, parse_notebook_file, session_spec
from nbd.runs.model import run_manifest
from nbd.session import NotebookSpec


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("workspace: {size: 50Gi}", {"workspace": {"size": "50Gi"}}),
        ("workspace: 10Gi", {"workspace": {"size": "10Gi"}}),
        (
            "workspace: {size: 1Ti, storageClass: premium-rwo}",
            {"workspace": {"size": "1Ti", "storageClass": "premium-rwo"}},
        ),
        ("resources: {shm: 8Gi}", {"resources": {"shm": "8Gi"}}),
        ("resources: {shm: 0}", {"resources": {"shm": "0"}}),
        (
            "volumes: [{claim: imagenet, mountPath: /data, readOnly: true}]",
            {"volumes": [{"claim": "imagenet", "mountPath": "/data", "readOnly": True}]},
        ),
    ],
)
def test_good_fields(text: str, spec: dict[str, Any]) -> None:
    assert parse_notebook_file(text, "notebook.yaml") == spec


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("workspace: {storageClass: x}", "workspace.size is required"),
        ("workspace: {size: big}", "must be a size like 50Gi"),
        ("workspace: {size: 0}", "larger than 0"),
        ("workspace: {size: 1Gi, storageClass: Bad_Class}", "storageClass 'Bad_Class' is not a valid name"),
        ("workspace: {size: 1Gi, mode: rw}", "workspace must be a mapping"),
        ("resources: {shm: -1}", "resources.shm must be a size"),
        ("volumes: {claim: a}", "volumes must be a list"),
        ("volumes: [{claim: a, mountPath: data}]", "mountPath must be an absolute path"),
        ("volumes: [{claim: a, mountPath: /content}]", "overlaps the working directory"),
        ("volumes: [{claim: a, mountPath: /content/d}]", "overlaps the working directory"),
        ("{workdir: /w, volumes: [{claim: a, mountPath: /w/x}]}", "overlaps the working directory /w"),
        ("volumes: [{claim: a, mountPath: /dev/shm}]", "overlaps /dev/shm"),
        (
            "volumes: [{claim: a, mountPath: /data}, {claim: b, mountPath: /data}]",
            "overlaps another volume's /data",
        ),
        ("volumes: [{claim: A_B, mountPath: /data}]", "claim 'A_B' is not a valid name"),
        ("volumes: [{claim: a, mountPath: /data, readOnly: yes please}]", "readOnly must be true or false"),
        ("volumes: [{claim: a, mountPath: /data, size: 1Gi}]", "unknown field(s) size"),
    ],
)
def test_bad_fields_are_one_line_errors(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_notebook_file(text, "notebook.yaml")
    assert words in e.value.message and "\n" not in e.value.message


def test_flags_over_the_file() -> None:
    file_spec = parse_notebook_file("workspace: {size: 10Gi, storageClass: fast}", "notebook.yaml")
    spec = merge_spec(file_spec, NotebookSpec(workspace_size="20Gi", shm="2Gi"))
    assert spec["workspace"] == {"size": "20Gi", "storageClass": "fast"}
    assert spec["resources"] == {"shm": "2Gi"}
    recorded = session_spec(spec)
    assert (recorded.workspace_size, recorded.workspace_storage_class, recorded.shm) == (
        "20Gi",
        "fast",
        "2Gi",
    )
    assert merge_spec({}, NotebookSpec(workspace_size="5Gi", workspace_storage_class="slow"))[
        "workspace"
    ] == {
        "size": "5Gi",
        "storageClass": "slow",
    }
    # The workdir flag moves the working directory under a data volume: refused.
    volumes = parse_notebook_file("volumes: [{claim: a, mountPath: /data}]", "notebook.yaml")
    with pytest.raises(InvalidArgument, match="overlaps the working directory /data/w"):
        merge_spec(volumes, NotebookSpec(workdir="/data/w"))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (NotebookSpec(shm="lots"), "--shm must be a size"),
        (NotebookSpec(workspace_size="0"), "larger than 0"),
        (NotebookSpec(workspace_storage_class="fast"), "pass --workspace-size too"),
        (NotebookSpec(workspace_size="1Gi", workspace_storage_class="UPPER"), "is not a valid name"),
    ],
)
def test_bad_flags(overrides: NotebookSpec, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        merge_spec({}, overrides)
    assert words in e.value.message


def test_a_run_gets_shm_and_data_volumes_but_not_the_notebooks_workspace() -> None:
    spec = {
        "workspace": {"size": "1Gi"},
        "resources": {"shm": "1Gi"},
        "volumes": [{"claim": "a", "mountPath": "/data", "readOnly": False}],
    }
    body = run_manifest("r", "ns", spec, ["python"], 1)["spec"]
    assert "workspace" not in body and body["resources"] == {"shm": "1Gi"} and body["volumes"]


@pytest.mark.parametrize(
    ("reason", "ends"),
    [
        ("ClaimMissing", True),
        ("WorkspacePending", True),
        ("WorkspaceSizeUnchangeable", True),
        ("WorkspaceDeleting", False),
        ("Starting", False),
    ],
)
def test_claim_reasons_end_the_launch_with_the_controllers_message(reason: str, ends: bool) -> None:
    from nbd.launch import progress as prog

    ready = {
        "type": "Ready",
        "status": "False",
        "reason": reason,
        "message": "PersistentVolumeClaim data ...",
    }
    notebook = {"metadata": {"name": "n"}, "status": {"conditions": [ready]}}
    failure = prog.start_failure(notebook, None)
    assert (failure is not None) is ends
    if failure is not None:
        assert (failure.reason, failure.message) == (reason, "PersistentVolumeClaim data ...")


def test_the_workspace_kept_reason_is_the_same_on_both_sides() -> None:
    from nbd.launch.notebooks import REASON_WORKSPACE_KEPT as daemon_side
    from nbdclient.errors import REASON_WORKSPACE_KEPT as client_side

    assert daemon_side == client_side
