"""Fixtures of the session tests: `notebook_factory` launches a notebook through the real daemon.

The helpers (`Notebook`, `wait_for`, ...) live in `sessions_support`, importable by the tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures_daemon import DaemonFactory  # noqa: E402
from fixtures_stack import LocalStack  # noqa: E402
from sessions_support import Notebook, make_project  # noqa: E402

NotebookFactory = Callable[..., Notebook]


@pytest.fixture
def notebook_factory(
    local_stack: LocalStack,
    stack_namespace: str,
    daemon_factory: DaemonFactory,
    tmp_path: Path,
    jupyter_image: str,
) -> Iterator[NotebookFactory]:
    """`notebook_factory(name="nb", files=3, build=False, launch=True)`: a launched Notebook.

    `build=False` runs a prebuilt Jupyter image (nothing uploaded or built); True builds the
    project's Dockerfile in the cluster (`sessions_support.DOCKERFILE`, or the Dockerfile text
    given as `build`).
    """
    made: list[Notebook] = []
    env = {"KUBECONFIG": local_stack.kubeconfig}

    def make(name: str = "nb", files: int = 3, build: bool | str = False, launch: bool = True) -> Notebook:
        directory = tmp_path / name
        make_project(directory, files, dockerfile=build)
        nb = Notebook(
            name=name,
            namespace=stack_namespace,
            directory=directory,
            stack=local_stack,
            daemon=daemon_factory(env=env),
            restart=lambda: daemon_factory(env=env),
        )
        made.append(nb)
        if launch:
            nb.launch(*(() if build else ("--image", jupyter_image)))
            nb.wait_sync("watching")
        return nb

    yield make
    for nb in made:
        if nb.daemon.proc.poll() is None:
            nb.nbctl("stop", nb.name, "--delete", check=False, timeout=60.0)
