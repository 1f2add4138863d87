"""The notebook as a person uses it: the URL `nbctl launch` prints, opened in a real browser.

Debian's chromium, driven by Playwright (never a browser Playwright downloads), on the local
cluster: JupyterLab with its file browser at the printed URL, `hello.ipynb` run cell by cell with
its outputs (the greeting from `hello.py`, the result of a package the Dockerfile installed), a file
written by a new cell showing up in the local directory, the saved notebook's outputs in the local
copy, a local edit of `hello.py` picked up by a reload in the kernel, and the same URL working again
after the pod is deleted, with the local edits in the new pod and no conflict copy in its file
browser. A screenshot per step is kept under the test's temporary folder
(`NBD_SCREENSHOTS=DIR` copies them there too).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from launchkit import LaunchKit, make_project, wait_until

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is installed with the test extras")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# JupyterLab's first start and the first kernel may take a while on a loaded 2-core machine.
UI_TIMEOUT_MS = 90_000


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium); .ci/run does that"
        )
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class Screens:
    """Numbered screenshots of the page, one per step."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        keep = os.environ.get("NBD_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path


def _open_lab(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-DirListing-item", timeout=UI_TIMEOUT_MS)
    _dismiss_news(page)


def _dismiss_news(page: Any) -> None:
    # JupyterLab asks, a moment after it starts, whether to fetch its news; answering keeps the
    # toast out of the screenshots. The question may not come (it is asked once per server).
    no = page.locator('button.jp-toast-button[title="No"]')
    try:
        no.first.wait_for(state="visible", timeout=10_000)
    except playwright.TimeoutError:
        return
    no.first.click()


def _listing_times_are_local(page: Any) -> bool:
    """Whether no file in the browser is dated by the epoch; refreshes the listing first."""
    page.locator('.jp-FileBrowser-toolbar [data-command="filebrowser:refresh"]').first.click()
    modified = page.locator(".jp-DirListing-itemModified").all_inner_texts()
    return bool(modified) and not any("56y" in text or "years ago" in text for text in modified)


def _open_notebook(page: Any) -> None:
    page.locator(".jp-DirListing-item", has_text="hello.ipynb").dblclick()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=UI_TIMEOUT_MS)
    _wait_kernel_idle(page)


def _wait_kernel_idle(page: Any) -> None:
    page.wait_for_selector(
        '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=UI_TIMEOUT_MS
    )


def _outputs(page: Any) -> str:
    return "\n".join(page.locator(".jp-NotebookPanel .jp-OutputArea-output").all_inner_texts())


def _wait_output(page: Any, text: str) -> None:
    page.wait_for_function(
        """t => [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
                .some(e => e.innerText.includes(t))""",
        arg=text,
        timeout=UI_TIMEOUT_MS,
    )


