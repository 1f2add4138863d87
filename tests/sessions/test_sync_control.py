"""`nbctl sync NAME status|pause|resume|flush` against a real session: pausing holds edits back,
a conflict shows in the session and keeps both versions on both sides, and the delete guard's
halt is left only with `resume --force`."""

from __future__ import annotations

import json
import re

from sessions_support import read, wait_for, write


def test_pause_resume_flush_status(notebook_factory):
    nb = notebook_factory()
    text = nb.nbctl("sync", nb.name).stdout
    assert "state:    watching" in text and str(nb.directory) in text

    paused = nb.sync("pause")
    assert paused["state"] == "SYNC_STATE_PAUSED"
    write(nb.directory / "held.txt", "held back\n")
    nb.pod_write("held_in_pod.txt", "held back too\n")
    # Paused: neither edit propagates, however long one waits for a cycle (a flush refuses).
    refused = nb.nbctl("sync", nb.name, "flush", check=False)
    assert refused.returncode == 1 and "paused" in refused.stderr
    assert nb.sync()["state"] == "SYNC_STATE_PAUSED"
    assert nb.pod_read("held.txt") is None
    assert read(nb.directory / "held_in_pod.txt") is None

    resumed = nb.sync("resume")
    assert resumed["state"] != "SYNC_STATE_PAUSED"
    flushed = nb.sync("flush")
    # flush returns once both sides agree.
    assert nb.pod_read("held.txt") == "held back\n"
    assert read(nb.directory / "held_in_pod.txt") == "held back too\n"
    assert flushed["state"] == "SYNC_STATE_WATCHING"
    assert int(flushed["files_to_remote"]) >= 1 and int(flushed["files_to_local"]) >= 1
    assert nb.local_files() == nb.pod_files()

    # --output json is one object per line, with proto field names.
    lines = nb.nbctl("sync", nb.name, "status", "--output", "json").stdout.strip().splitlines()
    assert len(lines) == 1
    status = json.loads(lines[0])
    assert status["local_root"] == str(nb.directory) and status["remote_root"] == "/content"
    assert nb.status()["sync"]["state"] == "SYNC_STATE_WATCHING"


def test_conflict_shows_in_status_and_keeps_both_versions(notebook_factory):
    nb = notebook_factory()
    nb.sync("pause")
    write(nb.directory / "main.py", "print('local version')\n")
    nb.pod_write("main.py", "print('pod version')\n")
    nb.sync("resume")
    nb.flush()

    status = nb.sync()
    conflicts = status.get("conflicts", [])
    assert [c["path"] for c in conflicts] == ["main.py"]
    copy = conflicts[0]["copy_path"]
    assert copy.startswith("main.conflict-") and copy.endswith(".py")
    # Both versions exist on both sides: the local one under the name, the pod's as the copy.
    assert read(nb.directory / "main.py") == "print('local version')\n"
    assert nb.pod_read("main.py") == "print('local version')\n"
    assert read(nb.directory / copy) == "print('pod version')\n"
    assert nb.pod_read(copy) == "print('pod version')\n"
    session = nb.status()
    assert [c["path"] for c in session["sync"]["conflicts"]] == ["main.py"]
    assert re.search(r"^conflicts:\s+1$", nb.nbctl("status", nb.name).stdout, re.M)
    assert f"conflict: main.py (other side kept as {copy})" in nb.nbctl("sync", nb.name).stdout


def test_halted_by_the_delete_guard_until_resume_force(notebook_factory):
    nb = notebook_factory(files=30)
    nb.sync("pause")
    for i in range(25):
        (nb.directory / "data" / f"f{i:02d}.txt").unlink()
    nb.sync("resume")
    halted = nb.wait_sync("halted")
    assert "delete" in halted["message"] and "force" in halted["message"]
    assert nb.status()["sync"]["state"] == "SYNC_STATE_HALTED"
    # Nothing was deleted in the pod; a plain resume halts again.
    assert nb.pod_read("data/f00.txt") == "file 0\n"
    nb.sync("resume")
    nb.wait_sync("halted")
    assert nb.pod_read("data/f00.txt") == "file 0\n"

    usage = nb.nbctl("sync", nb.name, "pause", "--force", check=False)
    assert usage.returncode == 1 and "--force goes only with resume" in usage.stderr

    forced = nb.sync("resume", "--force")
    assert forced["state"] != "SYNC_STATE_HALTED"
    nb.flush()
    assert nb.pod_read("data/f00.txt") is None
    assert nb.pod_read("data/f29.txt") == "file 29\n"
    assert nb.local_files() == nb.pod_files()
    # The guard is back for the next cycles: force was for one cycle only.
    assert nb.sync()["state"] == "SYNC_STATE_WATCHING"
    wait_for(lambda: nb.status()["sync"]["state"] == "SYNC_STATE_WATCHING", "the session's sync state")


