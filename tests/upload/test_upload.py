"""The signed-URL upload against the GCS emulator and against a stub that answers like real GCS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nbd.errors import Cancelled
from nbd.upload import (
    BadDigest,
    RetryPolicy,
    SignedURL,
    UploadFailed,
    UploadForbidden,
    UploadProgress,
    UploadRejected,
    upload,
)

from .stub import StubGCS, answer_early, chunked_error, drop_mid_body, gcs_error, slow_reader, stall

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, stall_timeout=0.5, connect_timeout=2, response_timeout=5)


def spooled(tmp_path: Path, size: int, seed: int = 0) -> tuple[str, str]:
    path = tmp_path / f"ctx-{seed}.tar.gz"
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    path.write_bytes(data)
    return str(path), base64.b64encode(hashlib.md5(data).digest()).decode()


def urls(*items: str) -> tuple[Callable[[], Awaitable[SignedURL]], list[str]]:
    """get_url returning the items in turn; the list records what was handed out."""
    given: list[str] = []

    async def get_url() -> SignedURL:
        url = items[min(len(given), len(items) - 1)]
        given.append(url)
        return SignedURL(url, expires_at=time.time() + 900)

    return get_url, given


def run_with_stub(answers: list[Any], body: Callable[[StubGCS], Awaitable[None]]) -> StubGCS:
    async def main() -> StubGCS:
        stub = await StubGCS(answers=list(answers)).start()
        try:
            await body(stub)
        finally:
            await stub.stop()
        return stub

    return asyncio.run(main())


# --- against the emulator -------------------------------------------------------------------------


def test_upload_of_a_real_context_to_the_emulator(tmp_path: Path, gcs_emulator: Any) -> None:
    from nbd.context import build_context_sync

    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM python:3.11\n")
    (root / "src" / "train.py").write_text("print('hi')\n" * 1000)
    (root / "weights.bin").write_bytes(os.urandom(3 << 20))
    built = build_context_sync(root, tmp_path / "spool", tmp_path / "cache")
    gcs_emulator.create_bucket("nbd-contexts")
    name = f"contexts/{built.md5_hex}.tar.gz"
    signed = gcs_emulator.sign_put_url("nbd-contexts", name, built.md5_b64)
    assert "X-Goog-Signature=" in signed

    async def get_url() -> SignedURL:
        return SignedURL(signed)

    seen: list[UploadProgress] = []
    result = asyncio.run(upload(built.path, built.md5_b64, get_url, progress=seen.append))
    assert result.size == built.size and result.attempts == 1
    assert gcs_emulator.stored_md5("nbd-contexts", name) == built.md5_b64
    assert seen[-1].done_bytes == seen[-1].total_bytes == built.size
    assert SignedURL(signed).expiry() is not None
    # What a build's init container would fetch through a signed GET is the archive, intact.
    import io
    import tarfile
    import urllib.request

    with urllib.request.urlopen(gcs_emulator.sign_get_url("nbd-contexts", name), timeout=30) as resp:
        fetched = resp.read()
    assert fetched == Path(built.path).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(fetched), mode="r:gz") as t:
        assert t.getnames() == ["Dockerfile", "src", "src/train.py", "weights.bin"]


# --- against the stub -----------------------------------------------------------------------------


def test_headers_and_streaming_body(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 3 * (1 << 20) + 5)

    async def body(stub: StubGCS) -> None:
        # A signed URL's query must reach the server byte for byte (no re-encoding of %2F).
        get_url, _ = urls(stub.url + "/bucket/ctx.tar.gz?X-Goog-Credential=a%2Fb%2Fc&X-Goog-Signature=ab12")
        result = await upload(path, md5, get_url, policy=FAST)
        assert result.attempts == 1

    stub = run_with_stub([(200, b"")], body)
    seen = stub.seen[0]
    assert seen.path_qs == "/bucket/ctx.tar.gz?X-Goog-Credential=a%2Fb%2Fc&X-Goog-Signature=ab12"
    assert seen.headers["Content-MD5"] == md5
    assert seen.headers["Content-Type"] == "application/octet-stream"
    assert seen.headers["Content-Length"] == str(os.path.getsize(path))
    assert "Transfer-Encoding" not in seen.headers
    assert seen.body_md5_b64 == md5
    assert stub.committed["/bucket/ctx.tar.gz"] == Path(path).read_bytes()


def test_bad_digest_is_final(tmp_path: Path) -> None:
    path, _ = spooled(tmp_path, 1000)
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()

    async def body(stub: StubGCS) -> None:
        get_url, given = urls(stub.url + "/b/o")
        with pytest.raises(BadDigest) as info:
            await upload(path, wrong, get_url, policy=FAST)
        assert "did not match their MD5" in str(info.value) and "relaunch" in str(info.value)
        assert info.value.reason == "BadDigest" and info.value.status == 400
        assert len(given) == 1

    stub = run_with_stub([(200, b"")], body)  # the stub itself detects the mismatch
    assert len(stub.seen) == 1 and stub.committed == {}


def test_signature_refused_then_a_fresh_url_succeeds(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 10_000)

    async def body(stub: StubGCS) -> None:
        get_url, given = urls(stub.url + "/b/o?sig=old", stub.url + "/b/o?sig=new")
        result = await upload(path, md5, get_url, policy=FAST)
        assert given == [stub.url + "/b/o?sig=old", stub.url + "/b/o?sig=new"]
        assert result.url_refreshes == 1

    stub = run_with_stub(
        [
            (403, gcs_error("SignatureDoesNotMatch", "The request signature we calculated does not match")),
            (200, b""),
        ],
        body,
    )
    assert [s.path_qs for s in stub.seen] == ["/b/o?sig=old", "/b/o?sig=new"]
    assert "/b/o" in stub.committed


def test_expired_token_gets_a_fresh_url(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)

    async def body(stub: StubGCS) -> None:
        get_url, given = urls(stub.url + "/b/o?1", stub.url + "/b/o?2")
        await upload(path, md5, get_url, policy=FAST)
        assert len(given) == 2

    run_with_stub([(400, gcs_error("ExpiredToken", "The provided token has expired.")), (200, b"")], body)


def test_refused_urls_give_up_after_the_bound(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)
    denied = (403, gcs_error("AccessDenied", "Access denied."))

    async def body(stub: StubGCS) -> None:
        get_url, given = urls(stub.url + "/b/o")
        with pytest.raises(UploadForbidden, match="AccessDenied"):
            await upload(path, md5, get_url, policy=FAST)
        assert len(given) == FAST.max_url_refreshes + 1

    run_with_stub([denied] * 10, body)


def test_an_expired_url_is_replaced_before_use(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)

    async def body(stub: StubGCS) -> None:
        handed: list[SignedURL] = [
            SignedURL(stub.url + "/b/old", expires_at=time.time() - 5),
            SignedURL(stub.url + "/b/new", expires_at=time.time() + 900),
        ]

        async def get_url() -> SignedURL:
            return handed.pop(0)

        result = await upload(path, md5, get_url, policy=FAST)
        assert result.url_refreshes == 1

    stub = run_with_stub([(200, b"")], body)
    assert [s.path_qs for s in stub.seen] == ["/b/new"]


def test_5xx_twice_then_success(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 50_000)

    async def body(stub: StubGCS) -> None:
        get_url, given = urls(stub.url + "/b/o")
        result = await upload(path, md5, get_url, policy=FAST)
        assert result.attempts == 3 and len(given) == 1

    stub = run_with_stub([(503, gcs_error("ServiceUnavailable", "x")), (500, b"oops"), (200, b"")], body)
    assert [s.body_md5_b64 for s in stub.seen] == [md5, md5, md5]  # the whole file every time


def test_5xx_forever_fails_after_the_bound(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        with pytest.raises(UploadFailed, match=r"failed 6 times \(last: 503 ServiceUnavailable"):
            await upload(path, md5, get_url, policy=FAST)

    stub = run_with_stub([(503, gcs_error("ServiceUnavailable", "Try again"))] * 10, body)
    assert len(stub.seen) == FAST.max_attempts


def test_connection_dropped_mid_body_then_success(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 8 << 20)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        result = await upload(path, md5, get_url, policy=FAST)
        assert result.attempts == 2

    stub = run_with_stub([drop_mid_body(1 << 20), (200, b"")], body)
    assert stub.committed["/b/o"] == Path(path).read_bytes()


def test_stalled_connection_is_abandoned_and_retried(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 32 << 20)  # more than the socket buffers hold

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        result = await upload(path, md5, get_url, policy=FAST)
        assert result.attempts == 2

    stub = run_with_stub([stall(), (200, b"")], body)
    assert "/b/o" in stub.committed


def test_connection_refused_exhausts_attempts(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        get_url, _ = urls(f"http://127.0.0.1:{port}/b/o")
        with pytest.raises(UploadFailed, match="check the network"):
            await upload(path, md5, get_url, policy=FAST)

    asyncio.run(main())


def test_other_4xx_is_final_with_the_store_code(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        with pytest.raises(UploadRejected) as info:
            await upload(path, md5, get_url, policy=FAST)
        assert info.value.reason == "NoSuchBucket" and info.value.store_code == "NoSuchBucket"
        assert "404 NoSuchBucket: The specified bucket does not exist." in str(info.value)

    stub = run_with_stub([(404, gcs_error("NoSuchBucket", "The specified bucket does not exist."))], body)
    assert len(stub.seen) == 1


def test_cancel_flag_mid_upload_commits_nothing(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 64 << 20)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        cancel = asyncio.Event()
        seen: list[UploadProgress] = []

        def progress(p: UploadProgress) -> None:
            seen.append(p)
            if p.done_bytes >= 2 << 20:
                cancel.set()

        with pytest.raises(Cancelled):
            await upload(path, md5, get_url, policy=FAST, progress=progress, cancel=cancel)
        assert seen and seen[-1].done_bytes < seen[-1].total_bytes

    stub = run_with_stub([slow_reader(0.01)], body)
    assert stub.committed == {}


def test_task_cancellation_mid_upload(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 64 << 20)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        started = asyncio.Event()

        def progress(p: UploadProgress) -> None:
            if p.done_bytes > 0:
                started.set()

        task = asyncio.create_task(upload(path, md5, get_url, policy=FAST, progress=progress))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    stub = run_with_stub([slow_reader(0.01)], body)
    assert stub.committed == {}


def test_progress_reports_rate_and_eta(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 8 << 20)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        seen: list[UploadProgress] = []
        await upload(path, md5, get_url, policy=FAST, progress=seen.append)
        assert seen[-1].done_bytes == 8 << 20 and seen[-1].eta_seconds == 0
        assert all(p.total_bytes == 8 << 20 and p.attempt == 1 for p in seen)
        assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)

    run_with_stub([slow_reader(0.001)], body)


def test_an_early_answer_is_read_even_though_the_body_was_not(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 32 << 20)  # far more than the socket buffers hold

    async def body(stub: StubGCS) -> None:
        get_url, given = urls(stub.url + "/b/o?1", stub.url + "/b/o?2")
        result = await upload(path, md5, get_url, policy=FAST)
        assert len(given) == 2 and result.url_refreshes == 1

    stub = run_with_stub([answer_early(403, gcs_error("SignatureDoesNotMatch", "x")), (200, b"")], body)
    assert "/b/o" in stub.committed


def test_a_chunked_error_body_is_parsed(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 1000)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        with pytest.raises(UploadRejected) as info:
            await upload(path, md5, get_url, policy=FAST)
        assert info.value.store_code == "InvalidBucketName"

    run_with_stub(
        [chunked_error(400, gcs_error("InvalidBucketName", "The specified bucket is not valid."))], body
    )


def test_a_url_that_is_not_http_is_rejected(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 10)

    async def main() -> None:
        get_url, _ = urls("ftp://example.com/b/o")
        with pytest.raises(UploadRejected, match="not usable"):
            await upload(path, md5, get_url, policy=FAST)

    asyncio.run(main())


def test_the_signed_url_never_appears_in_errors(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o?X-Goog-Signature=topsecret")
        with pytest.raises(UploadFailed) as info:
            await upload(path, md5, get_url, policy=FAST)
        assert "topsecret" not in str(info.value)

    run_with_stub([(503, b"")] * 10, body)


def test_a_missing_or_changed_archive_is_a_clear_error(tmp_path: Path) -> None:
    path, md5 = spooled(tmp_path, 100)

    async def body(stub: StubGCS) -> None:
        get_url, _ = urls(stub.url + "/b/o")
        with pytest.raises(UploadFailed, match="is missing; relaunch"):
            await upload(str(tmp_path / "nope.tar.gz"), md5, get_url, policy=FAST)

        async def get_url_then_truncate() -> SignedURL:
            Path(path).write_bytes(b"short")
            return SignedURL(stub.url + "/b/o")

        with pytest.raises(UploadFailed, match="changed or disappeared"):
            await upload(path, md5, get_url_then_truncate, policy=FAST)

    stub = run_with_stub([], body)
    assert stub.seen == []
