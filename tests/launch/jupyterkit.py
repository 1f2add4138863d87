"""Driving a notebook pod's real Jupyter from a test: start a kernel, make it busy, let it go idle.

Everything goes through the notebook's URL (nbd's forward), as a browser's requests would: the REST
API for kernels, and the kernel's WebSocket (`/api/kernels/ID/channels`, Jupyter's JSON protocol)
for an execute request. `busy_for` returns once the kernel reported `busy` and closes its socket,
so the kernel keeps running the cell with no client attached, which is the case idle stops get
wrong elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

__all__ = ["start_kernel", "busy_for", "kernel_state"]


def _base(notebook_url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(notebook_url)
    token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
    return f"{parts.scheme}://{parts.netloc}", token


def start_kernel(notebook_url: str) -> str:
    """POST /api/kernels: a new kernel's id."""

    async def go() -> str:
        base, token = _base(notebook_url)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/kernels", params={"token": token}, json={}) as resp:
                resp.raise_for_status()
                return str((await resp.json())["id"])

    return asyncio.run(go())


def kernel_state(notebook_url: str, kernel: str) -> str:
    async def go() -> str:
        base, token = _base(notebook_url)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/kernels/{kernel}", params={"token": token}) as resp:
                resp.raise_for_status()
                return str((await resp.json())["execution_state"])

    return asyncio.run(go())


def _message(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": "test",
            "session": session,
            "msg_type": msg_type,
            "version": "5.3",
            "date": datetime.now(UTC).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def busy_for(notebook_url: str, kernel: str, seconds: float, timeout: float = 60.0) -> None:
    """Runs `time.sleep(seconds)` in the kernel; returns once the kernel says it is busy, with the
    socket closed (the cell goes on running)."""

    async def go() -> None:
        base, token = _base(notebook_url)
        ws_url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
        session = uuid.uuid4().hex
        code = f"import time\ntime.sleep({seconds})\n"
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(ws_url, params={"token": token, "session_id": session}) as ws:
                request = _message(
                    "execute_request",
                    {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    session,
                )
                await ws.send_str(json.dumps(request))
                async with asyncio.timeout(timeout):
                    async for frame in ws:
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            continue
                        msg = json.loads(frame.data)
                        parent = (msg.get("parent_header") or {}).get("msg_id")
                        if (
                            msg.get("msg_type") == "status"
                            and parent == request["header"]["msg_id"]
                            and msg["content"].get("execution_state") == "busy"
                        ):
                            return
                raise AssertionError("the kernel never said it was busy")

    asyncio.run(go())
