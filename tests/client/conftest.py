"""A small in-process fake of the daemon's gRPC API, to test how clients render what it sends.

`fake_nbd_server` serves Daemon.Version and a scripted Notebooks.Launch on a Unix socket from a
thread of the test process; the script is a list of LaunchEvents, optionally followed by an error
status, or "hang" (the stream waits until the client cancels). Every Launch request is recorded.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

import nbdclient
from nbdapi.v1 import daemon_pb2, daemon_pb2_grpc, notebooks_pb2_grpc
from nbdapi.v1 import notebooks_pb2 as pb


@dataclasses.dataclass
class Script:
    events: list[pb.LaunchEvent] = dataclasses.field(default_factory=list)
    # After the events: (status code, details) to abort with, or None to end normally.
    error: tuple[grpc.StatusCode, str] | None = None
    hang: bool = False


class FakeServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "fake.sock"
        self.version = nbdclient.__version__
        self.script = Script()
        self.requests: list[pb.LaunchRequest] = []
        self.launch_started = threading.Event()
        self.cancelled = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        daemon_pb2_grpc.add_DaemonServicer_to_server(_Daemon(self), self._server)
        notebooks_pb2_grpc.add_NotebooksServicer_to_server(_Notebooks(self), self._server)
        self._server.add_insecure_port(f"unix:{self.socket}")

    @property
    def env(self) -> dict[str, str]:
        """Environment for an nbctl subprocess: this socket, and never a real daemon start."""
        return {
            **os.environ,
            "NBD_SOCKET": str(self.socket),
            "NBD_STATE_DIR": str(self.root / "state"),
            "NBD_DAEMON_COMMAND": "false",
            "NBD_START_TIMEOUT": "2",
        }

    # Event builders, reachable from tests through the fixture.
    @staticmethod
    def event(session: str = "nb", **payload: object) -> pb.LaunchEvent:
        return event(session, **payload)

    @staticmethod
    def happy_events(url: str = "http://127.0.0.1:8890/?token=abc") -> list[pb.LaunchEvent]:
        return happy_events(url)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(0).wait()


class _Daemon(daemon_pb2_grpc.DaemonServicer):
    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake

    def Version(self, request, context):
        return daemon_pb2.VersionResponse(
            version=self.fake.version, api_version="v1", pid=os.getpid(), socket=str(self.fake.socket)
        )


class _Notebooks(notebooks_pb2_grpc.NotebooksServicer):
    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake

    def Launch(self, request, context):
        self.fake.requests.append(request)
        script = self.fake.script
        context.add_callback(self.fake.cancelled.set)
        yield from script.events
        self.fake.launch_started.set()
        if script.hang:
            while context.is_active():
                self.fake.cancelled.wait(0.05)
            return
        if script.error is not None:
            context.abort(*script.error)


@pytest.fixture
def fake_nbd_server() -> Iterator[FakeServer]:
    root = Path(tempfile.mkdtemp(prefix="nbdf-", dir="/tmp"))
    server = FakeServer(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def event(session: str = "nb", **payload) -> pb.LaunchEvent:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return pb.LaunchEvent(time=ts, session=session, **payload)


def happy_events(url: str = "http://127.0.0.1:8890/?token=abc") -> list[pb.LaunchEvent]:
    return [
        event(phase=pb.PhaseChanged(phase=pb.PHASE_PACKAGING, message="3 files")),
        event(progress=pb.Progress(phase=pb.PHASE_PACKAGING, done_bytes=0, total_bytes=4 * 1024 * 1024)),
        event(
            progress=pb.Progress(
                phase=pb.PHASE_PACKAGING, done_bytes=4 * 1024 * 1024, total_bytes=4 * 1024 * 1024
            )
        ),
        event(cached=pb.Cached(step=pb.Cached.STEP_UPLOAD, reason="already uploaded", md5="abc")),
        event(phase=pb.PhaseChanged(phase=pb.PHASE_BUILDING)),
        event(build_log=pb.LogLine(container="build", text="STEP 1/3: FROM python:3.11")),
        event(notice=pb.Notice(level=pb.Notice.LEVEL_WARNING, message="port 8888 is busy; using 8890")),
        event(pod=pb.PodStatus(pod="nb-0", phase="Pending", reason="ContainerCreating")),
        event(pod=pb.PodStatus(pod="nb-0", phase="Running", ready=True)),
        event(
            ready=pb.Ready(
                url=url, local_port=8890, session=pb.Session(name="nb", namespace="default", ref="nb")
            )
        ),
    ]