def _menu(page: Any, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def _add_cell_and_run(page: Any, source: str) -> None:
    """Types `source` into a new code cell at the end and runs it (Shift+Enter).

    Running the last cell leaves a new empty one below it, as in JupyterLab: that one is used.
    """
    last = page.locator(".jp-NotebookPanel .jp-Cell").last
    if last.locator(".cm-content").inner_text().strip():
        last.click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
    editor = page.locator(".jp-NotebookPanel .jp-Cell").last.locator(".cm-content")
    editor.click()
    page.keyboard.insert_text(source)
    page.keyboard.press("Shift+Enter")


def test_a_person_opens_the_url_and_works_in_jupyterlab(
    kit: LaunchKit, ns: str, tmp_path: Path, browser: Any
) -> None:
    project = make_project(tmp_path)
    # Content of its own: other tests of this cluster expect to upload examples/hello themselves.
    (project / "notes.md").write_text("Opened in a browser.\n")
    launched = kit.launch(project, ns)
    assert launched.rc == 0, launched.stderr
    url = launched.url
    assert "/lab?token=" in url, url
    assert launched.ready["ui"] == "lab" and not launched.ready.get("note")

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    screens = Screens(page, tmp_path / "screens")

    # 1. The printed URL shows JupyterLab with the file browser listing the project, with the
    #    files' local modification times (not 1970, "56y ago", from the build's archive).
    _open_lab(page, url)
    listing = page.locator(".jp-DirListing-content").inner_text()
    assert "hello.ipynb" in listing and "hello.py" in listing
    wait_until(
        lambda: _listing_times_are_local(page), timeout=60, what="the file browser to show local times"
    )
    screens.take("jupyterlab")

    # 2. hello.ipynb opens, its kernel becomes idle, and every cell runs.
    _open_notebook(page)
    screens.take("notebook-open")
    _menu(page, "Run", "Run All Cells")
    _wait_output(page, "Hello, nbd, from the notebook pod!")
    _wait_output(page, "12.3 million")
    _wait_output(page, "Hello, again, from the notebook pod!")
    screens.take("cells-ran")

    # 3. A new cell writes a file in /content; the sync brings it to the local directory.
    _add_cell_and_run(page, "open('from_browser.txt', 'w').write('written in JupyterLab')")
    wait_until(
        lambda: (
            (project / "from_browser.txt").is_file()
            and (project / "from_browser.txt").read_text() == "written in JupyterLab"
        ),
        timeout=60,
        what="the file written by a cell to reach the local directory",
    )
    screens.take("file-written")

    # 4. Saving the notebook puts its outputs into the local hello.ipynb.
    page.keyboard.press("Control+s")

    def saved_outputs() -> bool:
        try:
            cells = json.loads((project / "hello.ipynb").read_text())["cells"]
        except (OSError, ValueError, KeyError):
            return False
        texts = json.dumps([c.get("outputs", []) for c in cells])
        return "12.3 million" in texts and "Hello, nbd, from the notebook pod!" in texts

    wait_until(saved_outputs, timeout=60, what="the saved notebook's outputs in the local hello.ipynb")
    screens.take("saved")

    # 5. A local edit of hello.py reaches the pod; reloading the module in the kernel runs the new code.
    hello = project / "hello.py"
    hello.write_text(hello.read_text().replace("from the notebook pod!", "edited on the laptop!"))
    token = url.split("token=", 1)[1]
    base = url.split("/lab?", 1)[0]

    def pod_has_edit() -> bool:
        import urllib.request

        request = urllib.request.Request(
            f"{base}/api/contents/hello.py?content=1", headers={"Authorization": f"token {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return "edited on the laptop!" in json.loads(resp.read())["content"]
        except OSError:
            return False

    wait_until(pod_has_edit, timeout=60, what="the local edit of hello.py to reach the pod")
    _add_cell_and_run(page, "importlib.reload(hello).greet('reloaded')")
    _wait_output(page, "Hello, reloaded, edited on the laptop!")
    screens.take("reloaded")

    # 6. The pod is deleted; the same URL works again once the notebook is back.
    pods = kit.pods(ns, "nbd.dev/notebook=proj")
    assert len(pods) == 1
    old_uid = pods[0].metadata.uid
    subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            kit.kubeconfig,
            "-n",
            ns,
            "delete",
            "pod",
            pods[0].metadata.name,
            "--wait=false",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_until(
        lambda: any(p.metadata.uid != old_uid for p in kit.pods(ns, "nbd.dev/notebook=proj")),
        timeout=120,
        what="the notebook's pod to be replaced",
    )
    # The new pod starts from the image; the sync starts from the packaged files as ancestor, so
    # the local edits (hello.py, the saved hello.ipynb) reach it instead of becoming conflict copies.
    wait_until(pod_has_edit, timeout=120, what="the local edit of hello.py to reach the new pod")
    wait_until(
        lambda: (kit.session(ns, "proj") or {}).get("sync", {}).get("state") == "SYNC_STATE_WATCHING",
        timeout=120,
        what="the sync to watch the new pod",
    )
    _open_lab(page, url)
    assert (kit.session(ns, "proj") or {}).get("url") == url

    def listing_settled() -> bool:
        page.locator('.jp-FileBrowser-toolbar [data-command="filebrowser:refresh"]').first.click()
        names = page.locator(".jp-DirListing-itemName").all_inner_texts()
        return "from_browser.txt" in names and "hello.ipynb" in names

    wait_until(listing_settled, timeout=60, what="the new pod's file browser to list the synced files")
    names = page.locator(".jp-DirListing-itemName").all_inner_texts()
    assert not [n for n in names if "conflict-" in n], names
    assert not [p.name for p in project.rglob("*") if "conflict-" in p.name]
    assert not (kit.session(ns, "proj") or {}).get("sync", {}).get("conflicts")
    screens.take("files-after-pod-deleted")
    _open_notebook(page)
    _add_cell_and_run(page, "print(open('from_browser.txt').read(), 6 * 7)")
    _wait_output(page, "written in JupyterLab 42")
    screens.take("after-pod-deleted")
    assert screens.count == 8
    assert all(p.stat().st_size > 10_000 for p in (tmp_path / "screens").iterdir()), "screenshots show a page"
