"""Which web UI the notebook's Jupyter server offers, so the printed URL opens it.

The default notebook command starts JupyterLab when the image has it, else the notebook UI, else
the bare server (whose root is only "A Jupyter Server is running."). The daemon asks the server
itself, through the forward and with the token, which of `/lab` and `/tree` it serves, and so
prints the URL a person can work in, and says why when that is not JupyterLab. A Notebook with
its own `spec.command` keeps the server root: nbd does not know what it serves.
"""

from __future__ import annotations

import dataclasses

import aiohttp

__all__ = ["UI", "detect_ui", "notebook_url"]

# Paths by preference, with what a person is told when the image falls back to them.
_CANDIDATES = (
    ("lab", "/lab", ""),
    (
        "notebook",
        "/tree",
        "the image has no JupyterLab: the URL opens the classic notebook UI; "
        "add jupyterlab to the Dockerfile's pip install for JupyterLab",
    ),
)
_BARE = (
    "the image has neither JupyterLab nor the notebook UI: the URL opens the bare Jupyter server, "
    "where no notebook can be opened; add `jupyterlab` to the Dockerfile's pip install"
)


@dataclasses.dataclass(frozen=True)
class UI:
    """`kind` is lab, notebook, server or custom; `path` the URL path; `note` why it is not JupyterLab."""

    kind: str
    path: str
    note: str = ""


CUSTOM = UI("custom", "/")


async def detect_ui(local_port: int, token: str, *, timeout: float = 10.0) -> UI:
    """The UI served at 127.0.0.1:`local_port`; the bare server when neither UI page answers 200."""
    headers = {"Authorization": f"token {token}"}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as http:
            for kind, path, note in _CANDIDATES:
                try:
                    async with http.get(
                        f"http://127.0.0.1:{local_port}{path}", headers=headers, allow_redirects=False
                    ) as response:
                        if response.status == 200:
                            return UI(kind, path, note)
                except (TimeoutError, aiohttp.ClientError):
                    continue
    except (TimeoutError, aiohttp.ClientError):
        pass
    return UI("server", "/", _BARE)


def notebook_url(local_port: int, ui: UI, token: str) -> str:
    """The URL a person opens: `http://127.0.0.1:PORT/lab?token=...` for JupyterLab."""
    return f"http://127.0.0.1:{local_port}{ui.path}?token={token}"
