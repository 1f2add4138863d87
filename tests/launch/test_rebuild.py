"""`nbctl launch --rebuild` end to end: nbctl → daemon → local cluster. Unchanged content, which a
plain relaunch takes from the build record, is built once more when asked, and the launch says so."""

from __future__ import annotations

from pathlib import Path

from launchkit import LaunchKit, make_project

BUILD = "STEP_BUILD"
BUILDING = "PHASE_BUILDING"


def test_rebuild_builds_unchanged_content_again_and_says_so(kit: LaunchKit, ns: str, tmp_path: Path) -> None:
    project = make_project(tmp_path)
    first = kit.launch(project, ns)
    assert first.rc == 0, first.stderr
    job = f"nbd-build-{first.md5}"
    batch = kit.stack.batch()
    first_uid = batch.read_namespaced_job(job, ns).metadata.uid

    rebuilt = kit.launch(project, ns, "--rebuild", timeout=300)
    assert rebuilt.rc == 0, rebuilt.stderr
    assert rebuilt.md5 == first.md5
    assert BUILD not in rebuilt.cached_steps() and BUILDING in rebuilt.phases()
    notices = [n["message"] for n in rebuilt.of("notice")]
    assert f"Building context {first.md5} again, as request" in "\n".join(notices), notices
    lines = [line["text"] for line in rebuilt.of("build_log")]
    # Nothing comes from the cache: every RUN of the Dockerfile ran.
    assert lines and not any(
        line.endswith(" CACHED") and "RUN" in prev for prev, line in zip(lines, lines[1:])
    )
    assert batch.read_namespaced_job(job, ns).metadata.uid != first_uid

    # A plain relaunch afterwards takes the (new) image from the record again.
    again = kit.launch(project, ns)
    assert again.rc == 0, again.stderr
    assert BUILD in again.cached_steps()
