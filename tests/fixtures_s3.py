"""pytest fixtures for the S3 emulator: moto in server mode (`moto_server`), a real HTTP process.

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from fixtures_s3 import s3_emulator  # noqa: E402,F401

Fixtures:
    s3_emulator (function scope): `S3Emulator` (.url, .port, .bucket, .client(), .env, .stop())
        with bucket `nbd-contexts` and static test credentials in `.env` (AWS_ACCESS_KEY_ID, ...),
        which the tests also put in os.environ for boto3's credential chain.

moto verifies Content-MD5 of a plain PUT (BadDigest) but not presigned signatures or expiry: the
uploader's handling of those answers is tested against a stub server, and the signatures by
recomputing SigV4 (tests/cluster/sigv4_check.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["S3Emulator", "s3_emulator", "start_s3_emulator", "S3_CREDENTIALS"]

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "nbdtestkey",
    "AWS_SECRET_ACCESS_KEY": "nbdtestsecret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_server_argv(port: int) -> list[str]:
    """The emulator's command line (the console script beside this interpreter, else on PATH)."""
    script = Path(sys.executable).parent / "moto_server"
    found = str(script) if script.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
    return [found, "-H", "127.0.0.1", "-p", str(port)]


class S3Emulator:
    def __init__(self, process: subprocess.Popen[bytes], port: int, bucket: str) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.bucket = bucket
        self.env = dict(S3_CREDENTIALS)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_emulator(bucket: str = "nbd-contexts", deadline: float = 30.0) -> S3Emulator:
    """Starts moto_server on a free port and creates `bucket`; waits until it answers."""
    port = _free_port()
    env = {**os.environ, **S3_CREDENTIALS}
    process = subprocess.Popen(
        moto_server_argv(port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    emulator = S3Emulator(process, port, bucket)
    end = time.monotonic() + deadline
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"moto_server exited with {process.returncode}: {err[-500:]}")
        try:
            with urllib.request.urlopen(f"{emulator.url}/moto-api/", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > end:
            emulator.stop()
            raise RuntimeError(f"moto_server did not answer on {emulator.url} within {deadline} s")
        time.sleep(0.05)
    emulator.client().create_bucket(Bucket=bucket)
    return emulator


@pytest.fixture
def s3_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Emulator]:
    emulator = start_s3_emulator()
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    try:
        yield emulator
    finally:
        emulator.stop()
