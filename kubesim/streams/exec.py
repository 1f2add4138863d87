"""`pods/{name}/exec` over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io`).

The command runs inside the pod's namespaces with the container's environment and working
directory. stdin arrives on channel 0 (BINARY or TEXT messages; v5 `[255, 0]` closes it); stdout
and stderr go out on 1 and 2 (one channel with a tty); at exit the `Status` is always sent on
channel 3 before the close. When the client goes away the command is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import struct
import termios
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from kubesim.kubelet.namespaces import set_pdeathsig
from kubesim.kubelet.runtime import exit_code_of
from kubesim.streams import channels
from kubesim.streams.common import bad_request, flag, get_pod, pick_container, tracked

if TYPE_CHECKING:
    from kubesim.kubelet import Kubelet

__all__ = ["make_exec_handler"]

log = logging.getLogger("kubesim.streams.exec")


def make_exec_handler(kubelet: Kubelet):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        command = request.query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        pod = get_pod(kubelet, namespace, name)
        container = pick_container(pod, request.query.get("container"))
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        w = kubelet.worker(namespace, name)
        target = w.exec_target(container) if w is not None else None
        proc_running = w is not None and container in w.procs and w.procs[container].running
        if w is None or target is None or not proc_running:
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        want_stdin = flag(request, "stdin")
        want_stdout = flag(request, "stdout", True)
        want_stderr = flag(request, "stderr", True)
        tty = flag(request, "tty")
        problem = w._check_executable(command[0], target)

        ws = web.WebSocketResponse(protocols=channels.EXEC_PROTOCOLS, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        v5 = ws.ws_protocol == "v5.channel.k8s.io"
        send_lock = asyncio.Lock()

        async def send(ch: int, data: bytes) -> None:
            async with send_lock:
                await ws.send_bytes(channels.encode(ch, data))

        with tracked(kubelet.faults, request):
            if problem is not None:
                msg = (
                    f"Internal error occurred: error executing command in container: failed to exec in container: "
                    f"failed to start exec: OCI runtime exec failed: exec failed: unable to start container "
                    f"process: {problem}: unknown"
                )
                with contextlib.suppress(Exception):
                    await send(channels.STATUS, json.dumps(channels.exit_status(None, msg)).encode())
                    await ws.close()
                return ws
            master = slave = -1
            if tty:
                master, slave = os.openpty()
                proc = await asyncio.create_subprocess_exec(
                    *target.prefix,
                    *command,
                    env={**target.env, "TERM": target.env.get("TERM", "xterm")},
                    cwd=target.cwd,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    start_new_session=True,
                    preexec_fn=_tty_child(slave),
                )
                os.close(slave)
            else:
                proc = await asyncio.create_subprocess_exec(
                    *target.prefix,
                    *command,
                    env=target.env,
                    cwd=target.cwd,
                    stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=set_pdeathsig,
                )
            w.exec_procs.add(proc)
            try:
                pumps: list[asyncio.Future[Any]] = []
                if tty:
                    pumps.append(asyncio.ensure_future(_pump_fd(master, lambda d: send(channels.STDOUT, d))))
                else:
                    assert proc.stdout is not None and proc.stderr is not None
                    pumps.append(
                        asyncio.ensure_future(_pump(proc.stdout, channels.STDOUT, send, want_stdout))
                    )
                    pumps.append(
                        asyncio.ensure_future(_pump(proc.stderr, channels.STDERR, send, want_stderr))
                    )
                reader = asyncio.ensure_future(
                    _read_client(
                        ws,
                        proc,
                        master,
                        v5,
                        tty,
                        orphans=kubelet.faults is not None and kubelet.faults.exec_orphans,
                    )
                )
                code = await proc.wait()
                done, _ = await asyncio.wait(pumps, timeout=5)
                for p in pumps:
                    p.cancel()
                with contextlib.suppress(Exception):
                    await send(channels.STATUS, json.dumps(channels.exit_status(exit_code_of(code))).encode())
                reader.cancel()
                with contextlib.suppress(Exception):
                    await ws.close()
            finally:
                w.exec_procs.discard(proc)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                if master >= 0:
                    with contextlib.suppress(OSError):
                        os.close(master)
        return ws

    return handler


def _tty_child(slave: int):  # type: ignore[no-untyped-def]
    def setup() -> None:
        set_pdeathsig()
        with contextlib.suppress(OSError):
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    return setup


async def _pump(stream: asyncio.StreamReader, ch: int, send: Any, forward: bool) -> None:
    while True:
        data = await stream.read(65536)
        if not data:
            return
        if forward:
            await send(ch, data)


async def _pump_fd(fd: int, send: Any) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.run_in_executor(None, os.read, fd, 65536)
        except OSError:
            return
        if not data:
            return
        await send(data)


async def _read_client(
    ws: web.WebSocketResponse,
    proc: asyncio.subprocess.Process,
    master: int,
    v5: bool,
    tty: bool,
    *,
    orphans: bool = False,
) -> None:
    """Feed stdin from the client; on the client's close, kill the command, or with `orphans`
    leave it running with its stdin open and nobody reading its output, as a real runtime does
    when the client vanished without closing stdin."""
    stdin = proc.stdin
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            try:
                frame = channels.decode(msg.data, v5=v5)
            except channels.FrameError:
                continue
            log.debug("exec frame channel=%d len=%d closed=%s", frame.channel, len(frame.data), frame.closed)
            if frame.channel == channels.STDIN and frame.data:
                if tty:
                    os.write(master, frame.data)
                elif stdin is not None and not stdin.is_closing():
                    stdin.write(frame.data)
                    with contextlib.suppress(ConnectionError):
                        await stdin.drain()
            elif frame.channel == channels.CLOSE and frame.closed == channels.STDIN:
                if tty:
                    os.write(master, b"\x04")
                elif stdin is not None:
                    stdin.close()
            elif frame.channel == channels.RESIZE and tty:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    size = json.loads(frame.data)
                    fcntl.ioctl(
                        master, termios.TIOCSWINSZ, struct.pack("HHHH", size["Height"], size["Width"], 0, 0)
                    )
    finally:
        if proc.returncode is None and not orphans:
            # The client is gone: nothing will read the output; the command goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
