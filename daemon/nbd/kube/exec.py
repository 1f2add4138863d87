"""Running a command in a pod over `pods/P/exec` with stdin/stdout/stderr as async streams.

The sync engine runs its agent in the pod through this and talks to it over stdin/stdout. The
stream pump reads frames from the WebSocket into bounded buffers: stdout holds at most
`STDOUT_LIMIT` bytes before the pump stops reading (back-pressure reaches the pod through TCP);
stderr keeps only its last `STDERR_KEEP` bytes so an unread stderr never stalls stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from nbd.errors import InvalidArgument, NbdError, Unavailable
from nbd.kube.channel import EXEC_PROTOCOLS, V5_CHANNEL, Channel, open_channel
from nbd.kube.target import KubeTarget

__all__ = ["ExecChannel", "open_exec", "exit_code_from_status"]

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
STDOUT_LIMIT = 4 * 1024 * 1024
STDERR_KEEP = 64 * 1024
STDIN_CHUNK = 256 * 1024


def exit_code_from_status(status: dict[str, Any]) -> int:
    """Exit code from an exec status (channel 3) document.

    `{"status":"Success"}` is 0; a NonZeroExitCode failure carries the code in
    `details.causes[reason=ExitCode].message`.

    Raises:
        NbdError: a Failure that is not an exit code (e.g. the command could not start).
    """
    if status.get("status") == "Success":
        return 0
    details = status.get("details") or {}
    for cause in details.get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                break
    message = status.get("message") or "the command failed in the pod"
    raise NbdError(f"exec failed: {message}", reason=str(status.get("reason") or "ExecFailed"))


class _Buffer:
    """A byte buffer filled by the pump and drained by readers, with an EOF mark."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.changed = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        self.changed.set()

    def end(self) -> None:
        self.eof = True
        self.changed.set()

    async def wait(self) -> None:
        self.changed.clear()
        await self.changed.wait()


class ExecChannel:
    """A command running in a pod.

    Use `write_stdin` / `close_stdin`, `read_stdout` / `readexactly_stdout`, `read_stderr`, and
    `wait()` for the exit code. `close()` tears the stream down.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.protocol = channel.protocol
        self._stdout = _Buffer()
        self._stderr = _Buffer()
        self._room = asyncio.Event()
        self._room.set()
        self._status: dict[str, Any] | None = None
        self._done = asyncio.Event()
        self._pump_error: BaseException | None = None
        self._pump = asyncio.create_task(self._run_pump(), name=f"exec-pump-{channel.pod}")

    @property
    def supports_close_stdin(self) -> bool:
        """Only v5 can tell the pod that stdin ended without closing the whole stream."""
        return self.protocol == V5_CHANNEL

    async def _run_pump(self) -> None:
        try:
            while True:
                frame = await self.channel.receive()
                if frame is None:
                    break
                ch, payload = frame
                if ch == STDOUT:
                    self._stdout.feed(payload)
                    if len(self._stdout.data) >= STDOUT_LIMIT:
                        self._room.clear()
                        await self._room.wait()
                elif ch == STDERR:
                    self._stderr.feed(payload)
                    if len(self._stderr.data) > STDERR_KEEP:
                        del self._stderr.data[: len(self._stderr.data) - STDERR_KEEP]
                elif ch == STATUS:
                    try:
                        parsed = json.loads(payload)
                        self._status = parsed if isinstance(parsed, dict) else {}
                    except ValueError:
                        self._status = {"status": "Failure", "message": payload.decode("utf-8", "replace")}
        except Exception as e:  # the stream broke: readers see EOF, wait() raises
            self._pump_error = e
            log.debug("exec stream in %s ended with %r", self.channel.pod, e)
        finally:
            self._stdout.end()
            self._stderr.end()
            self._done.set()
            if not self.channel.closed:
                await self.channel.close()

    async def write_stdin(self, data: bytes | bytearray | memoryview) -> None:
        """Send bytes to the command's stdin (in bounded messages, awaiting the socket)."""
        view = memoryview(data)
        if self.channel.closed:
            raise Unavailable(f"the exec stream to pod {self.channel.pod} is closed", reason="StreamClosed")
        for i in range(0, len(view), STDIN_CHUNK):
            await self.channel.send(STDIN, view[i : i + STDIN_CHUNK])

    async def close_stdin(self) -> bool:
        """Signal EOF on stdin (v5 `[255, 0]`). Returns False on v4, which cannot express it."""
        if not self.supports_close_stdin:
            return False
        if not self.channel.closed:
            await self.channel.ws.send_bytes(bytes((CLOSE, STDIN)))
        return True

    async def _read(self, buf: _Buffer, n: int) -> bytes:
        while not buf.data and not buf.eof:
            await buf.wait()
        if n < 0 or n >= len(buf.data):
            out = bytes(buf.data)
            buf.data.clear()
        else:
            out = bytes(buf.data[:n])
            del buf.data[:n]
        if buf is self._stdout and len(buf.data) < STDOUT_LIMIT:
            self._room.set()
        return out

    async def read_stdout(self, n: int = -1) -> bytes:
        """Up to `n` bytes of stdout (all buffered if n < 0); b"" at EOF."""
        return await self._read(self._stdout, n)

    async def readexactly_stdout(self, n: int) -> bytes:
        """Exactly `n` bytes of stdout.

        Raises:
            asyncio.IncompleteReadError: stdout ended first.
        """
        buf = self._stdout
        while len(buf.data) < n and not buf.eof:
            self._room.set()  # the reader needs more than the limit may hold
            await buf.wait()
        if len(buf.data) < n:
            partial = bytes(buf.data)
            buf.data.clear()
            raise asyncio.IncompleteReadError(partial, n)
        out = bytes(buf.data[:n])
        del buf.data[:n]
        if len(buf.data) < STDOUT_LIMIT:
            self._room.set()
        return out

    async def read_stderr(self, n: int = -1) -> bytes:
        """Up to `n` bytes of stderr (only the last STDERR_KEEP bytes are kept)."""
        return await self._read(self._stderr, n)

    async def wait(self, timeout: float | None = None) -> int:
        """The exit code, once the command ended (parsed from the status channel).

        Raises:
            Unavailable: the stream closed without a status (pod gone, connection lost).
            NbdError: the command could not be run (the status names why).
        """
        await asyncio.wait_for(self._done.wait(), timeout)
        if self._status is None:
            detail = f": {self._pump_error}" if self._pump_error else ""
            raise Unavailable(
                f"the exec stream to pod {self.channel.pod} ended without an exit status{detail}",
                reason="StreamClosed",
            )
        return exit_code_from_status(self._status)

    async def close(self) -> None:
        """Close the stream (the command gets EOF/SIGHUP as the API server decides)."""
        await self.channel.close()
        self._room.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._pump), 5)
        except (TimeoutError, asyncio.CancelledError):
            self._pump.cancel()


async def open_exec(
    target: KubeTarget,
    namespace: str,
    pod: str,
    container: str | None,
    command: Sequence[str],
    stdin: bool = True,
) -> ExecChannel:
    """Start `command` in `pod` (v5, else v4 channel protocol) and return its `ExecChannel`."""
    if not command:
        raise InvalidArgument("exec needs a command", reason="InvalidArgument")
    query: list[tuple[str, str]] = [("command", c) for c in command]
    if container:
        query.append(("container", container))
    query += [
        ("stdin", "true" if stdin else "false"),
        ("stdout", "true"),
        ("stderr", "true"),
    ]
    channel = await open_channel(target, namespace, pod, "exec", query, EXEC_PROTOCOLS)
    return ExecChannel(channel)
