"""Which UI the printed URL opens: JupyterLab, else the notebook UI, else the bare server (saying so)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from nbd.launch.jupyter import CUSTOM, detect_ui, notebook_url

TOKEN = "s3cret"


async def _serve(paths: set[str]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"token {TOKEN}":
            raise web.HTTPFound("/login")  # what Jupyter does without the token
        if request.path in paths:
            return web.Response(text=f"page {request.path}")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@pytest.mark.parametrize(
    ("paths", "kind", "path", "note"),
    [
        ({"/lab", "/tree", "/"}, "lab", "/lab", ""),
        ({"/tree", "/"}, "notebook", "/tree", "the image has no JupyterLab"),
        ({"/"}, "server", "/", "the image has neither JupyterLab nor the notebook UI"),
    ],
)
def test_detect_ui_prefers_jupyterlab(paths: set[str], kind: str, path: str, note: str) -> None:
    async def main() -> None:
        runner, port = await _serve(paths)
        try:
            ui = await detect_ui(port, TOKEN)
        finally:
            await runner.cleanup()
        assert (ui.kind, ui.path) == (kind, path)
        assert ui.note.startswith(note) if note else ui.note == ""
        if note:
            assert "jupyterlab" in ui.note, "the note says what to add"
        assert notebook_url(port, ui, TOKEN) == f"http://127.0.0.1:{port}{path}?token={TOKEN}"

    asyncio.run(main())


def test_a_server_that_does_not_answer_is_the_bare_server() -> None:
    async def main() -> None:
        runner, port = await _serve(set())
        await runner.cleanup()  # nothing listens there any more
        ui = await detect_ui(port, TOKEN, timeout=2)
        assert ui.kind == "server" and ui.path == "/"

    asyncio.run(main())


def test_a_custom_command_keeps_the_server_root() -> None:
    assert CUSTOM.kind == "custom" and CUSTOM.note == ""
    assert notebook_url(8890, CUSTOM, TOKEN) == f"http://127.0.0.1:8890/?token={TOKEN}"
