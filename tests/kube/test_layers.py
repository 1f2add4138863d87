"""Layer contract: the cluster access layer and the forwards import no gRPC, no protos, nothing above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parents[2] / "daemon" / "nbd"

# package -> import prefixes it must never use
FORBIDDEN = {
    "kube": ("grpc", "nbdapi", "nbd.forward", "nbd.launch", "nbd.sync", "nbd.server", "nbd.servicers"),
    "forward": ("grpc", "nbdapi", "nbd.launch", "nbd.sync", "nbd.server", "nbd.servicers"),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_below(package: str) -> None:
    files = sorted((DAEMON / package).glob("*.py"))
    assert files, f"no modules found in {package}"
    violations = [
        f"{path.name} imports {name}"
        for path in files
        for name in sorted(imports_of(path))
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package])
    ]
    assert violations == []


def test_contract_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import grpc\nfrom nbd.forward import Forward\n")
    assert imports_of(bad) == {"grpc", "nbd.forward"}
