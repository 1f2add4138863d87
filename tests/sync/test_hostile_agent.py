"""A hostile (or broken) agent cannot make the daemon write outside the local directory.

The fake agent below speaks the real frame protocol and reports paths like `../x`,
`/etc/passwd`, a symbolic link leading out of the root with files "inside" it, and content that
does not match its digest. The session must refuse all of them, report problems, and still sync
the one honest file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any

from nbd.sync import SyncState
from nbd.sync.agent.frames import FrameDecoder, encode_frame

from .conftest import Pair, run, tree, until


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


HONEST = b"honest content"
LIES = b"this is not what the digest says"


class HostileAgent:
    """An in-process `AgentTransport` whose agent lies."""

    entries: list[list[Any]] = [
        ["../x", "file", 3, False, _sha(b"bad"), ""],
        ["/etc/passwd-nbd-test", "file", 3, False, _sha(b"bad"), ""],
        ["a/../../y", "file", 3, False, _sha(b"bad"), ""],
        ["esc", "symlink", 0, False, "", "/etc"],
        ["esc/passwd", "file", 3, False, _sha(b"bad"), ""],
        ["up", "symlink", 0, False, "", "../../outside"],
        ["liar.txt", "file", 5, False, _sha(b"truth"), ""],
        ["good.txt", "file", len(HONEST), False, _sha(HONEST), ""],
    ]

    def __init__(self) -> None:
        self.out: asyncio.Queue[bytes] = asyncio.Queue()
        self.decoder = FrameDecoder()
        self.out.put_nowait(b"NBD-AGENT-READY\n" + encode_frame({"op": "hello", "version": 1}))
        self.writes: list[str] = []

    async def send(self, data: bytes) -> None:
        for header, _body in self.decoder.feed(data):
            self.answer(header)

    def answer(self, h: dict[str, Any]) -> None:
        rid, op = h.get("id"), h.get("op")
        reply: dict[str, Any] = {"id": rid, "ok": True}
        body = b""
        if op == "scan":
            doc = {
                "entries": self.entries,
                "absent": ["../gone"],
                "problems": [],
                "rules": {"../.gitignore": "*"},
            }
            reply["z"] = 1
            body = zlib.compress(json.dumps(doc).encode())
        elif op == "read_many":
            sizes, errors, parts = [], [], []
            for path, _digest in h["files"]:
                data = HONEST if path == "good.txt" else LIES
                parts.append(data)
                sizes.append(len(data))
                errors.append("")
            reply.update(sizes=sizes, errors=errors, z=0)
            body = b"".join(parts)
        elif op in ("put_many", "stage_many", "commit_many", "batch"):
            items = h.get("files") or h.get("ops") or h.get("handles") or []
            self.writes += [str(i[0] if isinstance(i, list) else i) for i in items]
            reply["results"] = (
                [[False, "no"] for _ in items] if op == "batch" else ["refused by the fake" for _ in items]
            )
        elif op == "write_begin" or op == "write_chunk":
            return
        self.out.put_nowait(encode_frame(reply, body))

    async def receive(self) -> bytes:
        return await self.out.get()

    async def close(self) -> None:
        pass


def test_hostile_agent_is_refused(pair: Pair, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    async def factory(argv: list[str]) -> Any:
        return HostileAgent()

    async def go() -> None:
        async with pair.session(factory) as s:
            await until(lambda: (pair.local / "good.txt").exists(), what="the honest file")
            st = await s.flush(10)
            assert st.state == SyncState.WATCHING
            problems = {p.path: p.message for p in st.problems}
            assert any("refused a path from the pod" in m for m in problems.values())
            assert "outside" in problems["esc"] and "outside" in problems["up"]
            assert "digest" in problems["liar.txt"]

    run(go())
    assert tree(pair.local) == {"good.txt": (HONEST, False)}
    assert os.listdir(outside) == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not os.path.exists("/etc/passwd-nbd-test")
