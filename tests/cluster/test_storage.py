"""The GCS store against fake-gcs-server, and its signed URLs checked by recomputing the V4
signature independently (canonical request → string to sign → RSA-SHA256), since the emulator
checks neither signatures, expiry nor Content-MD5."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import signing_check
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from nbd_controller.config import Config
from nbd_controller.manifests import fetch_script
from nbd_controller.storage import CONTENT_TYPE, GCSStore, iam_signing_credentials, make_store

verify_v4 = signing_check.verify_v4


def _config(bucket: str, key_file: str) -> Config:
    return Config(bucket=bucket, registry="registry.test:5000", signing_key_file=key_file)


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _put(url: str, body: bytes, md5_hex: str, content_type: str = CONTENT_TYPE) -> int:
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        headers={
            "Content-MD5": base64.b64encode(bytes.fromhex(md5_hex)).decode(),
            "Content-Type": content_type,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        status: int = response.status
        return status


def test_signed_put_url_is_a_valid_v4_signature_bound_to_md5_and_type(gcs_emulator, signing_key) -> None:  # type: ignore[no-untyped-def]
    store = make_store(_config(gcs_emulator.bucket, signing_key.path))
    md5 = hashlib.md5(b"context").hexdigest()
    before = datetime.now(UTC)
    url = store.signed_put_url(md5, CONTENT_TYPE, timedelta(seconds=900))
    headers = {"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(), "Content-Type": CONTENT_TYPE}
    query = verify_v4(url, "PUT", headers, signing_key.private_key.public_key())  # type: ignore[attr-defined]
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-SignedHeaders"] == "content-md5;content-type;host"
    assert query["X-Goog-Credential"].startswith(signing_key.email + "/")
    assert query["X-Goog-Credential"].endswith("/auto/storage/goog4_request")
    assert int(query["X-Goog-Expires"]) <= 900
    signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((signed_at - before).total_seconds()) < 5
    assert urllib.parse.urlsplit(url).path == f"/{gcs_emulator.bucket}/contexts/{md5}.tar.gz"
    # A different Content-MD5 or content type does not verify: both are bound by the signature.
    with pytest.raises(InvalidSignature):
        verify_v4(
            url,
            "PUT",
            {**headers, "Content-MD5": base64.b64encode(b"x" * 16).decode()},
            signing_key.private_key.public_key(),
        )  # type: ignore[attr-defined]
    with pytest.raises(InvalidSignature):
        verify_v4(url, "PUT", {**headers, "Content-Type": "text/plain"}, signing_key.private_key.public_key())  # type: ignore[attr-defined]
    with pytest.raises(InvalidSignature):
        verify_v4(url, "GET", headers, signing_key.private_key.public_key())  # type: ignore[attr-defined]


def test_put_stat_get_delete_round_trip(gcs_emulator, signing_key, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = make_store(_config(gcs_emulator.bucket, signing_key.path))
    body = _tarball({"Dockerfile": b"FROM python:3.11-slim\n", "hello.py": b"print('hi')\n"})
    md5 = hashlib.md5(body).hexdigest()
    assert store.stat(md5) is None
    assert _put(store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)), body, md5) == 200
    assert store.stat(md5) == md5
    get_url = store.signed_get_url(md5, timedelta(hours=1))
    query = verify_v4(get_url, "GET", {}, signing_key.private_key.public_key())  # type: ignore[attr-defined]
    assert query["X-Goog-SignedHeaders"] == "host"
    with urllib.request.urlopen(get_url, timeout=10) as response:
        assert response.read() == body
    store.delete(md5)
    assert store.stat(md5) is None
    store.delete(md5)  # absent is fine


def test_stat_reports_the_md5_of_wrong_bytes(gcs_emulator, signing_key) -> None:  # type: ignore[no-untyped-def]
    store = make_store(_config(gcs_emulator.bucket, signing_key.path))
    md5 = hashlib.md5(b"the real context").hexdigest()
    # The emulator does not check Content-MD5; real GCS would answer 400 BadDigest.
    _put(store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)), b"something else", md5)
    assert store.stat(md5) == hashlib.md5(b"something else").hexdigest()


def _run_fetch(url: str, md5: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", fetch_script()],
        env={
            "NBD_CONTEXT_URL": url,
            "NBD_CONTEXT_MD5": md5,
            "NBD_WORKSPACE": str(workspace),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fetch_program_downloads_checks_and_unpacks(gcs_emulator, signing_key, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = make_store(_config(gcs_emulator.bucket, signing_key.path))
    body = _tarball({"Dockerfile": b"FROM scratch\n", "src/app.py": b"x = 1\n"})
    md5 = hashlib.md5(body).hexdigest()
    _put(store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)), body, md5)
    url = store.signed_get_url(md5, timedelta(hours=1))
    done = _run_fetch(url, md5, tmp_path / "ws")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ws" / "src" / "app.py").read_bytes() == b"x = 1\n"
    assert "MD5 " + md5 + " verified" in done.stdout
    assert "X-Goog-Signature" not in done.stdout + done.stderr  # the URL is a secret

    wrong = _run_fetch(url, "0" * 32, tmp_path / "ws2")
    assert wrong.returncode == 2
    assert "MD5 mismatch" in wrong.stdout
    assert not (tmp_path / "ws2" / "Dockerfile").exists()


def test_fetch_program_refuses_paths_leaving_the_workspace(gcs_emulator, signing_key, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = make_store(_config(gcs_emulator.bucket, signing_key.path))
    body = _tarball({"../escape.txt": b"no"})
    md5 = hashlib.md5(body).hexdigest()
    _put(store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)), body, md5)
    done = _run_fetch(store.signed_get_url(md5, timedelta(hours=1)), md5, tmp_path / "ws")
    assert done.returncode == 3
    assert "unsafe path" in done.stdout
    assert not (tmp_path / "escape.txt").exists()


class _FakeIAM:
    """Answers IAM Credentials signBlob like Google does, signing with a local key."""

    def __init__(self, private_key: Any, email: str) -> None:
        self.private_key = private_key
        self.email = email
        self.calls: list[str] = []

    def __call__(
        self, url: str, method: str = "GET", body: bytes | None = None, headers: Any = None, **_: Any
    ) -> Any:
        self.calls.append(url)
        assert method == "POST"
        assert url.endswith(f"/serviceAccounts/{self.email}:signBlob")
        payload = base64.b64decode(json.loads(body or b"{}")["payload"])
        signature = self.private_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())

        class Response:
            status = 200
            data = json.dumps({"keyId": "k", "signedBlob": base64.b64encode(signature).decode()}).encode()
            headers: dict[str, str] = {}

        return Response()


def test_workload_identity_signing_goes_through_iam_sign_blob(gcs_emulator, signing_key) -> None:  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials

    fake = _FakeIAM(signing_key.private_key, signing_key.email)
    credentials = iam_signing_credentials(AnonymousCredentials(), signing_key.email, request=fake)
    store = GCSStore(gcs_emulator.client(), gcs_emulator.bucket, "ctx", credentials)
    md5 = hashlib.md5(b"iam").hexdigest()
    url = store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=10))
    assert len(fake.calls) == 1
    headers = {"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(), "Content-Type": CONTENT_TYPE}
    query = verify_v4(url, "PUT", headers, signing_key.private_key.public_key())  # type: ignore[attr-defined]
    assert query["X-Goog-Credential"].startswith(signing_key.email + "/")
    assert int(query["X-Goog-Expires"]) == 600


def test_emulator_without_a_key_is_a_clear_configuration_error(gcs_emulator) -> None:  # type: ignore[no-untyped-def]
    from nbd_controller.config import ConfigError

    with pytest.raises(ConfigError, match="NBD_SIGNING_KEY_FILE"):
        make_store(Config(bucket=gcs_emulator.bucket, registry="r"))
