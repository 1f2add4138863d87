"""The layer cache in the registry, on kubesim with its kubelet and the controller as a process: a
second build of a context where only a notebook changed re-runs no RUN step (its log says CACHED),
with either builder; with the cache off (NBD_BUILD_CACHE=false) every step runs again."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from controller_stack import Controller, Notebooks, tarball, wait_for
from test_full_path import cluster, needs_jobs, upload_and_mark

__all__ = ["cluster"]


def _build_log(nb: Notebooks, name: str, md5: str) -> list[str]:
    wait_for(
        f"the build of {name}",
        lambda: (c := nb.condition(name, "Built")) and c["status"] == "True" and c,
        timeout=120,
    )
    pods = nb.core.list_namespaced_pod("default", label_selector=f"nbd.dev/context-md5={md5}").items
    text: str = nb.core.read_namespaced_pod_log(pods[-1].metadata.name, "default", container="build")
    return text.splitlines()


def _ran(lines: list[str], token: str) -> bool:
    """Whether the RUN printed its line (BuildKit: `#N 0.012 installing-…`; kaniko: the bare line)."""
    printed = f"installing-{token}"
    return any(line == printed or re.fullmatch(rf"#\d+ \d+\.\d{{3}} {printed}", line) for line in lines)


def _context(token: str, notebook: str) -> bytes:
    dockerfile = (
        "FROM python:3.12\nWORKDIR /content\nCOPY requirements.txt /tmp/requirements.txt\n"
        f"RUN echo installing-{token}\nCOPY . /content\n"
    )
    return tarball({"Dockerfile": dockerfile, "requirements.txt": "humanize\n", "nb.ipynb": notebook})


@needs_jobs
@pytest.mark.parametrize("cluster", ["buildkit", "kaniko"], indirect=True)
def test_a_notebook_edit_rebuilds_with_every_run_step_cached(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    kaniko = cluster["controller"].env["NBD_BUILDER"] == "kaniko"
    token = uuid.uuid4().hex  # a RUN no earlier build made
    first_md5 = upload_and_mark(nb, "first", _context(token, "{}"))
    first = _build_log(nb, "first", first_md5)
    assert _ran(first, token)

    second_md5 = upload_and_mark(nb, "second", _context(token, '{"cells": []}'))
    assert second_md5 != first_md5
    second = _build_log(nb, "second", second_md5)
    assert not _ran(second, token), "a cached RUN does not run"
    if kaniko:
        assert any(
            line.endswith(f"Using caching version of cmd: RUN echo installing-{token}") for line in second
        )
    else:
        # BuildKit's plain progress: the step's header, then `#N CACHED`.
        step = next(i for i, line in enumerate(second) if line.endswith(f"RUN echo installing-{token}"))
        assert second[step + 1].endswith(" CACHED"), second[step : step + 3]
        print("\n".join(second))


@needs_jobs
def test_with_the_cache_off_every_step_runs_again(cluster: dict[str, Any]) -> None:
    nb: Notebooks = cluster["nb"]
    controller: Controller = cluster["controller"]
    controller.stop()
    controller.env["NBD_BUILD_CACHE"] = "false"
    controller.start()
    token = uuid.uuid4().hex
    first_md5 = upload_and_mark(nb, "first", _context(token, "{}"))
    assert _ran(_build_log(nb, "first", first_md5), token)
    second_md5 = upload_and_mark(nb, "second", _context(token, '{"cells": []}'))
    second = _build_log(nb, "second", second_md5)
    assert _ran(second, token) and not any(line.endswith(" CACHED") for line in second)
