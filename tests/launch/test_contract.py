"""The daemon's spec rules are the CRD's: one contract (`nbdcontract`), checked from both sides.

Each case goes through the daemon's pure spec layer (notebook.yaml and command-line overrides) and
through the CRD's schema as the API server applies it (kubesim's structural-schema validation of
`notebook_crd()`); both must accept it or both must refuse it, so nothing the daemon packages and
uploads is refused by the cluster afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import nbdcontract
from kubesim import schema as crd_schema
from nbd.errors import InvalidArgument
from nbd.launch.spec import merge_spec, notebook_manifest, parse_notebook_file
from nbd.session import NotebookSpec
from nbd_controller.crd import notebook_crd


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("A", True),
        ("_private", True),
        ("PATH", True),
        ("cuda_visible_devices2", True),
        ("A" * nbdcontract.ENV_NAME_MAX, True),
        ("A.B", False),
        ("A-B", False),
        ("1A", False),
        ("", False),
        ("A B", False),
        ("A\n", False),
        ("É", False),
        ("A" * (nbdcontract.ENV_NAME_MAX + 1), False),
    ],
)
def test_env_name_rule(name: str, valid: bool) -> None:
    assert nbdcontract.valid_env_name(name) is valid


def _crd_spec_schema() -> dict[str, Any]:
    version = notebook_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_the_crd_publishes_the_contracts_own_patterns_and_bounds() -> None:
    spec = _crd_spec_schema()["properties"]["spec"]["properties"]
    env_name = spec["env"]["items"]["properties"]["name"]
    assert env_name["pattern"] is nbdcontract.ENV_NAME.pattern
    assert env_name["maxLength"] == nbdcontract.ENV_NAME_MAX
    gpu = spec["resources"]["properties"]["gpu"]["properties"]
    assert (gpu["count"]["minimum"], gpu["count"]["maximum"]) == (0, nbdcontract.GPU_COUNT_MAX)
    assert gpu["count"]["default"] == nbdcontract.GPU_COUNT_DEFAULT
    assert gpu["type"]["maxLength"] == nbdcontract.GPU_TYPE_MAX
    assert (spec["port"]["minimum"], spec["port"]["maximum"]) == (nbdcontract.PORT_MIN, nbdcontract.PORT_MAX)
    assert spec["port"]["default"] == nbdcontract.DEFAULT_PORT
    assert spec["workdir"]["default"] == nbdcontract.DEFAULT_WORKDIR
    assert spec["workdir"]["pattern"] is nbdcontract.WORKDIR.pattern
    upload = spec["build"]["properties"]["upload"]["properties"]
    assert upload["md5"]["pattern"] is nbdcontract.MD5.pattern


def _cluster_accepts(spec: dict[str, Any]) -> bool:
    manifest = notebook_manifest("nb", "team", spec)
    schema = _crd_spec_schema()
    causes: list[dict[str, str]] = []
    crd_schema.validate(crd_schema.apply_defaults(manifest, schema), schema, "", causes)
    return not causes


def _file_accepts(spec: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return parse_notebook_file(yaml.safe_dump(spec), "notebook.yaml")
    except InvalidArgument:
        return None


def _flags_accept(overrides: NotebookSpec) -> dict[str, Any] | None:
    try:
        return merge_spec({}, overrides)
    except InvalidArgument:
        return None


ENV_NAMES = ["A", "_x", "A1_B", "A.B", "A-B", "1A", "A B", "A" * 256, "A" * 257]
GPU_COUNTS = [0, 1, 64, 65, -1]
GPU_TYPES = ["nvidia-l4", "t" * 63, "t" * 64]
PORTS = [1, 8888, 65535, 0, 65536]
WORKDIRS = ["/content", "/", "content", "./x"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_names_the_daemon_accepts_are_those_the_cluster_accepts(name: str) -> None:
    from_file = _file_accepts({"env": [{"name": name, "value": "v"}]})
    from_flags = _flags_accept(NotebookSpec(env={name: "v"}))
    cluster = _cluster_accepts({"env": [{"name": name, "value": "v"}]})
    assert (from_file is not None, from_flags is not None) == (cluster, cluster), (name, cluster)


@pytest.mark.parametrize("count", GPU_COUNTS)
def test_gpu_counts_agree(count: int) -> None:
    from_file = _file_accepts({"resources": {"gpu": {"count": count}}})
    from_flags = _flags_accept(NotebookSpec(gpu_count=count))
    cluster = _cluster_accepts({"resources": {"gpu": {"count": count}}})
    assert (from_file is not None, from_flags is not None) == (cluster, cluster), (count, cluster)


@pytest.mark.parametrize("product", GPU_TYPES)
def test_gpu_types_agree(product: str) -> None:
    from_file = _file_accepts({"resources": {"gpu": {"count": 1, "type": product}}})
    from_flags = _flags_accept(NotebookSpec(gpu_type=product))
    cluster = _cluster_accepts({"resources": {"gpu": {"count": 1, "type": product}}})
    assert (from_file is not None, from_flags is not None) == (cluster, cluster), (len(product), cluster)


@pytest.mark.parametrize("port", PORTS)
def test_ports_agree(port: int) -> None:
    from_file = _file_accepts({"port": port})
    from_flags = _flags_accept(NotebookSpec(port=port))
    cluster = _cluster_accepts({"port": port})
    assert (from_file is not None, from_flags is not None) == (cluster, cluster), (port, cluster)


@pytest.mark.parametrize("workdir", WORKDIRS)
def test_workdirs_agree(workdir: str) -> None:
    from_file = _file_accepts({"workdir": workdir})
    from_flags = _flags_accept(NotebookSpec(workdir=workdir))
    cluster = _cluster_accepts({"workdir": workdir})
    assert (from_file is not None, from_flags is not None) == (cluster, cluster), (workdir, cluster)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            NotebookSpec(env={"A.B": "1"}),
            "invalid environment variable name 'A.B': use letters, digits and '_'",
        ),
        (NotebookSpec(gpu_count=65), "--gpus must be a whole number ≥ 0 and ≤ 64, got 65"),
        (NotebookSpec(gpu_type="t" * 64), "--gpu-type must be at most 63 characters, got 64"),
    ],
)
def test_refusals_say_what_the_rule_is(overrides: NotebookSpec, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        merge_spec({}, overrides)
    assert message in str(err.value)