def test_deleting_the_conflict_copy_resolves_the_conflict(notebook_factory):
    nb = notebook_factory()
    nb.sync("pause")
    write(nb.directory / "main.py", "print('local version')\n")
    nb.pod_write("main.py", "print('pod version')\n")
    nb.sync("resume")
    nb.flush()
    (copy,) = [c["copy_path"] for c in nb.sync().get("conflicts", [])]

    (nb.directory / copy).unlink()
    wait_for(lambda: not nb.sync().get("conflicts"), "the conflict to be resolved")
    nb.flush()
    assert nb.pod_read(copy) is None
    status = nb.sync()
    assert [(c["path"], c["copy_path"]) for c in status["resolved_conflicts"]] == [("main.py", copy)]
    text = nb.nbctl("sync", nb.name).stdout
    assert "conflict: " not in text
    assert "resolved: 1 conflict(s) resolved lately" in text
    # The session's own status counts only the open conflicts.
    assert not re.search(r"^conflicts:", nb.nbctl("status", nb.name).stdout, re.M)


def test_a_pod_file_above_sync_max_file_size_is_listed_not_synced(notebook_factory, jupyter_image):
    nb = notebook_factory(launch=False)
    write(nb.directory / "notebook.yaml", "sync:\n  maxFileSize: 1Mi\n")
    write(nb.directory / "ckpt" / "model.pt", "small local version\n")
    nb.launch("--image", jupyter_image)
    nb.wait_sync("watching")
    nb.flush()
    assert nb.pod_read("ckpt/model.pt") == "small local version\n"

    nb.pod_sh(
        "head -c 1572864 /dev/zero > /content/ckpt/.model.tmp && mv /content/ckpt/.model.tmp /content/ckpt/model.pt"
    )
    status = wait_for(lambda: (s := nb.sync()) and s.get("not_synced") and s, "the large file to be listed")
    nb.flush()
    assert status["not_synced"] == [
        {
            "path": "ckpt/model.pt",
            "size": "1572864",
            "reason": "too large (1.5 MiB > 1 MiB)",
            "side": "remote",
        }
    ]
    text = nb.nbctl("sync", nb.name).stdout
    lines = text.splitlines()
    i = lines.index("not synced (too large):")
    assert lines[i + 1] == "  in the pod  ckpt/model.pt: too large (1.5 MiB > 1 MiB)", text
    assert "conflict:" not in text and "problem:" not in text
    # Neither side's version moved: the small one stays local, the large one in the pod.
    assert read(nb.directory / "ckpt" / "model.pt") == "small local version\n"
    assert nb.pod_sh("wc -c < /content/ckpt/model.pt").strip() == "1572864"


def test_a_relaunch_with_a_higher_sync_max_file_size_brings_the_file(notebook_factory, jupyter_image):
    nb = notebook_factory(launch=False)
    write(nb.directory / "notebook.yaml", "sync: {maxFileSize: 1Mi}\n")
    nb.launch("--image", jupyter_image)
    nb.wait_sync("watching")
    nb.pod_sh("head -c 1572864 /dev/zero > /content/.big.tmp && mv /content/.big.tmp /content/big.bin")
    wait_for(lambda: nb.sync().get("not_synced"), "the large file to be listed")
    assert not (nb.directory / "big.bin").exists()

    write(nb.directory / "notebook.yaml", "sync: {maxFileSize: 2Mi}\n")
    nb.launch("--image", jupyter_image)
    wait_for(
        lambda: (nb.directory / "big.bin").is_file() and (nb.directory / "big.bin").stat().st_size == 1572864,
        "the file under the new limit locally",
    )
    assert not nb.flush().get("not_synced")
