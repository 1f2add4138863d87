"""AWS SigV4 of a presigned S3 URL, recomputed independently of botocore.

moto does not check presigned signatures; these tests do, following AWS's documented process:
canonical request = VERB, URI-encoded path, canonical query (sorted, RFC 3986-encoded, without
X-Amz-Signature), canonical headers (`name:value` lines of the signed headers), an empty line,
signed headers, UNSIGNED-PAYLOAD; string to sign = AWS4-HMAC-SHA256, X-Amz-Date, scope, hex SHA-256
of the canonical request; the key is derived by HMAC-SHA256 chaining date, region, service and
aws4_request from "AWS4" + secret.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse


def _rfc3986(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class SignatureMismatch(AssertionError):
    pass


def verify_sigv4(url: str, method: str, headers: dict[str, str], secret: str) -> dict[str, str]:
    """Raises SignatureMismatch unless `url` is validly signed for a request with `headers`."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    canonical_query = "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(query.items()))
    all_headers = {"host": parts.netloc, **{k.lower(): " ".join(v.split()) for k, v in headers.items()}}
    signed = query["X-Amz-SignedHeaders"].split(";")
    if signed != sorted(signed):
        raise SignatureMismatch("signed headers are not sorted")
    canonical_headers = "".join(f"{name}:{all_headers.get(name, '')}\n" for name in signed)
    path = urllib.parse.quote(urllib.parse.unquote(parts.path), safe="/-_.~")
    canonical_request = "\n".join(
        [method, path, canonical_query, canonical_headers, ";".join(signed), "UNSIGNED-PAYLOAD"]
    )
    access_key, date, region, service, terminal = query["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        [
            query["X-Amz-Algorithm"],
            query["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), terminal)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureMismatch("the SigV4 signature does not verify")
    return {**query, "X-Amz-Signature": signature}
