"""One contract, every store: GCS (fake-gcs-server), S3 (moto_server) and the in-cluster store.

Each store is built by `make_store` from the configuration an admin writes (NBD_STORE=...), so the
configuration's wiring is part of the contract. A store signs a PUT bound to Content-MD5 and
Content-Type that expires within 15 minutes, reports a stored object's MD5, signs a GET for the
build's fetch, and deletes. The in-cluster store's upload URL is a path on the API server; here
it is sent to the store's port directly, which is what the API server's service proxy does.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from nbd.upload.policy import url_expiry
from nbd_controller.config import Config
from nbd_controller.incluster import InClusterStore
from nbd_controller.storage import CONTENT_TYPE, ObjectStore, make_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_s3 import start_s3_emulator  # noqa: E402


@dataclass
class StoreUnderTest:
    kind: str
    store: ObjectStore
    direct: str = ""  # the in-cluster store's own URL (what the service proxy forwards to)

    def reachable(self, url: str) -> str:
        """The URL as the network delivers it (an API-server path goes to the Service's backend)."""
        if url.startswith("/api/v1/"):
            assert isinstance(self.store, InClusterStore)
            return self.direct + url.removeprefix(self.store.proxy_base)
        return url


@pytest.fixture(params=["gcs", "s3", "incluster"])
def any_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreUnderTest]:
    kind = request.param
    if kind == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        key = request.getfixturevalue("signing_key")
        cfg = Config(bucket=emulator.bucket, registry="r", signing_key_file=key.path)
        yield StoreUnderTest(kind, make_store(cfg))
    elif kind == "s3":
        emulator = start_s3_emulator()
        for name, value in emulator.env.items():
            monkeypatch.setenv(name, value)
        try:
            cfg = Config.from_env(
                {
                    "NBD_STORE": "s3",
                    "NBD_BUCKET": emulator.bucket,
                    "NBD_REGISTRY": "r",
                    "NBD_S3_ENDPOINT_URL": emulator.url,
                    "NBD_S3_PATH_STYLE": "true",
                }
            )
            yield StoreUnderTest(kind, make_store(cfg))
        finally:
            emulator.stop()
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        cfg = Config.from_env(
            {
                "NBD_STORE": "incluster",
                "NBD_REGISTRY": "r",
                "NBD_STORE_DIR": str(tmp_path / "store"),
                "NBD_STORE_LISTEN": f"127.0.0.1:{free}",
                "NBD_STORE_URL": f"http://127.0.0.1:{free}",
            }
        )
        store = make_store(cfg)
        assert isinstance(store, InClusterStore)
        host, _, port_text = cfg.store_listen.rpartition(":")
        port = store.serve(host, int(port_text))
        try:
            yield StoreUnderTest(kind, store, f"http://127.0.0.1:{port}")
        finally:
            store.close()


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
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_put_stat_get_delete(any_store: StoreUnderTest) -> None:
    store = any_store.store
    body = b"a build context " * 1000
    md5 = hashlib.md5(body).hexdigest()
    assert store.stat(md5) is None
    put_url = store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15))
    assert _put(any_store.reachable(put_url), body, md5) == 200
    assert store.stat(md5) == md5
    get_url = store.signed_get_url(md5, timedelta(hours=1))
    assert not get_url.startswith("/")  # build pods fetch it from inside the cluster, directly
    with urllib.request.urlopen(get_url, timeout=10) as response:
        assert response.read() == body
    store.delete(md5)
    assert store.stat(md5) is None
    store.delete(md5)  # absent is fine


def test_put_url_expires_within_15_minutes_and_binds_md5_and_type(any_store: StoreUnderTest) -> None:
    md5 = hashlib.md5(b"bound").hexdigest()
    url = any_store.store.signed_put_url(md5, CONTENT_TYPE, timedelta(seconds=900))
    expiry = url_expiry(url)
    assert expiry is not None and time.time() < expiry <= time.time() + 900 + 2
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if any_store.kind == "gcs":
        assert query["X-Goog-SignedHeaders"] == "content-md5;content-type;host"
    elif any_store.kind == "s3":
        assert query["X-Amz-SignedHeaders"] == "content-md5;content-type;host"
    else:
        # The in-cluster store enforces the binding itself.
        assert _put(any_store.reachable(url), b"bound", md5, content_type="text/plain") == 403
        assert any_store.store.stat(md5) is None
        assert _put(any_store.reachable(url), b"bound", md5) == 200


def test_get_url_of_a_missing_object_is_a_404(any_store: StoreUnderTest) -> None:
    md5 = hashlib.md5(b"never stored").hexdigest()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(any_store.store.signed_get_url(md5, timedelta(minutes=5)), timeout=10)
    assert caught.value.code == 404
