"""The upload's decisions: what each store answer means."""

from __future__ import annotations

import random

import pytest

from nbd.upload.policy import Action, RetryPolicy, backoff_delay, classify, parse_store_error, url_expiry

from .stub import gcs_error


@pytest.mark.parametrize(
    ("status", "body", "action", "code"),
    [
        (200, b"", Action.DONE, ""),
        (201, b"", Action.DONE, ""),
        (400, gcs_error("BadDigest", "The MD5 you specified did not match."), Action.BAD_DIGEST, "BadDigest"),
        (
            400,
            gcs_error("ExpiredToken", "The provided token has expired."),
            Action.REFRESH_URL,
            "ExpiredToken",
        ),
        (400, gcs_error("InvalidArgument", "Request has expired"), Action.REFRESH_URL, "InvalidArgument"),
        (403, gcs_error("SignatureDoesNotMatch", "x"), Action.REFRESH_URL, "SignatureDoesNotMatch"),
        (403, gcs_error("AccessDenied", "x"), Action.REFRESH_URL, "AccessDenied"),
        (401, b"", Action.REFRESH_URL, ""),
        (408, b"", Action.RETRY, ""),
        (429, gcs_error("SlowDown", "x"), Action.RETRY, "SlowDown"),
        (500, b"<html>", Action.RETRY, ""),
        (503, gcs_error("ServiceUnavailable", "x"), Action.RETRY, "ServiceUnavailable"),
        (404, gcs_error("NoSuchBucket", "x"), Action.FAIL, "NoSuchBucket"),
        (400, gcs_error("InvalidDigest", "x"), Action.FAIL, "InvalidDigest"),
        (411, b"", Action.FAIL, ""),
    ],
)
def test_classify(status: int, body: bytes, action: Action, code: str) -> None:
    decision = classify(status, body)
    assert decision.action is action and decision.code == code


def test_parse_store_error() -> None:
    assert parse_store_error(gcs_error("A", "b c")) == ("A", "b c")
    assert parse_store_error(b"not xml") == ("", "")


def test_url_expiry() -> None:
    url = "https://storage.googleapis.com/b/o?X-Goog-Algorithm=x&X-Goog-Date=20260101T000000Z&X-Goog-Expires=900&X-Goog-Signature=s"
    assert url_expiry(url) == 1767225600 + 900
    assert url_expiry("https://x/b/o?X-Goog-Date=bad&X-Goog-Expires=1") is None
    assert url_expiry("https://x/b/o") is None


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8)
    rng = random.Random(1)
    for attempt, cap in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 8)]:
        delays = [backoff_delay(attempt, policy, rng) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)


def test_an_api_server_status_is_read_and_its_forbidden_is_final() -> None:
    from nbd.upload.policy import Action, classify, parse_store_error

    body = (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"services '
        b'\\"nbd-store:http\\" is forbidden: User \\"bob\\" cannot update resource \\"services/proxy\\"",'
        b'"reason":"Forbidden","details":{"name":"nbd-store:http","kind":"services"},"code":403}'
    )
    assert parse_store_error(body) == (
        "Forbidden",
        'services "nbd-store:http" is forbidden: User "bob" cannot update resource "services/proxy"',
    )
    assert classify(403, body).action is Action.FAIL
    unavailable = (
        b'{"kind":"Status","reason":"ServiceUnavailable","message":"no endpoints available","code":503}'
    )
    assert classify(503, unavailable).action is Action.RETRY
    assert classify(401, b'{"kind":"Status","reason":"Unauthorized","code":401}').action is Action.REFRESH_URL
    assert parse_store_error(b"{not json") == ("", "")
