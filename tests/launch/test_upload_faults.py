"""The launch's upload against a store that refuses, fails, drops, spoils or is cut off.

A second local cluster whose store is reached through `gcsproxy.FaultProxy` (devstack's
`store_front_port`): the signed URLs the controller hands out name the proxy (for the in-cluster
store, the API server's service proxy forwards to it), which passes everything to the store
except the PUTs it is told to spoil. The store is GCS (the emulator) unless a test asks for
others: the launch with its cache, a refused and a dropped PUT, Ctrl-C mid-upload and spoiled
bytes run against every store; the other faults are the uploader's and the controller's, the same
whatever the store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_daemon import DaemonProcess
from fixtures_stack import LocalStack, make_namespace
from gcsproxy import FaultProxy
from launchkit import LaunchKit, api_url, http_get, make_project, wait_until

from devstack import down, up

STORES = ["gcs", "s3", "incluster"]


@pytest.fixture(scope="module")
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[LocalStack, FaultProxy]]:
    store = getattr(request, "param", "gcs")
    proxy = FaultProxy()
    port = proxy.start()
    state = tempfile.mkdtemp(prefix="nbd-stack-", dir="/tmp")
    try:
        stack = up(state, store=store, store_front_port=port)
        proxy.upstream = stack.store_url()
        yield LocalStack(stack), proxy
    finally:
        down(state)
        shutil.rmtree(state, ignore_errors=True)
        proxy.stop()


@pytest.fixture
def fkit(launch_daemon: DaemonProcess, proxied: tuple[LocalStack, FaultProxy]) -> LaunchKit:
    return LaunchKit(launch_daemon, proxied[0])


@pytest.fixture
def proxy(proxied: tuple[LocalStack, FaultProxy]) -> Iterator[FaultProxy]:
    p = proxied[1]
    p.faults.clear()
    p.puts = 0
    p.put_started.clear()
    yield p
    p.faults.clear()


@pytest.fixture
def fns(fkit: LaunchKit) -> Iterator[str]:
    name = make_namespace(fkit.stack, "f")
    yield name
    fkit.cleanup(name)


def _stored(stack: LocalStack, md5: str) -> str | None:
    """The stored MD5 (hex) of the context object, or None."""
    return stack.stack.stored_md5(md5)


@pytest.mark.parametrize("proxied", STORES, indirect=True)
def test_every_store_launches_relaunches_from_cache_and_survives_a_refused_and_a_dropped_put(
    fkit: LaunchKit, fns: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "stored")
    (project / "salt.txt").write_text(fns)  # a context of its own: never stored before
    proxy.faults.extend(["403", "drop"])
    first = fkit.launch(project, fns)
    assert first.rc == 0, first.stderr
    assert proxy.puts == 3
    assert any("fresh" in n["message"] for n in first.of("notice")), first.of("notice")
    assert {line["container"] for line in first.of("build_log")} == {"fetch", "build"}
    assert _stored(fkit.stack, first.md5) == first.md5
    assert http_get(api_url(first.url))[0] == 200
    again = fkit.launch(project, fns)
    assert again.rc == 0, again.stderr
    assert {"STEP_UPLOAD", "STEP_BUILD"} <= again.cached_steps()
    assert "PHASE_UPLOADING" not in again.phases()
    assert proxy.puts == 3 and again.url == first.url


@pytest.mark.parametrize(
    "faults, notice",
    [
        (["403"], "fresh"),
        (["expired"], "fresh"),
        (["503", "503"], ""),
        (["drop"], ""),
    ],
)
def test_refused_failed_or_dropped_puts_are_retried(
    fkit: LaunchKit, fns: str, proxy: FaultProxy, tmp_path: Path, faults: list[str], notice: str
) -> None:
    project = make_project(tmp_path, "retried")
    (project / "salt.txt").write_text(fns)  # a context of its own: never stored before
    proxy.faults.extend(faults)
    result = fkit.launch(project, fns)
    assert result.rc == 0, result.stderr
    assert proxy.puts == len(faults) + 1
    if notice:
        assert any(notice in n["message"] for n in result.of("notice")), result.of("notice")
    assert http_get(api_url(result.url))[0] == 200


def test_bad_digest_is_final_and_the_next_launch_packages_again(
    fkit: LaunchKit, fns: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "digest")
    (project / "salt.txt").write_text(fns)
    proxy.faults.append("baddigest")
    failed = fkit.launch(project, fns)
    assert failed.rc == 1
    line = [x for x in failed.stderr.splitlines() if x.startswith("nbctl:")]
    assert len(line) == 1 and "MD5" in line[0] and "relaunch" in line[0]
    assert proxy.puts == 1
    md5 = next(p["message"].split()[-1] for p in failed.of("phase") if p["phase"] == "PHASE_UPLOADING")
    spool = Path(fkit.daemon.state_dir) / "contexts"
    assert not list(spool.glob(f"*{md5}*")), "the archive that did not match its MD5 is removed"

    again = fkit.launch(project, fns)
    assert again.rc == 0, again.stderr
    assert "STEP_PACKAGE" not in again.cached_steps(), "packaged from scratch after BadDigest"
    assert "PHASE_UPLOADING" in again.phases()


@pytest.mark.parametrize("proxied", STORES, indirect=True)
def test_stored_bytes_that_do_not_match_fail_the_launch_and_the_next_uploads_again(
    fkit: LaunchKit, fns: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "mismatch")
    (project / "salt.txt").write_text(fns)
    proxy.faults.append("corrupt")
    failed = fkit.launch(project, fns, timeout=90)
    assert failed.rc == 1, failed.stderr
    line = [x for x in failed.stderr.splitlines() if x.startswith("nbctl:")]
    assert len(line) == 1 and "MD5" in line[0] and "relaunch" in line[0], failed.stderr
    # The emulators store the spoiled bytes and the controller's check catches them; the
    # in-cluster store checks the MD5 as the body arrives and refuses it (BadDigest, as GCS and
    # S3 themselves would).
    expected = "BadDigest" if fkit.stack.stack.store == "incluster" else "MD5Mismatch"
    assert failed.of("failed")[-1]["reason"] == expected
    assert failed.seconds < 60

    again = fkit.launch(project, fns)
    assert again.rc == 0, again.stderr
    assert "STEP_PACKAGE" not in again.cached_steps()
    assert "PHASE_UPLOADING" in again.phases() and "PHASE_BUILDING" in again.phases()


@pytest.mark.parametrize("proxied", STORES, indirect=True)
def test_ctrl_c_mid_upload_leaves_nothing_half_done(
    fkit: LaunchKit, fns: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "interrupted")
    (project / "data.bin").write_bytes(os.urandom(4 << 20))
    proxy.slow_rate = 256 * 1024  # about 16 s for the whole archive
    proxy.faults.append("slow")
    env = {**fkit.daemon.env, **fkit.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbctl", "launch", str(project), "-n", fns, "--output", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.put_started.wait(30), "the upload started"
        # A second launch of the same notebook meanwhile is refused, and changes nothing.
        second = fkit.launch(project, fns)
        assert second.rc == 1
        assert "being launched already" in second.stderr
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "cancelled" in err
    md5 = next(
        json.loads(line)["phase"]["message"].split()[-1]
        for line in out.splitlines()
        if "PHASE_UPLOADING" in line
    )
    session = wait_until(
        lambda: (s := fkit.session(fns, "interrupted")) and s["phase"] == "PHASE_FAILED" and s,
        what="the session to be marked failed",
    )
    assert "cancelled" in session["message"]
    assert _stored(fkit.stack, md5) is None, "no object stored for an interrupted upload"
    if fkit.stack.stack.store == "incluster":
        incoming = Path(fkit.stack.stack.store_dir) / ".incoming"
        wait_until(lambda: not any(incoming.iterdir()), what="the cut upload's temporary file to go")

    again = fkit.launch(project, fns)
    assert again.rc == 0, again.stderr
    assert again.md5 == md5
    assert "PHASE_UPLOADING" in again.phases()
    assert _stored(fkit.stack, md5) == md5


def test_ctrl_c_while_repackaging_a_live_session_leaves_it_running(
    fkit: LaunchKit, fns: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, "kept")
    first = fkit.launch(project, fns, "--no-sync")
    assert first.rc == 0, first.stderr
    # Big enough that packaging lasts a few seconds on this machine.
    with open(project / "big.bin", "wb") as f:
        for _ in range(24):
            f.write(os.urandom(4 << 20))
    env = {**fkit.daemon.env, **fkit.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbctl", "launch", str(project), "-n", fns, "--no-sync", "--output", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"progress"' in line and "PHASE_PACKAGING" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    session = wait_until(
        lambda: (s := fkit.session(fns, "kept")) and "cancelled" in s.get("message", "") and s,
        what="the cancelled relaunch to be recorded",
    )
    assert session["phase"] == "PHASE_READY"
    assert http_get(api_url(first.url))[0] == 200
    attached = fkit.launch(project, fns, "--attach")
    assert attached.rc == 0 and attached.url == first.url
    (project / "big.bin").unlink()
