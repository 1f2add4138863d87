"""What only the S3 and in-cluster stores do: SigV4 checked independently, the MD5 of multipart
objects, the in-cluster store's refusals (S3's codes), its atomic writes and its collector."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sigv4_check import SignatureMismatch, verify_sigv4

from nbd_controller.collecting import StoredContext, choose_evictions
from nbd_controller.config import Config, ConfigError
from nbd_controller.incluster import InClusterStore
from nbd_controller.storage import CONTENT_TYPE, S3_MD5_METADATA, S3Store, make_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_s3 import S3_CREDENTIALS  # noqa: E402

SECRET = S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


def _s3_store(url: str, bucket: str) -> S3Store:
    cfg = Config.from_env(
        {
            "NBD_STORE": "s3",
            "NBD_BUCKET": bucket,
            "NBD_REGISTRY": "r",
            "NBD_S3_ENDPOINT_URL": url,
            "NBD_S3_PATH_STYLE": "true",
        }
    )
    store = make_store(cfg)
    assert isinstance(store, S3Store)
    return store


def test_s3_put_url_is_a_valid_sigv4_signature_bound_to_md5_and_type(s3_emulator) -> None:  # type: ignore[no-untyped-def]
    store = _s3_store(s3_emulator.url, s3_emulator.bucket)
    md5 = hashlib.md5(b"context").hexdigest()
    url = store.signed_put_url(md5, CONTENT_TYPE, timedelta(seconds=900))
    headers = {"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(), "Content-Type": CONTENT_TYPE}
    query = verify_sigv4(url, "PUT", headers, SECRET)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].endswith("/us-east-1/s3/aws4_request")
    assert int(query["X-Amz-Expires"]) <= 900
    assert urllib.parse.urlsplit(url).path == f"/{s3_emulator.bucket}/contexts/{md5}.tar.gz"  # path style
    with pytest.raises(SignatureMismatch):
        verify_sigv4(url, "PUT", {**headers, "Content-MD5": base64.b64encode(b"x" * 16).decode()}, SECRET)
    with pytest.raises(SignatureMismatch):
        verify_sigv4(url, "PUT", {**headers, "Content-Type": "text/plain"}, SECRET)
    with pytest.raises(SignatureMismatch):
        verify_sigv4(url, "GET", headers, SECRET)
    with pytest.raises(SignatureMismatch):
        verify_sigv4(url, "PUT", headers, "another-secret")
    verify_sigv4(store.signed_get_url(md5, timedelta(hours=1)), "GET", {}, SECRET)


def test_s3_virtual_host_addressing_names_the_bucket_in_the_host() -> None:
    cfg = Config.from_env(
        {
            "NBD_STORE": "s3",
            "NBD_BUCKET": "ctx",
            "NBD_REGISTRY": "r",
            "NBD_S3_ENDPOINT_URL": "https://s3.example.com",
        }
    )
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "k")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "s")
    url = make_store(cfg).signed_put_url("0" * 32, CONTENT_TYPE, timedelta(minutes=1))
    assert url.startswith("https://ctx.s3.example.com/contexts/" + "0" * 32 + ".tar.gz?")


def test_s3_stat_reports_the_md5_of_the_bytes_stored(s3_emulator) -> None:  # type: ignore[no-untyped-def]
    # moto stores a presigned PUT's body without checking Content-MD5 (real S3 answers BadDigest);
    # the controller's check before building rests on stat reporting the stored bytes' MD5.
    store = _s3_store(s3_emulator.url, s3_emulator.bucket)
    md5 = hashlib.md5(b"the real context").hexdigest()
    url = store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15))
    request = urllib.request.Request(
        url,
        data=b"something else",
        method="PUT",
        headers={"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(), "Content-Type": CONTENT_TYPE},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
    assert store.stat(md5) == hashlib.md5(b"something else").hexdigest()


def test_s3_multipart_object_md5_is_hashed_once_and_recorded_in_metadata(s3_emulator) -> None:  # type: ignore[no-untyped-def]
    store = _s3_store(s3_emulator.url, s3_emulator.bucket)
    client = s3_emulator.client()
    part1, part2 = os.urandom(5 << 20), b"tail"
    md5 = hashlib.md5(part1 + part2).hexdigest()
    key = f"contexts/{md5}.tar.gz"
    upload = client.create_multipart_upload(Bucket=s3_emulator.bucket, Key=key)
    parts = []
    for number, data in ((1, part1), (2, part2)):
        answer = client.upload_part(
            Bucket=s3_emulator.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=data
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    client.complete_multipart_upload(
        Bucket=s3_emulator.bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert "-" in client.head_object(Bucket=s3_emulator.bucket, Key=key)["ETag"]  # not an MD5
    assert store.stat(md5) == md5
    assert client.head_object(Bucket=s3_emulator.bucket, Key=key)["Metadata"][S3_MD5_METADATA] == md5
    assert store.stat(md5) == md5  # now read from the metadata


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NBD_STORE": "azure"}, "NBD_STORE='azure': choose one of gcs, s3, incluster"),
        ({"NBD_STORE": "s3"}, "NBD_BUCKET is not set"),
        (
            {"NBD_STORE": "s3", "NBD_BUCKET": "bkt", "NBD_S3_ENDPOINT_URL": "minio:9000"},
            "NBD_S3_ENDPOINT_URL",
        ),
        ({"NBD_STORE": "s3", "NBD_BUCKET": "bkt", "NBD_S3_PATH_STYLE": "maybe"}, "NBD_S3_PATH_STYLE"),
        ({"NBD_STORE": "incluster", "NBD_STORE_MAX_BYTES": "10GB"}, "NBD_STORE_MAX_BYTES"),
        ({"NBD_STORE": "incluster", "NBD_STORE_SERVICE": "nbd-store"}, "NBD_STORE_SERVICE"),
        ({"NBD_STORE": "incluster", "NBD_STORE_URL": "nbd-store:8080"}, "NBD_STORE_URL"),
    ],
)
def test_bad_store_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"NBD_REGISTRY": "r", **env})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_incluster_needs_no_bucket_and_reads_sizes() -> None:
    cfg = Config.from_env({"NBD_STORE": "incluster", "NBD_REGISTRY": "r", "NBD_STORE_MAX_BYTES": "5Gi"})
    assert cfg.bucket == "" and cfg.store_max_bytes == 5 << 30


# --- the in-cluster store -------------------------------------------------------------------------


@pytest.fixture
def incluster(tmp_path: Path) -> Iterator[tuple[InClusterStore, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = InClusterStore(
        str(tmp_path / "store"), "contexts", "nbd-system/nbd-store:http", f"http://127.0.0.1:{port}", 1 << 30
    )
    store.serve("127.0.0.1", port)
    try:
        yield store, f"http://127.0.0.1:{port}"
    finally:
        store.close()


def _direct(store: InClusterStore, base: str, url: str) -> str:
    assert url.startswith(store.proxy_base)
    return base + url.removeprefix(store.proxy_base)


def _put(url: str, body: bytes, md5: str, content_type: str = CONTENT_TYPE) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        headers={"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(), "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_incluster_upload_url_is_the_api_servers_service_proxy_path(incluster) -> None:  # type: ignore[no-untyped-def]
    store, _ = incluster
    url = store.signed_put_url("a" * 32, CONTENT_TYPE, timedelta(minutes=15))
    assert url.startswith("/api/v1/namespaces/nbd-system/services/nbd-store:http/proxy/contexts/" + "a" * 32)


def test_incluster_refusals_are_s3_errors_and_store_nothing(incluster) -> None:  # type: ignore[no-untyped-def]
    store, base = incluster
    body = b"context bytes"
    md5 = hashlib.md5(body).hexdigest()
    url = _direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)))
    status, answer = _put(url, b"other bytes!!", md5)
    assert (status, b"<Code>BadDigest</Code>" in answer) == (400, True)
    status, answer = _put(url.replace("X-Nbd-Signature=", "X-Nbd-Signature=0"), body, md5)
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in answer) == (403, True)
    expired = _direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(seconds=-1)))
    status, answer = _put(expired, body, md5)
    assert (status, b"Request has expired" in answer) == (403, True)
    other = hashlib.md5(b"x").hexdigest()
    status, _ = _put(url.replace(md5, other, 1), body, md5)  # a URL for one object cannot write another
    assert status == 403
    assert store.stat(md5) is None and store.contexts() == []
    assert os.listdir(os.path.join(store.root, ".incoming")) == []
    assert _put(url, body, md5)[0] == 200 and store.stat(md5) == md5


def test_incluster_cut_upload_is_never_visible(incluster) -> None:  # type: ignore[no-untyped-def]
    store, base = incluster
    body = os.urandom(4 << 20)
    md5 = hashlib.md5(body).hexdigest()
    url = _direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)))
    target = urllib.parse.urlsplit(url)
    with socket.create_connection(("127.0.0.1", target.port or 80)) as sock:
        head = (
            f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Content-MD5: {base64.b64encode(bytes.fromhex(md5)).decode()}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[: 1 << 20])
        deadline = time.monotonic() + 5
        while not os.listdir(os.path.join(store.root, ".incoming")):  # the body is arriving
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert store.stat(md5) is None  # half-written: not visible
    deadline = time.monotonic() + 5
    while os.listdir(os.path.join(store.root, ".incoming")):  # the cut upload's temp file goes
        assert time.monotonic() < deadline, "the cut upload's temporary file stayed"
        time.sleep(0.01)
    assert store.stat(md5) is None


def test_incluster_get_is_signed_and_marks_use(incluster) -> None:  # type: ignore[no-untyped-def]
    store, base = incluster
    body = b"fetch me"
    md5 = hashlib.md5(body).hexdigest()
    _put(_direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15))), body, md5)
    path = os.path.join(store.root, "contexts", md5 + ".tar.gz")
    os.utime(path, (1000, 1000))
    with urllib.request.urlopen(store.signed_get_url(md5, timedelta(minutes=5)), timeout=10) as response:
        assert response.read() == body
    assert store.contexts()[0].last_used > time.time() - 60
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{base}/contexts/{md5}.tar.gz", timeout=10)
    assert caught.value.code == 403


def test_incluster_collector_removes_least_recently_used_unneeded(incluster) -> None:  # type: ignore[no-untyped-def]
    store, base = incluster
    md5s = []
    for i in range(4):
        body = bytes([i]) * (1 << 20)
        md5 = hashlib.md5(body).hexdigest()
        _put(_direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15))), body, md5)
        os.utime(os.path.join(store.root, "contexts", md5 + ".tar.gz"), (1000 + i, 1000 + i))
        md5s.append(md5)
    store.max_bytes = 2 << 20
    evicted = store.collect(needed={md5s[0]})
    assert [c.md5 for c in evicted] == [md5s[1], md5s[2]]
    assert {c.md5 for c in store.contexts()} == {md5s[0], md5s[3]}


@pytest.mark.parametrize(
    ("sizes", "needed", "limit", "evicted"),
    [
        ([("a", 5, 1), ("b", 5, 2)], set(), 10, []),
        ([("a", 5, 1), ("b", 5, 2)], set(), 9, ["a"]),
        ([("a", 5, 1), ("b", 5, 2), ("c", 5, 3)], {"a"}, 9, ["b", "c"]),
        ([("a", 5, 1), ("b", 5, 2)], {"a", "b"}, 1, []),  # needed contexts are never removed
        ([("a", 5, 2), ("b", 5, 1)], set(), 5, ["b"]),
    ],
)
def test_choose_evictions(sizes, needed, limit, evicted) -> None:  # type: ignore[no-untyped-def]
    stored = [StoredContext(m, s, t) for m, s, t in sizes]
    assert [c.md5 for c in choose_evictions(stored, needed, limit)] == evicted


def _raw(base: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    target = urllib.parse.urlsplit(base)
    with socket.create_connection((target.hostname, target.port or 80), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


def test_incluster_refuses_chunked_oversized_and_unsigned_puts(incluster) -> None:  # type: ignore[no-untyped-def]
    store, base = incluster
    md5 = hashlib.md5(b"x").hexdigest()
    url = _direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15)))
    parts = urllib.parse.urlsplit(url)
    common = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-MD5: {base64.b64encode(bytes.fromhex(md5)).decode()}\r\nContent-Type: {CONTENT_TYPE}\r\n"
    )
    status, answer = _raw(base, common + "Transfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n0\r\n\r\n")
    assert (status, b"MissingContentLength" in answer) == (411, True)
    store.max_bytes = 10
    status, answer = _raw(base, common + "Content-Length: 11\r\n\r\n", b"x" * 11)
    assert (status, b"EntityTooLarge" in answer) == (400, True)
    status, answer = _put(f"{base}{parts.path}", b"x", md5)
    assert (status, b"AccessDenied" in answer) == (403, True)
    assert store.contexts() == []


def test_incluster_refuses_a_signed_url_before_the_body_when_asked_to_continue(incluster) -> None:  # type: ignore[no-untyped-def]
    store, base = incluster
    md5 = hashlib.md5(b"x").hexdigest()
    url = _direct(store, base, store.signed_put_url(md5, CONTENT_TYPE, timedelta(seconds=-5)))
    parts = urllib.parse.urlsplit(url)
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n"
        f"Content-MD5: {base64.b64encode(bytes.fromhex(md5)).decode()}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n"
    )
    status, answer = _raw(base, head)  # no body sent: the refusal comes first
    assert status == 403 and b"100 Continue" not in answer and b"Request has expired" in answer


def test_incluster_key_and_directory_problems_are_clear(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / ".key").write_bytes(b"short")
    with pytest.raises(RuntimeError, match="damaged; delete it"):
        InClusterStore(str(root), "contexts", "nbd-system/nbd-store:http", "http://127.0.0.1:1", 1 << 30)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = Config.from_env({"NBD_STORE": "incluster", "NBD_REGISTRY": "r", "NBD_STORE_DIR": str(blocker)})
    with pytest.raises(ConfigError, match="NBD_STORE_DIR"):
        make_store(cfg)


def test_incluster_key_survives_a_restart(tmp_path: Path) -> None:
    args = (str(tmp_path / "s"), "contexts", "nbd-system/nbd-store:http", "http://127.0.0.1:1", 1 << 30)
    first = InClusterStore(*args)
    assert os.stat(tmp_path / "s" / ".key").st_mode & 0o777 == 0o600
    url = first.signed_put_url("a" * 32, CONTENT_TYPE, timedelta(minutes=5))
    assert InClusterStore(*args).key == first.key and "X-Nbd-Signature=" in url
