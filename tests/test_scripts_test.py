"""scripts/test as a developer runs it: named steps, skips, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(skip: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NBD_TEST_SKIP"}
    if skip is not None:
        env["NBD_TEST_SKIP"] = skip
    env["PYTHON"] = sys.executable
    return subprocess.run(
        [str(ROOT / "scripts" / "test"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unknown_step_name_is_refused_with_the_list_of_steps() -> None:
    done = _run("mypy,bogus")
    assert done.returncode == 2
    assert "NBD_TEST_SKIP names an unknown step 'bogus'" in done.stderr
    assert "static gen-proto mypy lint-imports ruff ruff-format pytest vscode" in done.stderr


def test_skipped_steps_are_named_and_no_tests_collected_fails() -> None:
    done = _run("static,vscode", "tests/polling.py")
    assert done.returncode == 1, done.stdout + done.stderr
    for step in ("gen-proto", "mypy", "lint-imports", "ruff", "ruff-format"):
        assert f"==> {step} (skipped)" in done.stdout
    assert "no tests were collected; that is a failure" in done.stderr
    assert "scripts/test: failed: pytest" in done.stderr


def test_a_passing_selection_passes() -> None:
    done = _run(
        "static", "tests/test_scripts_test.py::test_an_unknown_step_name_is_refused_with_the_list_of_steps"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "scripts/test: all steps passed" in done.stdout
